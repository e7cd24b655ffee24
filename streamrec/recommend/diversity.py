"""Diversity re-ranking: maximal marginal relevance (MMR) over a user's best candidates.

A list ranked by relevance alone repeats itself (ten near-identical lipsticks). MMR picks the
list one item at a time, each time the candidate with the best trade-off between its relevance
and its similarity to the items already picked:

    pick argmax_i  (1 - λ) · relevance_i  -  λ · max_{j picked} similarity(i, j)

λ is the setting ``recs.diversity`` (0: off, the ranked list as it is; 1: similarity alone after
the first pick). Relevance is the scorer's score, rescaled to [0, 1] within the user's pool of
candidates; similarity is the cosine of the item-tower vectors (clipped at 0) and, where the
catalog gives categories, 1 for two items of the same category (the larger of the two). Only the
best ``POOL_FACTOR × k`` candidates are considered, so the cost per list is O(k · pool · d)
whatever the catalog. The re-ranked list is returned as scores (the picks first, in pick order,
then the rest as they were), so every consumer of scores (top-K, the offline ranks) reads it
unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from streamrec.recommend.candidates import CandidateBatch

POOL_FACTOR = 3  # candidates considered per list: the best POOL_FACTOR * k by relevance


def mmr_scores(
    batch: CandidateBatch,
    scores: np.ndarray,
    k: int,
    diversity: float,
    vectors: np.ndarray | None,
    categories: Sequence[str | None] | None,
) -> np.ndarray:
    """``scores`` re-ranked for diversity, user by user. ``vectors[r]``: row r's item vector
    (None: no model, categories alone); ``categories[r]``: its category (None: unknown)."""
    if diversity <= 0.0 or not len(batch):
        return scores
    out = np.asarray(scores, dtype=np.float64).copy()
    unit = None
    if vectors is not None:
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        unit = vectors / np.maximum(norms, 1e-12)
    for b in range(batch.n_users):
        lo, hi = batch.offsets[b], batch.offsets[b + 1]
        s = out[lo:hi]
        finite = np.isfinite(s)
        if finite.sum() < 2:
            continue
        order = np.argsort(-np.where(finite, s, -np.inf), kind="stable")
        pool = order[: min(int(finite.sum()), POOL_FACTOR * k)]
        picks = _mmr(s[pool], _similarity(pool + lo, unit, categories), k, diversity)
        top = float(s[pool[0]])
        # the picks above everything else, in pick order; the rest keep their order below
        for rank, p in enumerate(picks):
            s[pool[p]] = top + 1.0 + (len(picks) - rank)
    return out.astype(np.float32)


def _similarity(
    rows: np.ndarray, unit: np.ndarray | None, categories: Sequence[str | None] | None
) -> np.ndarray:
    n = len(rows)
    sim = np.zeros((n, n), dtype=np.float64)
    if unit is not None:
        v = unit[rows]
        sim = np.clip(v @ v.T, 0.0, 1.0)
    if categories is not None:
        codes: dict[str, int] = {}
        cat = np.array(
            [-1 if (c := categories[r]) is None else codes.setdefault(c, len(codes)) for r in rows]
        )
        same = (cat[:, None] == cat[None, :]) & (cat[:, None] >= 0)
        sim = np.maximum(sim, same.astype(np.float64))
    return sim


def _mmr(relevance: np.ndarray, sim: np.ndarray, k: int, lam: float) -> list[int]:
    """Greedy MMR over one pool: indices into it, in pick order."""
    lo, hi = float(relevance.min()), float(relevance.max())
    rel = (relevance - lo) / (hi - lo) if hi > lo else np.ones_like(relevance)
    n = len(rel)
    picked: list[int] = []
    closest = np.zeros(n)  # each candidate's largest similarity to the picks so far
    free = np.ones(n, dtype=bool)
    for _ in range(min(k, n)):
        gain = np.where(free, (1.0 - lam) * rel - lam * closest, -np.inf)
        j = int(np.argmax(gain))
        picked.append(j)
        free[j] = False
        closest = np.maximum(closest, sim[:, j])
    return picked
