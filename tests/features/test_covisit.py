"""Co-visitation state: what pairs, how weights decay, and that it stays bounded."""

from __future__ import annotations

import random

import pytest

from streamrec.features.covisit import CoVisitation, CoVisitConfig
from streamrec.features.popularity import TYPE_WEIGHT

T = 1.7e9


def test_an_event_pairs_with_the_users_recent_events_both_ways_weighted_by_type():
    cv = CoVisitation(CoVisitConfig(window_s=100.0, span=2, half_life_s=1e12))
    history = [("old", 0, T - 500), ("a", 0, T - 50), ("b", 1, T - 10), ("c", 0, T - 5)]
    cv.observe(history, ("x", 2, T))  # a purchase of x
    # only the last `span` events (b, c) within the window pair with x
    assert {i for i, _ in cv.neighbours("x")} == {"b", "c"}
    assert cv.neighbours("a") == [] and cv.neighbours("old") == []
    w = dict(cv.neighbours("b"))["x"]
    assert w == pytest.approx(TYPE_WEIGHT[2])  # b -> x weighed by x's type (purchase)
    assert dict(cv.neighbours("x"))["b"] == pytest.approx(TYPE_WEIGHT[1])  # x -> b by b's


def test_the_same_item_twice_is_no_pair():
    cv = CoVisitation()
    cv.observe_sequence([("a", 0, T), ("a", 0, T + 1), ("a", 1, T + 2)])
    assert cv.neighbours("a") == [] and cv.pairs_added == 0


def test_newer_pairs_outweigh_older_ones_and_rescaling_keeps_the_order():
    cfg = CoVisitConfig(half_life_s=100.0, window_s=10.0)
    cv = CoVisitation(cfg)
    cv.observe([("a", 0, T)], ("old", 0, T + 1))
    cv.observe([("a", 0, T + 300)], ("new", 0, T + 301))
    (first, w1), (second, w2) = cv.neighbours("a")
    assert (first, second) == ("new", "old")
    assert w1 / w2 == pytest.approx(2.0**3, rel=1e-6)  # 300 s = 3 half-lives
    # far in the future (past the rescale point): weights stay finite and comparable
    cv.observe([("a", 0, T + 1e5)], ("newest", 0, T + 1e5 + 1))
    top = cv.neighbours("a")
    assert top[0][0] == "newest" and all(w < float("inf") for _, w in top)
    assert cv.neighbours("a")[1][0] == "new"


def test_hostile_input_cannot_grow_the_state_past_its_bounds():
    cfg = CoVisitConfig(neighbours=8, max_items=500, span=5)
    cv = CoVisitation(cfg)
    rng = random.Random(0)
    history: list[tuple[str, int, float]] = []
    for n in range(20_000):  # random item ids: every event a new item
        e = (f"r{rng.randrange(10**9)}", rng.randrange(3), T + n)
        cv.observe(history, e)
        history = [*history[-4:], e]
    assert len(cv) <= cfg.max_items
    assert cv.n_weights <= cfg.max_items * 2 * cfg.neighbours
    assert cv.items_dropped > 0


def test_a_users_neighbours_favour_the_newest_items():
    cv = CoVisitation(CoVisitConfig(half_life_s=1e12))
    for u in range(3):
        cv.observe([("a", 0, T + u)], ("after_a", 0, T + u + 1))
        cv.observe([("b", 0, T + u)], ("after_b", 0, T + u + 1))
    scores = cv.for_user(["b", "a"], n=10)  # b newest
    assert scores["after_b"] > scores["after_a"] > 0
    assert list(cv.for_user(["b", "a"], n=1)) == ["after_b"]
