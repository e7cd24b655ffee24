from streamrec.features.popularity import DecayedPopularity


def test_recent_activity_outranks_old_activity():
    p = DecayedPopularity(half_life_s=3600)
    t = 1.7e9
    for _ in range(10):
        p.add("old", 0, t)
    for _ in range(3):
        p.add("new", 0, t + 5 * 3600)  # 10 * 2^-5 = 0.31 < 3
    assert [i for i, _ in p.top(2)] == ["new", "old"]


def test_weights_and_exclusion():
    p = DecayedPopularity(half_life_s=3600)
    p.add("a", 0, 1.7e9)
    p.add("a", 0, 1.7e9)
    p.add("b", 2, 1.7e9)  # one purchase (weight 4) beats two browses
    assert [i for i, _ in p.top(2)] == ["b", "a"]
    assert [i for i, _ in p.top(2, exclude={"b"})] == ["a"]


def test_filtered_head_still_fills_the_list():
    p = DecayedPopularity(half_life_s=3600)
    for i in range(100):
        for _ in range(100 - i):  # i0 most popular
            p.add(f"i{i}", 0, 1.7e9)
    unavailable = {f"i{i}" for i in range(60)}
    got = p.top(20, accept=lambda item: item not in unavailable)
    assert [i for i, _ in got] == [f"i{i}" for i in range(60, 80)]


def test_the_item_count_is_bounded_and_the_popular_items_stay():
    pop = DecayedPopularity(half_life_s=3600.0, max_items=1000)
    for n in range(50_000):
        pop.add(f"rare-{n}", 0, 1.7e9 + n * 0.01)
        if n % 10 == 0:
            pop.add(f"hit-{n % 50}", 2, 1.7e9 + n * 0.01)
    assert len(pop) <= 1000
    assert pop.dropped >= 49_000
    top5 = {item for item, _ in pop.top(5)}
    assert top5 == {f"hit-{n}" for n in range(0, 50, 10)}  # counted all along: never dropped
