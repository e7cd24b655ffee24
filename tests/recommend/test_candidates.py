"""Candidate sources and features: the rows the ranker and the heuristic lists are built from."""

from __future__ import annotations

import math

import numpy as np
import pytest

from streamrec.features.covisit import CoVisitation
from streamrec.recommend.candidates import (
    SOURCE_BITS,
    CandidateConfig,
    F,
    UserContext,
    absent_row,
    build_candidates,
    heuristic_scores,
    reference_candidates,
    source_scores,
)

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


def test_the_absent_row_is_what_a_candidate_no_source_knows_has():
    cfg = CandidateConfig()
    ctx = UserContext([("a", 0, T)], frozenset(), T + 5)
    batch = build_candidates([ctx], cfg, None, [("p", 3.0), ("q", 1.0)])
    q = batch.features[batch.item_ids.index("q")]  # only popular: no other source knows it
    row = absent_row(cfg)
    assert row[F["popularity"]] == -1.0 and row[F["in_history"]] == 0
    np.testing.assert_allclose(
        np.delete(row, F["popularity"]), np.delete(q, F["popularity"]), atol=1e-7
    )


def test_the_vectorised_candidates_equal_the_row_by_row_reference():
    """Random histories, co-visitation, popularity and model lists over a small catalog, so
    items come from several sources at once, some are purchased and some unlistable."""
    rng = np.random.default_rng(7)
    items = [f"i{n}" for n in range(40)]
    cv = CoVisitation()
    for _ in range(300):
        a, b = rng.choice(len(items), 2, replace=False)
        cv.observe([(items[a], 0, T)], (items[b], int(rng.integers(3)), T + 1))
    contexts = []
    for _ in range(25):
        n = int(rng.integers(0, 30))
        history = [
            (items[int(rng.integers(len(items)))], int(rng.integers(3)), T + 10.0 * k)
            for k in range(n)
        ]
        bought = frozenset(items[int(i)] for i in rng.integers(len(items), size=3))
        now = T + 10.0 * n + float(rng.integers(0, 5))  # 0: the newest event's own time
        contexts.append(UserContext(history, bought, now))
    popular = [(items[int(i)], float(-k)) for k, i in enumerate(rng.permutation(40)[:12])]
    model_lists = [
        [(items[int(i)], float(-k)) for k, i in enumerate(rng.permutation(40)[:15])]
        for _ in contexts
    ]
    gone = set(items[::7])
    for cfg in (
        CandidateConfig(recent=5, covisit=8, model=6, popular=4),
        CandidateConfig(exclude_purchased=False),
    ):
        for listable in (None, lambda i: i not in gone):
            for lists in (None, model_lists):
                got = build_candidates(contexts, cfg, cv, popular, lists, listable)
                want = reference_candidates(contexts, cfg, cv, popular, lists, listable)
                assert len(want) > 100
                assert got.item_ids == want.item_ids
                assert got.users == want.users and got.offsets == want.offsets
                assert got.sources == want.sources
                assert got.features.dtype == want.features.dtype == np.float32
                np.testing.assert_allclose(got.features, want.features, rtol=1e-6, atol=1e-7)
