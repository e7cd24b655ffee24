"""The synthetic world is deterministic and has the structure models are meant to learn."""

from __future__ import annotations

import dataclasses
from collections import Counter, defaultdict
from itertools import pairwise
from typing import Any

import pytest

from streamrec.eventlog import read_events, read_items
from streamrec.events.schema import EVENT_TYPES, Event, Item
from streamrec.generate import GeneratorConfig, World, generate, write_world

# Smaller than the defaults so the suite stays fast, big enough for stable statistics.
CFG = GeneratorConfig(n_users=1200, n_items=800, n_categories=16, days=21, seed=7)


@pytest.fixture(scope="module")
def world() -> World:
    return generate(CFG)


@pytest.fixture(scope="module")
def category_of(world: World) -> dict[str, str]:
    return {it["item_id"]: it["category"] for it in world.items}


@pytest.fixture(scope="module")
def by_user(world: World) -> dict[str, list[dict[str, Any]]]:
    users: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in world.events:
        users[e["user_id"]].append(e)
    return users


def test_same_seed_same_world(world: World) -> None:
    again = generate(CFG)
    assert again.items == world.items
    assert again.events == world.events


def test_other_seed_other_world(world: World) -> None:
    other = generate(dataclasses.replace(CFG, seed=8))
    assert other.events[0]["event_id"] == "g8-0"
    assert [e["item_id"] for e in other.events[:200]] != [e["item_id"] for e in world.events[:200]]


def test_shape_and_ids(world: World) -> None:
    assert len(world.items) == CFG.n_items
    assert len({it["item_id"] for it in world.items}) == CFG.n_items
    assert len(world.categories) == CFG.n_categories
    # ~40 events per user at the defaults; this config keeps most of that.
    assert 25 * CFG.n_users < len(world.events) < 60 * CFG.n_users
    assert [e["event_id"] for e in world.events] == [
        f"g{CFG.seed}-{n}" for n in range(len(world.events))
    ]
    assert {e["type"] for e in world.events} == set(EVENT_TYPES)
    assert len({e["user_id"] for e in world.events}) == CFG.n_users


def test_records_match_the_shared_types(world: World) -> None:
    for e in world.events[:2000]:
        assert Event(**e).to_dict() == e
    for it in world.items:
        assert Item(**it).to_dict() == it


def test_events_sorted_and_within_horizon(world: World) -> None:
    ts = [e["ts"] for e in world.events]
    assert ts == sorted(ts)
    assert ts[0] >= CFG.start_ts
    # A session that starts just before the end may run a little past it.
    assert ts[-1] < CFG.start_ts + CFG.days * 86400 + 6 * 3600


def test_every_event_names_a_catalog_item(world: World, category_of: dict[str, str]) -> None:
    assert all(e["item_id"] in category_of for e in world.events)


def test_session_timing(by_user: dict[str, list[dict[str, Any]]]) -> None:
    inside: list[float] = []
    between: list[float] = []
    for events in by_user.values():
        for a, b in pairwise(events):
            gap = b["ts"] - a["ts"]
            assert gap > 0  # a user's own events are strictly ordered
            same = a["context"]["session"] == b["context"]["session"]
            (inside if same else between).append(gap)
    assert max(inside) <= 900.0  # seconds to minutes
    assert min(between) >= 1800.0  # sessions are separated by a real pause
    between.sort()
    assert 3600.0 < between[len(between) // 2] < 10 * 86400.0  # hours to days


def test_funnel(by_user: dict[str, list[dict[str, Any]]], world: World) -> None:
    unavailable = {it["item_id"] for it in world.items if not it["available"]}
    assert unavailable
    purchases = 0
    for events in by_user.values():
        session = None
        clicked: set[str] = set()
        last_browsed = None
        for e in events:
            if e["context"]["session"] != session:
                session, clicked, last_browsed = e["context"]["session"], set(), None
            if e["type"] == "browse":
                last_browsed = e["item_id"]
            elif e["type"] == "click":
                assert e["item_id"] == last_browsed  # a click is on the item being viewed
                clicked.add(e["item_id"])
            else:
                assert e["item_id"] in clicked  # bought only what was clicked in this session
                assert e["item_id"] not in unavailable
                purchases += 1
    counts = Counter(e["type"] for e in world.events)
    assert counts["browse"] > counts["click"] > counts["purchase"] == purchases > 0


def test_users_concentrate_on_few_categories(
    by_user: dict[str, list[dict[str, Any]]], category_of: dict[str, str]
) -> None:
    top_share = []
    for events in by_user.values():
        if len(events) >= 20:
            cats = Counter(category_of[e["item_id"]] for e in events)
            top_share.append(cats.most_common(1)[0][1] / len(events))
    assert len(top_share) > CFG.n_users // 3
    assert sum(top_share) / len(top_share) > 0.6


def test_zipf_catalog(world: World) -> None:
    sizes = Counter(it["category"] for it in world.items)
    assert sizes[world.categories[0]] > 3 * sizes[world.categories[-1]]
    browses = Counter(e["item_id"] for e in world.events if e["type"] == "browse")
    ranked = sorted(browses.values(), reverse=True)
    assert sum(ranked[: CFG.n_items // 10]) > 0.25 * sum(ranked)  # top 10% of items


def test_items_look_like_a_catalog(world: World) -> None:
    for it in world.items:
        assert it["price"] > 0
        assert it["category"] in world.categories
        assert it["category"].split("-")[0] in it["title"].lower()
    prices = sorted(it["price"] for it in world.items)
    assert prices[-1] > 10 * prices[len(prices) // 2]  # log-normal: a long upper tail
    assert 0 < sum(not it["available"] for it in world.items) < 0.1 * CFG.n_items


def _leave_last_out(
    by_user: dict[str, list[dict[str, Any]]],
) -> list[tuple[list[dict[str, Any]], dict[str, Any]]]:
    """(history, target) per user: the target is the user's last browse of a new item."""
    cases = []
    for events in by_user.values():
        targets = [
            k
            for k in range(5, len(events))
            if events[k]["type"] == "browse" and events[k]["item_id"] != events[k - 1]["item_id"]
        ]
        if targets:
            cases.append((events[: targets[-1]], events[targets[-1]]))
    return cases


def test_history_predicts_next_category_better_than_popularity(
    by_user: dict[str, list[dict[str, Any]]], category_of: dict[str, str]
) -> None:
    cases = _leave_last_out(by_user)
    overall = Counter(category_of[e["item_id"]] for hist, _ in cases for e in hist)
    popular = overall.most_common(1)[0][0]
    by_history = by_popularity = 0
    for hist, target in cases:
        favourite = Counter(category_of[e["item_id"]] for e in hist).most_common(1)[0][0]
        by_history += favourite == category_of[target["item_id"]]
        by_popularity += popular == category_of[target["item_id"]]
    assert len(cases) > CFG.n_users // 2
    assert by_history / len(cases) > by_popularity / len(cases) + 0.3


def test_history_predicts_next_item_better_than_popularity(
    by_user: dict[str, list[dict[str, Any]]], category_of: dict[str, str]
) -> None:
    """A crude sequence heuristic must beat global top-10 by a wide margin at hit@10."""
    cases = _leave_last_out(by_user)
    overall = Counter(e["item_id"] for hist, _ in cases for e in hist)
    top10 = {i for i, _ in overall.most_common(10)}
    popular_in: dict[str, list[str]] = defaultdict(list)
    for item, _ in overall.most_common():
        popular_in[category_of[item]].append(item)
    hits_seq = hits_pop = 0
    for hist, target in cases:
        recent = list(dict.fromkeys(e["item_id"] for e in reversed(hist)))[1:6]
        current = category_of[hist[-1]["item_id"]]
        fill = [i for i in popular_in[current] if i not in recent][:5]
        hits_seq += target["item_id"] in recent + fill
        hits_pop += target["item_id"] in top10
    assert hits_seq > 2 * hits_pop + 0.1 * len(cases)


def test_write_world_round_trip(world: World, tmp_path: Any) -> None:
    small = World(world.config, world.categories, world.items[:50], world.events[:500])
    items_path, events_path = write_world(small, tmp_path / "out")
    assert (items_path.name, events_path.name) == ("items.jsonl", "events.jsonl")
    assert list(read_items(items_path)) == small.items
    assert list(read_events(events_path)) == small.events
    items_gz, events_gz = write_world(small, tmp_path / "gz", compress=True)
    assert events_gz.name == "events.jsonl.gz"
    assert list(read_events(events_gz)) == small.events
    assert list(read_items(items_gz)) == small.items


@pytest.mark.parametrize(
    "bad",
    [
        {"n_users": 0},
        {"n_categories": 0},
        {"n_items": 10, "n_categories": 6},
        {"click_prob": 1.5},
        {"repeat_prob": 0.6, "walk_prob": 0.6},
        {"sessions_per_user": 0.5},
        {"taste_alpha": 0.0},
    ],
)
def test_config_rejects_nonsense(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        GeneratorConfig(**bad)
