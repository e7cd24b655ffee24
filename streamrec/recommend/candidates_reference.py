"""The candidate rows built one at a time: what ``build_candidates`` must agree with.

``candidates.build_candidates`` gathers a batch's candidates in dicts and computes all feature
rows at once in numpy (it runs for every list served). This builds the same rows the plain way,
one Python list per candidate, in the order the sources propose them; tests hold the two equal.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from streamrec.features.covisit import CoVisitation
from streamrec.recommend.candidates import (
    AGE_NONE,
    N_FEATURES,
    SOURCE_BITS,
    CandidateBatch,
    CandidateConfig,
    F,
    HistoryStat,
    UserContext,
    history_stats,
)


def build_candidates_reference(
    contexts: Sequence[UserContext],
    cfg: CandidateConfig,
    covisit: CoVisitation | None,
    popular: Sequence[tuple[str, float]],
    model_lists: Sequence[Sequence[tuple[str, float]]] | None = None,
    listable: Callable[[str], bool] | None = None,
    stats: Sequence[Mapping[str, HistoryStat]] | None = None,
) -> CandidateBatch:
    batch = CandidateBatch()
    rows: list[list[float]] = []
    pop_top = popular[0][1] if popular else 0.0
    pop_score = dict(popular)
    sentinels = (
        math.log1p(cfg.model + 1),
        math.log1p(cfg.recent + 1),
        math.log1p(cfg.covisit + 1),
    )
    for b, ctx in enumerate(contexts):
        stats_b = history_stats(ctx.history) if stats is None else stats[b]
        recent = list(stats_b)  # the stats are keyed newest first: the recent items
        block = _UserBlock(batch, rows, b, ctx, cfg, listable)
        for item in recent[: cfg.recent]:
            block.add(item, "recent", stats_b, pop_score, pop_top, sentinels)
        if covisit is not None:
            neighbours = covisit.for_user(recent, cfg.covisit)
            ranked = sorted(neighbours.items(), key=lambda kv: -kv[1])
            for rank, (item, score) in enumerate(ranked):
                row = block.add(item, "covisit", stats_b, pop_score, pop_top, sentinels)
                if row is not None:
                    row[F["covisit"]] = score
                    row[F["covisit_rank"]] = math.log1p(rank)
        if model_lists is not None:
            for rank, (item, _) in enumerate(model_lists[b][: cfg.model]):
                row = block.add(item, "model", stats_b, pop_score, pop_top, sentinels)
                if row is not None:
                    row[F["model_rank"]] = math.log1p(rank)
        for item, _ in popular[: cfg.popular]:
            block.add(item, "popular", stats_b, pop_score, pop_top, sentinels)
        batch.offsets.append(len(batch.item_ids))
    if rows:
        batch.features = np.asarray(rows, dtype=np.float32)
    return batch


class _UserBlock:
    """One user's candidates while they are collected: each item once, with the bits of every
    source that proposed it."""

    def __init__(
        self,
        batch: CandidateBatch,
        rows: list[list[float]],
        user: int,
        ctx: UserContext,
        cfg: CandidateConfig,
        listable: Callable[[str], bool] | None,
    ) -> None:
        self.batch, self.rows, self.user, self.now = batch, rows, user, ctx.now
        self.start = len(batch.item_ids)
        self.chosen: dict[str, int] = {}
        self.banned = ctx.excluded | (ctx.purchased if cfg.exclude_purchased else frozenset())
        self.listable = listable

    def add(
        self,
        item: str,
        source: str,
        stats: Mapping[str, HistoryStat],
        pop_score: Mapping[str, float],
        pop_top: float,
        sentinels: tuple[float, float, float],
    ) -> list[float] | None:
        """The item's feature row (new or already there), or None when it may not be listed."""
        at = self.chosen.get(item)
        if at is not None:
            self.batch.sources[at] |= SOURCE_BITS[source]
            return self.rows[at]
        if item in self.banned or (self.listable is not None and not self.listable(item)):
            return None
        at = self.chosen[item] = len(self.batch.item_ids)
        self.batch.item_ids.append(item)
        self.batch.users.append(self.user)
        self.batch.sources.append(SOURCE_BITS[source])
        row = _row(item, stats, self.now, pop_score, pop_top, sentinels)
        self.rows.append(row)
        return row


_M_RANK, _IN_HIST, _REC_RANK, _AGE = F["model_rank"], F["in_history"], F["recency_rank"], F["age"]
_N_BROWSE, _N_CLICK, _N_PURCHASE, _LAST_TYPE = (
    F["n_browse"], F["n_click"], F["n_purchase"], F["last_type"]
)  # fmt: skip
_CV_RANK, _POP = F["covisit_rank"], F["popularity"]


def _row(
    item: str,
    stats: Mapping[str, HistoryStat],
    now: float,
    pop_score: Mapping[str, float],
    pop_top: float,
    sentinels: tuple[float, float, float],
) -> list[float]:
    none_model, none_recent, none_covisit = sentinels
    st = stats.get(item)
    pop = pop_score.get(item)
    row = [0.0] * N_FEATURES
    row[_M_RANK] = none_model
    row[_CV_RANK] = none_covisit
    row[_POP] = -1.0 if pop is None else max(-20.0, pop - pop_top) / 20.0
    if st is None:
        row[_REC_RANK] = none_recent
        row[_AGE] = AGE_NONE
    else:
        rank, ts, counts, code = st
        log1p = math.log1p
        row[_IN_HIST] = 1.0
        row[_REC_RANK] = min(log1p(rank), none_recent)
        row[_AGE] = log1p(max(0.0, now - ts)) / 10
        row[_N_BROWSE] = log1p(counts[0])
        row[_N_CLICK] = log1p(counts[1])
        row[_N_PURCHASE] = log1p(counts[2])
        row[_LAST_TYPE] = code + 1.0
    return row
