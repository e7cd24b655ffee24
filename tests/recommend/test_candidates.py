"""Candidate sources and features: the rows the ranker and the heuristic lists are built from."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from streamrec.features.covisit import CoVisitation
from streamrec.recommend.candidates import (
    SOURCE_BITS,
    CandidateConfig,
    F,
    UserContext,
    build_candidates,
    heuristic_scores,
    source_scores,
)
from streamrec.recommend.candidates_reference import build_candidates_reference

T = 1.7e9
HISTORY = [("a", 0, T), ("b", 1, T + 10), ("a", 1, T + 20), ("c", 2, T + 30)]


def test_history_features_and_sources():
    cv = CoVisitation()
    cv.observe([("c", 0, T)], ("z", 0, T + 1))  # z follows c for someone else
    ctx = UserContext(HISTORY, purchased=frozenset(), now=T + 90)
    popular = [("p", 5.0), ("a", 4.0)]
    batch = build_candidates([ctx], CandidateConfig(), cv, popular, [[("m", 1.0), ("b", 0.5)]])
    rows = {item: batch.features[i] for i, item in enumerate(batch.item_ids)}
    src = dict(zip(batch.item_ids, batch.sources, strict=True))
    assert batch.item_ids[:3] == ["c", "a", "b"]  # recent items first: distinct, newest first
    assert set(batch.item_ids) == {"a", "b", "c", "z", "m", "p"}
    a = rows["a"]
    assert a[F["in_history"]] == 1 and a[F["recency_rank"]] == pytest.approx(math.log1p(1))
    assert a[F["age"]] == pytest.approx(math.log1p(70) / 10)
    assert a[F["n_browse"]] == pytest.approx(math.log1p(1))
    assert a[F["n_click"]] == pytest.approx(math.log1p(1))
    assert a[F["last_type"]] == 2  # click + 1
    assert a[F["popularity"]] == pytest.approx(-1 / 20)
    assert src["a"] == SOURCE_BITS["recent"] | SOURCE_BITS["popular"]
    assert src["b"] == SOURCE_BITS["recent"] | SOURCE_BITS["model"]
    assert rows["b"][F["model_rank"]] == pytest.approx(math.log1p(1))
    assert rows["z"][F["covisit"]] > 0 and rows["z"][F["in_history"]] == 0
    assert rows["p"][F["popularity"]] == 0 and rows["m"][F["popularity"]] == -1


def test_purchased_and_unlistable_items_are_no_candidates_unless_the_policy_allows():
    ctx = UserContext(HISTORY, purchased=frozenset({"c"}), now=T + 90)
    out = build_candidates([ctx], CandidateConfig(), None, [], listable=lambda i: i != "b")
    assert out.item_ids == ["a"]
    kept = build_candidates([ctx], CandidateConfig(exclude_purchased=False), None, [])
    assert kept.item_ids == ["c", "a", "b"]


def test_heuristic_lists_recent_then_covisitation_then_popularity():
    cv = CoVisitation()
    cv.observe([("c", 0, T)], ("z", 0, T + 1))
    ctx = UserContext(HISTORY, frozenset(), T + 90)
    batch = build_candidates([ctx, ctx], CandidateConfig(), cv, [("p", 1.0)])
    tops = batch.top(heuristic_scores(batch), 10)
    assert [i for i, _ in tops[0]] == ["c", "a", "b", "z", "p"] == [i for i, _ in tops[1]]
    recent = batch.top(source_scores(batch, "recent"), 10)[0]
    assert [i for i, s in recent if np.isfinite(s)] == ["c", "a", "b"]


@pytest.mark.parametrize("seed", range(6))
def test_the_serving_build_equals_the_row_by_row_reference(seed: int) -> None:
    """Random users over a small catalog, so sources overlap: histories with repeats, bought and
    excluded items, unlistable items, model lists reaching into the history."""
    rng = random.Random(seed)
    catalog = [f"i{n}" for n in range(rng.choice([5, 40, 300]))]
    cv = CoVisitation()
    for _ in range(50):
        cv.observe_sequence(
            [(rng.choice(catalog), rng.randrange(3), T + 60 * k) for k in range(rng.randrange(12))]
        )
    contexts = []
    for _ in range(rng.randrange(1, 20)):
        n = rng.choice([0, 1, 3, 30, 100])
        history = [(rng.choice(catalog), rng.randrange(3), T + 7.5 * k) for k in range(n)]
        bought = frozenset(i for i, c, _ in history if c == 2)
        excluded = frozenset(rng.sample(catalog, min(len(catalog), rng.randrange(3))))
        now = history[-1][2] + rng.choice([0.0, 5.0]) if history else T
        contexts.append(UserContext(history, bought, now, excluded))
    popular = sorted(
        ((i, rng.uniform(-30, 5)) for i in rng.sample(catalog, 4)), key=lambda p: -p[1]
    )
    model_lists = [
        [(rng.choice(catalog), rng.random()) for _ in range(rng.randrange(60))] for _ in contexts
    ]
    unlisted = set(rng.sample(catalog, len(catalog) // 7))
    for cfg in (CandidateConfig(), CandidateConfig(recent=3, covisit=4, model=5, popular=2,
                                                   exclude_purchased=False)):  # fmt: skip
        for args in (
            (cv, popular, model_lists, lambda i: i not in unlisted),
            (None, [], None, None),
            (cv, popular, None, None),
        ):
            fast = build_candidates(contexts, cfg, *args)
            ref = build_candidates_reference(contexts, cfg, *args)
            assert fast.item_ids == ref.item_ids
            assert fast.users == ref.users and fast.offsets == ref.offsets
            assert fast.sources == ref.sources
            assert fast.features.dtype == ref.features.dtype == np.float32
            np.testing.assert_allclose(fast.features, ref.features, rtol=1e-6, atol=1e-7)
    assert len(fast) > 0  # the comparison above saw rows
