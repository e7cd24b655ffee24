"""The Recommender on plain data: the model work shared by the worker, replay and offline runs."""

from __future__ import annotations

import pytest
import torch

from encoders.model import EncoderConfig
from encoders.train import TrainConfig, train_model
from streamrec.events.schema import Event, Item
from streamrec.features.user_state import FeatureLimits, UserState
from streamrec.recommend.engine import Recommender
from streamrec.settings import load_settings

CATS = ["a", "b", "c"]


@pytest.fixture(scope="module")
def trained():
    # items i0..i29, category = i % 3; users stay in one category
    items = {
        f"i{i}": {"category": CATS[i % 3], "price": 10.0 + i, "title": f"t{i}"} for i in range(30)
    }
    g = torch.Generator().manual_seed(0)
    seqs = {}
    for u in range(90):
        cat = u % 3
        picks = [3 * int(torch.randint(0, 10, (1,), generator=g)) + cat for _ in range(12)]
        seqs[f"u{u}"] = [(f"i{p}", 0, 1.7e9 + 60 * n) for n, p in enumerate(picks)]
    cfg = EncoderConfig(d_model=16, n_layers=1, n_heads=1, window=6)
    return train_model(
        seqs, items, cfg, TrainConfig(epochs=15, batch_size=32, val_users=10), progress=False
    ), items


def settings(k=5):
    return load_settings(env={"STREAMREC_RECS_K": str(k), "STREAMREC_MODEL_CACHE_MB": "1"})


LIMITS = FeatureLimits()


def feed(rec, events, lim=LIMITS):
    states: dict[str, UserState] = {}
    jobs = []
    for e in events:
        st = states.setdefault(e.user_id, UserState())
        if st.apply(e, lim):
            rec.observe(e, st)
            jobs.append(rec.job(e, st))
    return jobs


def test_lists_follow_the_users_category_and_skip_purchases(trained):
    model, items = trained
    rec = Recommender(settings(k=5), model)
    rec.upsert_items([Item(i, v["category"], v["price"], v["title"]) for i, v in items.items()])
    events = [Event(f"e{n}", "x", f"i{3 * n + 1}", "browse", 1.7e9 + n) for n in range(6)]
    events.append(Event("buy", "x", "i4", "purchase", 1.7e9 + 10))
    lists = rec.recommend(feed(rec, events))
    assert len(lists) == 1  # one user -> one list per batch, after the last event
    out = lists[0]
    assert out["event_id"] == "buy" and out["source"] == "model"
    ids = [x["item_id"] for x in out["items"]]
    assert "i4" not in ids
    assert sum(items[i]["category"] == "b" for i in ids) >= 4
    scores = [x["score"] for x in out["items"]]
    assert scores == sorted(scores, reverse=True)


def test_unavailable_items_are_never_listed(trained):
    model, items = trained
    rec = Recommender(settings(k=10), model)
    rec.upsert_items(
        [
            Item(i, v["category"], v["price"], v["title"], available=(i != "i1"))
            for i, v in items.items()
        ]
    )
    rec.delete_item("i7")
    lists = rec.recommend(feed(rec, [Event("e", "y", "i1", "click", 1.7e9)]))
    assert not {"i1", "i7"} & {x["item_id"] for x in lists[0]["items"]}


def test_batched_equals_one_by_one(trained):
    model, items = trained
    catalog = [Item(i, v["category"], v["price"], v["title"]) for i, v in items.items()]
    events = [
        Event(f"e{n}", f"u{n % 4}", f"i{(7 * n) % 30}", "click", 1.7e9 + n) for n in range(40)
    ]
    a = Recommender(settings(), model)
    a.upsert_items(catalog)
    batched = {r["user_id"]: r for r in a.recommend(feed(a, events))}
    b = Recommender(settings(), model)
    b.upsert_items(catalog)
    single = {}
    for job in feed(b, events):
        for r in b.recommend([job]):
            single[r["user_id"]] = r
    assert batched.keys() == single.keys()
    for user, r in batched.items():
        assert [x["item_id"] for x in r["items"]] == [x["item_id"] for x in single[user]["items"]]
        for x, y in zip(r["items"], single[user]["items"], strict=True):
            assert abs(x["score"] - y["score"]) < 1e-4


def blend_events():
    t = 1.7e9
    events = []
    for n in range(5):  # p1 then p3: co-visited; both popular
        events += [
            Event(f"a{n}1", f"a{n}", "p1", "click", t + n),
            Event(f"a{n}3", f"a{n}", "p3", "click", t + n + 10),
        ]
    events += [Event(f"b{n}", f"b{n}", "p2", "click", t + 20 + n) for n in range(3)]
    events += [
        Event("x4", "x", "p4", "click", t + 100),
        Event("x1", "x", "p1", "click", t + 101),
        Event("w1", "w", "p1", "purchase", t + 102),
    ]
    return events


def test_without_a_model_lists_blend_recent_covisitation_and_popularity():
    rec = Recommender(settings(k=4), None)
    rec.upsert_items([Item(f"p{i}", "c", 1.0) for i in range(6)])
    lists = {r["user_id"]: r for r in rec.recommend(feed(rec, blend_events()))}
    assert lists["x"]["source"] == "heuristic" and lists["x"]["model_version"] == "heuristic"
    # own items newest first, then p1's co-visited p3, then the most popular left (p2)
    assert [x["item_id"] for x in lists["x"]["items"]] == ["p1", "p4", "p3", "p2"]
    # a bought item is not listed; its co-visited neighbours lead, then popularity
    assert [x["item_id"] for x in lists["w"]["items"]] == ["p3", "p4", "p2"]


def test_bought_items_are_listed_when_the_policy_allows():
    s = load_settings(env={"STREAMREC_RECS_K": "4", "STREAMREC_RECS_EXCLUDE_PURCHASED": "false"})
    rec = Recommender(s, None)
    rec.upsert_items([Item(f"p{i}", "c", 1.0) for i in range(6)])
    lists = {r["user_id"]: r for r in rec.recommend(feed(rec, blend_events()))}
    assert lists["w"]["items"][0]["item_id"] == "p1"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("recent", ["p1", "p4"]),
        ("covisit", ["p3", "p1", "p4"]),
        ("popularity", ["p1", "p3", "p2", "p4"]),
    ],
)
def test_a_baseline_worker_serves_one_source_alone(source, expected):
    s = load_settings(env={"STREAMREC_RECS_K": "4", "STREAMREC_RECS_SOURCE": source})
    rec = Recommender(s, None)
    rec.upsert_items([Item(f"p{i}", "c", 1.0) for i in range(6)])
    lists = {r["user_id"]: r for r in rec.recommend(feed(rec, blend_events()))}
    assert lists["x"]["source"] == source
    assert [x["item_id"] for x in lists["x"]["items"]] == expected


def test_changed_item_vectors_drop_the_encoder_cache(trained):
    model, items = trained
    rec = Recommender(settings(), model)
    catalog = [Item(i, v["category"], v["price"], v["title"]) for i, v in items.items()]
    rec.upsert_items(catalog)
    rec.recommend(feed(rec, [Event("e1", "z", "i3", "click", 1.7e9)]))
    assert rec.encoder is not None and rec.encoder.stats.cached_users == 1
    rec.upsert_items(catalog)  # same features: same vectors, the cache stays
    assert rec.encoder.stats.cached_users == 1
    rec.upsert_items([Item("i3", "c", 999.0, "new title")])  # new features: new vector
    assert rec.encoder.stats.cached_users == 0


def test_fallback_serves_the_heuristic_blend_with_a_model_loaded(trained):
    model, items = trained
    rec = Recommender(settings(k=3), model)
    rec.upsert_items([Item(i, v["category"], v["price"], v["title"]) for i, v in items.items()])
    jobs = feed(rec, [Event(f"e{n}", f"f{n}", "i5", "click", 1.7e9 + n) for n in range(3)])
    out = rec.recommend(jobs, fallback=True)
    assert {r["source"] for r in out} == {"heuristic"}
    assert {r["model_version"] for r in out} == {"heuristic"}
    assert out[0]["items"][0]["item_id"] == "i5"


def with_catalog(trained):
    model, items = trained
    rec = Recommender(settings(), model)
    rec.upsert_items([Item(i, v["category"], v["price"], v["title"]) for i, v in items.items()])
    return rec


def last_list_one_by_one(trained, events):
    """The user's last list when ``events`` are read in this order, one batch each."""
    rec = with_catalog(trained)
    out = None
    for job in feed(rec, events):
        out = rec.recommend([job])[-1]
    return out


def assert_same_list(got, want):
    assert [x["item_id"] for x in got["items"]] == [x["item_id"] for x in want["items"]]
    for x, y in zip(got["items"], want["items"], strict=True):
        assert abs(x["score"] - y["score"]) < 1e-4


def test_events_read_out_of_time_order_are_served_as_the_time_ordered_history(trained):
    # Each type has its own topic: a user's click can be read after their later browse.
    types = ["browse", "click", "browse", "purchase"]
    events = [
        Event(f"e{n}", "u", f"i{(7 * n) % 30}", types[n % 4], 1.7e9 + 10 * n) for n in range(14)
    ]
    read = [*events[:10], events[12], events[10], events[11], events[13]]  # within the context
    assert_same_list(last_list_one_by_one(trained, read), last_list_one_by_one(trained, events))


def test_events_out_of_order_within_a_batch_are_stepped_in_event_time_without_a_rebuild(trained):
    events = [Event(f"e{n}", "u", f"i{(5 * n) % 30}", "click", 1.7e9 + 10 * n) for n in range(11)]
    rec = with_catalog(trained)
    state = UserState()
    for e in events[:8]:  # a warm cache: one rebuild, then steps
        state.apply(e, LIMITS)
        rec.recommend([rec.job(e, state)])
    misses = rec.encoder.stats.misses
    batch = []
    for e in (events[9], events[8], events[10]):  # e9 read before e8, all in one batch
        state.apply(e, LIMITS)
        batch.append(rec.job(e, state))
    assert [j.reordered for j in batch] == [False, True, False]
    got = rec.recommend(batch)[-1]
    assert rec.encoder.stats.misses == misses  # three steps in event time, no rebuild
    assert_same_list(got, last_list_one_by_one(trained, events))


def test_a_late_event_just_before_the_newest_stepped_one_rewinds_the_cache_instead_of_rebuilding(
    trained,
):
    events = [Event(f"e{n}", "u", f"i{(5 * n) % 30}", "click", 1.7e9 + 10 * n) for n in range(10)]
    rec = with_catalog(trained)
    state = UserState()
    read = [*events[:7], events[8], events[7], events[9]]  # e7 read after e8, in its own batch
    for e in read[:8]:
        state.apply(e, LIMITS)
        rec.recommend([rec.job(e, state)])
    misses = rec.encoder.stats.misses
    got = None
    for e in read[8:]:
        state.apply(e, LIMITS)
        got = rec.recommend([rec.job(e, state)])[-1]
    assert rec.encoder.stats.misses == misses  # rewound by one and re-stepped, no rebuild
    assert_same_list(got, last_list_one_by_one(trained, events))


def test_live_ranked_lists_equal_the_offline_path_on_the_same_events(trained):
    """The worker's ranked lists and the offline evaluation's are one code path: the same
    candidates, features and ranker scores from the same events."""
    import dataclasses

    from encoders.ranker import Ranker, RankerConfig
    from streamrec.recommend.candidates import FEATURES
    from streamrec.recommend.offline import (
        ListProtocol,
        ListState,
        candidates_for,
        explained_lists,
    )

    model, items = trained
    torch.manual_seed(1)
    ranked = dataclasses.replace(model, ranker=Ranker(RankerConfig(len(FEATURES), 8, FEATURES)))
    s = settings(k=8)
    rec = Recommender(s, ranked)
    # the catalog is the model's vocabulary: offline, the model ranks that and nothing else
    vocab = model.item_ids
    rec.upsert_items(
        [Item(i, items[i]["category"], items[i]["price"], items[i]["title"]) for i in vocab]
    )
    g = torch.Generator().manual_seed(3)
    seqs: dict[str, list[tuple[str, int, float]]] = {}
    events = []
    for n in range(120):
        user = f"u{int(torch.randint(0, 6, (1,), generator=g))}"
        item = vocab[int(torch.randint(0, len(vocab), (1,), generator=g))]
        code = int(torch.randint(0, 3, (1,), generator=g))
        ts = 1.7e9 + 30 * n
        events.append(Event(f"e{n}", user, item, ("browse", "click", "purchase")[code], ts))
        seqs.setdefault(user, []).append((item, code, ts))
    live = {r["user_id"]: r for r in rec.recommend(feed(rec, events))}
    assert {r["source"] for r in live.values()} == {"model"}

    protocol = ListProtocol.from_settings(s)
    state = ListState.from_sequences(seqs, protocol)
    users = sorted(seqs)
    [(batch, _)] = candidates_for([(seqs[u], seqs[u][-1]) for u in users], state, protocol, ranked)
    assert ranked.ranker is not None
    offline = batch.top(ranked.ranker.score(batch.features), 8)
    for u, top in zip(users, offline, strict=True):
        got = live[u]["items"]
        assert [x["item_id"] for x in got] == [i for i, _ in top]
        assert [x["score"] for x in got] == pytest.approx([sc for _, sc in top], abs=1e-4)
    # ... and the same reasons, by the same code (the catalog here has titles, offline has none)
    explained = explained_lists([(seqs[u], seqs[u][-1]) for u in users], state, protocol, ranked, 8)
    kinds = set()
    for u, ex in zip(users, explained, strict=True):
        got = [x["why"] for x in live[u]["items"]]
        assert [(w["kind"], w["because"]) for w in got] == [
            (w["kind"], w["because"]) for w in ex.why
        ]
        kinds |= {w["kind"] for w in got}
    assert len(kinds) >= 2  # not one kind for everything


def test_item_side_state_rebuilt_from_the_stored_sequences_equals_the_live_one():
    """After a restart the worker seeds popularity and co-visitation from the recovered users:
    for users whose events all fit in the kept sequence, that is the state live traffic built."""
    live = Recommender(settings(), None)
    states: dict[str, UserState] = {}
    for e in blend_events():
        st = states.setdefault(e.user_id, UserState())
        if st.apply(e, LIMITS):
            live.observe(e, st)
    restarted = Recommender(settings(), None)
    for st in states.values():
        restarted.seed(UserState.from_bytes(st.to_bytes()))
    assert live.covisit.neighbours("p2") == restarted.covisit.neighbours("p2") == []
    for item in ("p1", "p3", "p4"):
        got, want = restarted.covisit.neighbours(item), live.covisit.neighbours(item)
        assert [i for i, _ in got] == [i for i, _ in want] and got
        assert [w for _, w in got] == pytest.approx([w for _, w in want])
    got_pop, want_pop = restarted.popularity.top(4), live.popularity.top(4)
    assert [i for i, _ in got_pop] == [i for i, _ in want_pop]
    assert [s for _, s in got_pop] == pytest.approx([s for _, s in want_pop])


def test_unlisted_rows_are_bounded_and_reused_rows_serve_the_same_lists(trained):
    """Items absent from the catalog (random ids from a producer) take unlisted rows; past
    retrieval.max_unlisted_items the least recently seen one is given to the next. Lists are the
    ones an unbounded worker serves, and no unknown item is ever listed."""
    model, items = trained
    catalog = [Item(i, v["category"], v["price"], v["title"]) for i, v in items.items()]
    bounded = Recommender(settings().replace(retrieval={"max_unlisted_items": 8}), model)
    unbounded = Recommender(settings(), model)
    for rec in (bounded, unbounded):
        rec.upsert_items(catalog)
    events = []
    for n in range(240):  # every other event on an item the catalog does not know
        item = f"i{(7 * n) % 30}" if n % 2 else f"unknown-{n}"
        events.append(Event(f"e{n}", f"u{n % 6}", item, "browse", 1.7e9 + 10 * n))
    states: dict[str, dict[str, UserState]] = {"b": {}, "u": {}}
    for start in range(0, len(events), 12):
        chunk = events[start : start + 12]
        got, want = [], []
        for rec, key, out in ((bounded, "b", got), (unbounded, "u", want)):
            jobs = []
            for e in chunk:
                st = states[key].setdefault(e.user_id, UserState())
                if st.apply(e, LIMITS):
                    rec.observe(e, st)
                    jobs.append(rec.job(e, st))
            out.extend(rec.recommend(jobs))
        for g, w in zip(got, want, strict=True):
            assert_same_list(g, w)
            assert not any(x["item_id"].startswith("unknown") for x in g["items"])
    assert len(bounded.catalog.index) <= len(catalog) + 8
    assert len(bounded.catalog.unlisted) == 8
    assert bounded.catalog.unlisted_reused == 120 - 8
    assert len(unbounded.catalog.index) == len(catalog) + 120


def test_a_million_distinct_unknown_items_do_not_grow_the_worker():
    """A producer sending random item ids: the item-keyed state (unlisted rows, popularity,
    co-visitation) stays within its settings, and the process's memory stays flat."""
    psutil = pytest.importorskip("psutil")
    s = settings().replace(
        retrieval={"max_unlisted_items": 5000},
        features={"popularity_max_items": 5000},
        covisit={"max_items": 5000},
    )
    rec = Recommender(s, None)
    states = [UserState() for _ in range(100)]
    proc = psutil.Process()
    rss = {}
    for n in range(1_000_000):
        st = states[n % 100]
        e = Event(f"e{n}", f"u{n % 100}", f"rand-{n}", "click", 1.7e9 + n * 0.001)
        if st.apply(e, LIMITS):
            rec.observe(e, st)
            rec.catalog.row_for_history(e.item_id)  # what the encoder asks for each event
        if n + 1 in (200_000, 1_000_000):
            rss[n + 1] = proc.memory_info().rss
    assert len(rec.catalog.index) <= 5000
    assert len(rec.popularity) <= 5000
    assert len(rec.covisit) <= 5000
    grown_mb = (rss[1_000_000] - rss[200_000]) / 2**20
    assert grown_mb < 32, f"RSS grew {grown_mb:.0f} MB from 200k to 1M distinct items"


def test_a_model_swap_prepared_from_a_snapshot_redoes_the_rows_changed_meanwhile(trained):
    from streamrec.recommend.catalog import embed

    model, items = trained
    catalog = [Item(i, v["category"], v["price"], v["title"]) for i, v in items.items()]
    rec = Recommender(settings().replace(retrieval={"max_unlisted_items": 2}), None)
    rec.upsert_items(catalog)
    for name in ("u1", "u2"):
        rec.catalog.row_for_history(name)
    snapshot = rec.catalog.snapshot()
    vectors = embed(model, snapshot)  # (off the loop, in the worker)
    # meanwhile: an item changes, one is added, an unlisted row goes to another item
    rec.upsert_items([Item("i3", "c", 99.0, "changed"), Item("new", "a", 1.0, "n")])
    rec.catalog.row_for_history("u3")
    rec.set_model(model, prepared=(snapshot, vectors))

    want = Recommender(settings().replace(retrieval={"max_unlisted_items": 2}), None)
    want.upsert_items([*catalog, Item("i3", "c", 99.0, "changed"), Item("new", "a", 1.0, "n")])
    for name in ("u1", "u2", "u3"):
        want.catalog.row_for_history(name)
    want.set_model(model)
    got_index, want_index = rec.catalog.index, want.catalog.index
    assert sorted(got_index.ids) == sorted(want_index.ids)
    for item_id in want_index.ids:
        a = got_index.matrix[got_index.row_of[item_id]]
        b = want_index.matrix[want_index.row_of[item_id]]
        assert torch.allclose(a, b, atol=1e-6), item_id


def test_rows_looked_up_for_one_batch_are_never_given_away_within_it(trained):
    """A batch looks up all its rows before the encoder reads them: with a bound smaller than
    the batch's unknown items, rows must not be handed to another item meanwhile."""
    model, items = trained
    rec = Recommender(settings().replace(retrieval={"max_unlisted_items": 2}), model)
    rec.upsert_items([Item(i, v["category"], v["price"], v["title"]) for i, v in items.items()])
    with rec.catalog.pinned_rows():
        rows = [rec.catalog.row_for_history(i) for i in ("a", "b", "c", "a", "d")]
    assert len(set(rows)) == 4  # four distinct items, four rows, none shared
    assert rows[0] == rows[3]
    after = rec.catalog.row_for_history("e")  # outside a batch the bound applies again
    assert after in rows and len(rec.catalog.unlisted) == 4


def test_events_dropped_for_retention_leave_the_encoder_state_as_if_never_seen(trained):
    """After retention drops a user's old events, their vector is the full pass over what is
    kept (a fresh user with those events alone), not the cached state that still holds them."""
    day = 86400.0
    ret = FeatureLimits(retention_s=2 * day)
    old = [Event(f"o{n}", "u", f"i{(7 * n) % 30}", "click", 1.7e9 + 60 * n) for n in range(8)]
    new = [
        Event(f"n{n}", "u", f"i{(5 * n + 1) % 30}", "browse", 1.7e9 + 3 * day + 60 * n)
        for n in range(4)
    ]
    rec = with_catalog(trained)
    state = UserState()
    for e in old + new[:1]:
        state.apply(e, ret)
        rec.recommend([rec.job(e, state)])  # warm: the cache is stepped event by event
    assert state.seq[0][0] == new[0].item_id  # the old ones went with the first new event
    for e in new[1:]:
        state.apply(e, ret)
        job = rec.job(e, state)
        rec.recommend([job])
    with rec.catalog.pinned_rows():
        served = rec._encode([job], [0])[0]

    fresh = with_catalog(trained)
    kept = UserState()
    for e in new:
        kept.apply(e, LIMITS)
    with fresh.catalog.pinned_rows():
        want = fresh._encode([fresh.job(new[-1], kept)], [0])[0]
    assert torch.allclose(served, want, atol=2e-2)
    # and it is not what the history with the old events gives
    everything = UserState()
    for e in old + new:
        everything.apply(e, LIMITS)
    full = with_catalog(trained)
    with full.catalog.pinned_rows():
        with_old = full._encode([full.job(new[-1], everything)], [0])[0]
    assert not torch.allclose(with_old, want, atol=2e-2)
