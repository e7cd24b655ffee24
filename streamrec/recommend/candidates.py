"""Candidates from several sources, each with the features one scorer ranks them by.

On logs where people return to items, the user's own recent items are the strongest simple list,
and co-visitation neighbours of their last items the next; a two-tower inner product can put
neither first. So a list is drawn from four sources and one scorer decides between them:

* **repeat**: the user's recent distinct items, newest first;
* **co-visitation**: neighbours of the user's last items (``streamrec.features.covisit``);
* **model**: the user tower's retrieval over the catalog (exploration);
* **popularity**: the decayed most popular items (for users with little else).

Every candidate gets the same feature row, whichever source found it (``FEATURES``). The learned
scorer (``encoders.ranker``) is trained on these rows by ``streamrec train``; without a model
``heuristic_scores`` ranks them (recent, then co-visitation, then popularity). Plain Python and
numpy: the worker, replay and the offline evaluation all call ``build_candidates``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from streamrec.features.covisit import CoVisitation, Visit

FEATURES: tuple[str, ...] = (
    "model_score",  # user vector · item vector (0 without a model)
    "model_rank",  # log1p(rank in the model's retrieval), or past its end
    "in_history",  # the user touched it within the kept sequence
    "recency_rank",  # log1p(distinct items touched since), or past the end
    "age",  # log1p(seconds since the user last touched it) / 10, or past 30 days
    "n_browse",  # log1p(the user's events on it) per type
    "n_click",
    "n_purchase",
    "last_type",  # type code + 1 of the user's last event on it (0: none)
    "covisit",  # co-visitation score with the user's last items (0: none)
    "covisit_rank",  # log1p(rank among the user's co-visitation neighbours), or past the end
    "popularity",  # decayed popularity, log2 relative to the most popular item / 20, or -1
)
N_FEATURES = len(FEATURES)
F = {name: i for i, name in enumerate(FEATURES)}
AGE_NONE = math.log1p(30 * 86400.0) / 10 + 0.1
SOURCE_BITS = {"recent": 1, "covisit": 2, "model": 4, "popular": 8}
# what the user's history says of one item: (recency rank among distinct items, last ts, events
# per type, last type code)
HistoryStat = tuple[int, float, list[int], int]

_M_RANK, _IN_HIST, _REC_RANK, _AGE = F["model_rank"], F["in_history"], F["recency_rank"], F["age"]
_N_BROWSE, _N_CLICK, _N_PURCHASE, _LAST_TYPE = (
    F["n_browse"], F["n_click"], F["n_purchase"], F["last_type"]
)  # fmt: skip
_COVISIT, _CV_RANK, _POP = F["covisit"], F["covisit_rank"], F["popularity"]


@dataclass(frozen=True, slots=True)
class CandidateConfig:
    recent: int = 30  # distinct recent items taken as candidates
    covisit: int = 50  # co-visitation neighbours taken
    model: int = 50  # retrieved by the model
    popular: int = 20  # most popular items taken
    exclude_purchased: bool = True  # never list an item the user bought (recs.exclude_purchased)


@dataclass(frozen=True, slots=True)
class UserContext:
    """What the candidate step needs about one user at one moment."""

    history: Sequence[Visit]  # the kept sequence, oldest first (item, type code, ts)
    purchased: frozenset[str]
    now: float  # event time of the list (the user's newest event)
    excluded: frozenset[str] = frozenset()  # never listed (e.g. the whole history on ML-1M)


@dataclass
class CandidateBatch:
    """Candidates of a batch of users, flat: user b owns rows offsets[b]:offsets[b + 1]."""

    item_ids: list[str] = field(default_factory=list)
    users: list[int] = field(default_factory=list)  # owning user of each row
    offsets: list[int] = field(default_factory=lambda: [0])
    sources: list[int] = field(default_factory=list)  # SOURCE_BITS or-ed
    features: np.ndarray = field(default_factory=lambda: np.zeros((0, N_FEATURES), np.float32))

    def __len__(self) -> int:
        return len(self.item_ids)

    @property
    def n_users(self) -> int:
        return len(self.offsets) - 1

    def set_model_scores(
        self, user_vectors: torch.Tensor, item_vectors: torch.Tensor, rows: Sequence[int]
    ) -> None:
        """The exact model score of every candidate, whichever source found it: its user's
        vector · row ``rows[i]`` of ``item_vectors`` (-1: no vector, score 0)."""
        if not len(self):
            return
        r = torch.tensor(rows, dtype=torch.long)
        known = r >= 0
        users = torch.tensor(self.users)
        scores = torch.zeros(len(self))
        scores[known] = (user_vectors[users[known]] * item_vectors[r[known]]).sum(-1)
        self.features[:, F["model_score"]] = scores.numpy()

    def top(self, scores: np.ndarray, k: int) -> list[list[tuple[str, float]]]:
        """Each user's ``k`` best candidates under ``scores`` (one per row), best first."""
        return [
            [(self.item_ids[r], float(scores[r])) for r in rows]
            for rows in self.top_rows(scores, k)
        ]

    def top_rows(self, scores: np.ndarray, k: int) -> list[list[int]]:
        """The rows of each user's ``k`` best candidates, best first; ties keep the order the
        sources added them in (repeat, co-visitation, model, popularity)."""
        out = []
        for b in range(self.n_users):
            lo, hi = self.offsets[b], self.offsets[b + 1]
            order = np.argsort(-scores[lo:hi], kind="stable")[:k]
            out.append([lo + int(i) for i in order])
        return out


def absent_row(cfg: CandidateConfig) -> np.ndarray:
    """The feature row of an item no source knows anything about: what each feature holds
    without its signal (explanations occlude feature groups with it)."""
    row = _base_row("", {}, 0.0, {}, 0.0, _sentinels(cfg))
    return np.asarray(row, dtype=np.float32)


def _sentinels(cfg: CandidateConfig) -> tuple[float, float, float]:
    # past the end of the model's, the recent items' and the co-visitation ranks
    return math.log1p(cfg.model + 1), math.log1p(cfg.recent + 1), math.log1p(cfg.covisit + 1)


def build_candidates(
    contexts: Sequence[UserContext],
    cfg: CandidateConfig,
    covisit: CoVisitation | None,
    popular: Sequence[tuple[str, float]],
    model_lists: Sequence[Sequence[tuple[str, float]]] | None = None,
    listable: Callable[[str], bool] | None = None,
    stats: Sequence[Mapping[str, HistoryStat]] | None = None,
) -> CandidateBatch:
    """Candidates and their features for each user. ``popular`` is the shared popularity head
    as (item, log2 score), best first; ``model_lists`` the model's retrieval per user (best
    first), or None without a model; ``listable`` says whether an item may be listed at all
    (available in the catalog); ``stats`` each user's ``history_stats`` when the caller has
    them (the reasons read them too). Model scores are set afterwards (``set_model_scores``)
    for every row, from whichever source it came.

    This runs for every list served, so the Python loop only collects each user's items and
    where each source's values go; the feature matrix is then filled column by column in numpy
    (``reference_candidates`` is the same thing row by row, and a test holds them equal)."""
    batch = CandidateBatch()
    ids, users, sources = batch.item_ids, batch.users, batch.sources
    bit_recent, bit_covisit = SOURCE_BITS["recent"], SOURCE_BITS["covisit"]
    bit_model, bit_popular = SOURCE_BITS["model"], SOURCE_BITS["popular"]
    pop_score = {i: s for i, s in popular}
    head = [item for item, _ in popular[: cfg.popular]]
    # where each value goes: (row, value) per feature that a source or the history sets
    hist_rows: list[int] = []
    hist_rank: list[int] = []
    hist_age: list[float] = []
    hist_counts: list[list[int]] = []
    hist_code: list[int] = []
    pop_rows: list[int] = []
    pop_vals: list[float] = []
    cv_rows: list[int] = []
    cv_vals: list[float] = []
    cv_ranks: list[int] = []
    m_rows: list[int] = []
    m_ranks: list[int] = []
    for b, ctx in enumerate(contexts):
        hist = history_stats(ctx.history) if stats is None else stats[b]
        recent = list(hist)  # the stats are keyed newest first: the recent items
        banned = ctx.excluded | (ctx.purchased if cfg.exclude_purchased else frozenset())
        chosen: dict[str, int] = {}
        now = ctx.now

        def add(item: str, bit: int) -> int:
            """The item's row (new or already there), or -1 when it may not be listed."""
            at = chosen.get(item)  # noqa: B023 (called within this user's iteration only)
            if at is not None:
                sources[at] |= bit
                return at
            if item in banned or (listable is not None and not listable(item)):  # noqa: B023
                return -1
            at = chosen[item] = len(ids)  # noqa: B023
            ids.append(item)
            users.append(b)  # noqa: B023
            sources.append(bit)
            st = hist.get(item)  # noqa: B023
            if st is not None:
                rank, ts, counts, code = st
                hist_rows.append(at)
                hist_rank.append(rank)
                hist_age.append(now - ts)  # noqa: B023
                hist_counts.append(counts)
                hist_code.append(code)
            pop = pop_score.get(item)
            if pop is not None:
                pop_rows.append(at)
                pop_vals.append(pop)
            return at

        for item in recent[: cfg.recent]:
            add(item, bit_recent)
        if covisit is not None:
            neighbours = covisit.for_user(recent, cfg.covisit)
            ranked = sorted(neighbours.items(), key=lambda kv: -kv[1])
            for rank, (item, score) in enumerate(ranked):
                at = add(item, bit_covisit)
                if at >= 0:
                    cv_rows.append(at)
                    cv_vals.append(score)
                    cv_ranks.append(rank)
        if model_lists is not None:
            for rank, (item, _) in enumerate(model_lists[b][: cfg.model]):
                at = add(item, bit_model)
                if at >= 0:
                    m_rows.append(at)
                    m_ranks.append(rank)
        for item in head:
            add(item, bit_popular)
        batch.offsets.append(len(ids))
    if not ids:
        return batch
    none_recent = _sentinels(cfg)[1]
    f = np.empty((len(ids), N_FEATURES), dtype=np.float64)
    f[:] = _absent_values(cfg)
    if pop_rows:
        pop_top = popular[0][1]
        f[pop_rows, _POP] = np.maximum(-20.0, np.asarray(pop_vals) - pop_top) / 20.0
    if hist_rows:
        counts = np.log1p(np.asarray(hist_counts, dtype=np.float64))
        f[hist_rows, _IN_HIST] = 1.0
        f[hist_rows, _REC_RANK] = np.minimum(np.log1p(np.asarray(hist_rank, float)), none_recent)
        f[hist_rows, _AGE] = np.log1p(np.maximum(0.0, np.asarray(hist_age))) / 10
        f[hist_rows, _N_BROWSE] = counts[:, 0]
        f[hist_rows, _N_CLICK] = counts[:, 1]
        f[hist_rows, _N_PURCHASE] = counts[:, 2]
        f[hist_rows, _LAST_TYPE] = np.asarray(hist_code, dtype=np.float64) + 1.0
    if cv_rows:
        f[cv_rows, _COVISIT] = cv_vals
        f[cv_rows, _CV_RANK] = np.log1p(np.asarray(cv_ranks, dtype=np.float64))
    if m_rows:
        f[m_rows, _M_RANK] = np.log1p(np.asarray(m_ranks, dtype=np.float64))
    batch.features = f.astype(np.float32)
    return batch


def _absent_values(cfg: CandidateConfig) -> list[float]:
    return _base_row("", {}, 0.0, {}, 0.0, _sentinels(cfg))


def reference_candidates(
    contexts: Sequence[UserContext],
    cfg: CandidateConfig,
    covisit: CoVisitation | None,
    popular: Sequence[tuple[str, float]],
    model_lists: Sequence[Sequence[tuple[str, float]]] | None = None,
    listable: Callable[[str], bool] | None = None,
    stats: Sequence[Mapping[str, HistoryStat]] | None = None,
) -> CandidateBatch:
    """``build_candidates`` one feature row at a time: the readable form, kept to test the
    vectorised one against."""
    batch = CandidateBatch()
    rows: list[list[float]] = []
    pop_top = popular[0][1] if popular else 0.0
    pop_score = {i: s for i, s in popular}
    sentinels = _sentinels(cfg)
    for b, ctx in enumerate(contexts):
        hist = history_stats(ctx.history) if stats is None else stats[b]
        recent = list(hist)  # the stats are keyed newest first: the recent items
        block = _UserBlock(batch, rows, b, ctx, cfg, listable, hist, pop_score, pop_top)
        for item in recent[: cfg.recent]:
            block.add(item, "recent", sentinels)
        if covisit is not None:
            neighbours = covisit.for_user(recent, cfg.covisit)
            ranked = sorted(neighbours.items(), key=lambda kv: -kv[1])
            for rank, (item, score) in enumerate(ranked):
                row = block.add(item, "covisit", sentinels)
                if row is not None:
                    row[F["covisit"]] = score
                    row[F["covisit_rank"]] = math.log1p(rank)
        if model_lists is not None:
            for rank, (item, _) in enumerate(model_lists[b][: cfg.model]):
                row = block.add(item, "model", sentinels)
                if row is not None:
                    row[F["model_rank"]] = math.log1p(rank)
        for item, _ in popular[: cfg.popular]:
            block.add(item, "popular", sentinels)
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
        stats: Mapping[str, HistoryStat],
        pop_score: Mapping[str, float],
        pop_top: float,
    ) -> None:
        self.batch, self.rows, self.user, self.now = batch, rows, user, ctx.now
        self.stats, self.pop_score, self.pop_top = stats, pop_score, pop_top
        self.start = len(batch.item_ids)
        self.chosen: dict[str, int] = {}
        self.banned = ctx.excluded | (ctx.purchased if cfg.exclude_purchased else frozenset())
        self.listable = listable

    def add(
        self, item: str, source: str, sentinels: tuple[float, float, float]
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
        row = _base_row(item, self.stats, self.now, self.pop_score, self.pop_top, sentinels)
        self.rows.append(row)
        return row


def history_stats(history: Sequence[Visit]) -> dict[str, HistoryStat]:
    """item -> (recency rank among distinct items, last ts, events per type, last type), keyed
    in recency order (the most recently touched item first)."""
    # One pass from the newest event back (this runs for every list served): an item's first
    # sighting is its newest event, and its counts list is filled in as older events come.
    out: dict[str, HistoryStat] = {}
    counts: dict[str, list[int]] = {}
    for item, code, ts in reversed(history):
        c = counts.get(item)
        if c is None:
            c = counts[item] = [0, 0, 0]
            out[item] = (len(out), ts, c, code)
        c[code] += 1
    return out


def _base_row(
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


def heuristic_scores(batch: CandidateBatch) -> np.ndarray:
    """The list without a model: the user's recent items, newest first, then co-visitation
    neighbours of their last items, then popularity (each source only after the one before)."""
    f = batch.features
    if not len(f):
        return np.zeros(0, np.float32)
    seen = f[:, F["in_history"]]
    repeat = seen * (4.0 - f[:, F["recency_rank"]] / (f[:, F["recency_rank"]].max() + 1.0))
    covisit = (1.0 - seen) * np.minimum(f[:, F["covisit"]], 1.9) / 2.0
    popular = np.clip(f[:, F["popularity"]], -1.0, 0.0) * 0.01
    return (repeat + covisit + popular).astype(np.float32)


def source_scores(batch: CandidateBatch, source: str) -> np.ndarray:
    """One source on its own (the baseline rows of an evaluation): its candidates in its own
    order, the others never listed."""
    f = batch.features
    bits = np.asarray(batch.sources, dtype=np.int64) & SOURCE_BITS[source]
    if source == "recent":
        s = -f[:, F["recency_rank"]]
    elif source == "covisit":
        s = f[:, F["covisit"]]
    elif source == "model":
        s = -f[:, F["model_rank"]]
    else:
        s = f[:, F["popularity"]]
    return np.where(bits > 0, s, -np.inf).astype(np.float32)
