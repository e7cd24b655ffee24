"""Ranking metrics of the next-item protocol: full ranking over every item, HR@k and NDCG@k.

One target per user. ``ranks`` gives each target's 0-based position among all candidate items;
with a single relevant item NDCG@k is 1/log2(rank+2) on a hit and 0 otherwise, and IDCG is 1.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor


def ranks(
    scores: Tensor, targets: Tensor, exclude: Sequence[Sequence[int]] | None = None
) -> Tensor:
    """0-based rank of ``targets[b]`` among the columns of ``scores`` [B,N].

    Column 0 (the unknown-item row) is never a candidate. ``exclude[b]`` lists columns removed
    from row b's ranking (the user's own history), as a recommender that filters seen items
    would; a target among them is therefore a miss. Ties rank the target below
    every equal-scored column (pessimistic: a constant scorer earns nothing). A target of 0 (an
    item outside the vocabulary) or an excluded target is a miss at any k (rank N)."""
    scores = scores.clone()
    scores[:, 0] = float("-inf")
    if exclude is not None:
        rows = [b for b, cols in enumerate(exclude) for _ in cols]
        cols = [c for cs in exclude for c in cs]
        if rows:
            scores[torch.tensor(rows), torch.tensor(cols)] = float("-inf")
    t = scores.gather(1, targets[:, None])
    n_cols = torch.arange(scores.shape[1])[None, :]
    rank = (scores > t).sum(1) + ((scores == t) & (n_cols != targets[:, None])).sum(1)
    missed = (targets == 0) | torch.isneginf(t[:, 0])
    return torch.where(missed, scores.shape[1], rank)


def hit_rate(r: Tensor, k: int) -> float:
    return float((r < k).double().mean()) if r.numel() else 0.0


def ndcg(r: Tensor, k: int) -> float:
    if not r.numel():
        return 0.0
    gain = torch.where(r < k, 1.0 / torch.log2(r.double() + 2.0), 0.0)
    return float(gain.mean())


def at_k(r: Tensor, ks: Iterable[int]) -> dict[str, float]:
    """{"hr@10": ..., "ndcg@10": ..., ...} for each k."""
    out: dict[str, float] = {}
    for k in ks:
        out[f"hr@{k}"] = hit_rate(r, k)
        out[f"ndcg@{k}"] = ndcg(r, k)
    return out
