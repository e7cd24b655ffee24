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
from collections.abc import Callable, Sequence
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
        """Each user's ``k`` best candidates under ``scores`` (one per row), best first; ties
        keep the order the sources added them in (repeat, co-visitation, model, popularity)."""
        out = []
        for b in range(self.n_users):
            lo, hi = self.offsets[b], self.offsets[b + 1]
            s = scores[lo:hi]
            order = np.argsort(-s, kind="stable")[:k]
            out.append([(self.item_ids[lo + i], float(s[i])) for i in order])
        return out


def build_candidates(
    contexts: Sequence[UserContext],
    cfg: CandidateConfig,
    covisit: CoVisitation | None,
    popular: Sequence[tuple[str, float]],
    model_lists: Sequence[Sequence[tuple[str, float]]] | None = None,
    listable: Callable[[str], bool] | None = None,
) -> CandidateBatch:
    """Candidates and their features for each user. ``popular`` is the shared popularity head
    as (item, log2 score), best first; ``model_lists`` the model's retrieval per user (best
    first), or None without a model; ``listable`` says whether an item may be listed at all
    (available in the catalog). Model scores are set afterwards (``set_model_scores``) for
    every row, from whichever source it came.

    The serving hot path (a list every event): per user only dict operations pick the items,
    and the feature matrix of the whole batch is filled by column in numpy. The row-by-row
    reference (``streamrec.recommend.candidates_reference``) is what it must equal."""
    batch = CandidateBatch()
    n_recent, n_covisit, n_model = cfg.recent, cfg.covisit, cfg.model
    popular_items = [i for i, _ in popular[: cfg.popular]]
    pop_get = {i: s for i, s in popular}.get
    nan = math.nan
    items, sources, users = batch.item_ids, batch.sources, batch.users
    # per row: (recency rank in its user's history, rank in the model's retrieval, rank among
    # the co-visitation neighbours, co-visitation score, popularity); -1 / 0 / nan: none
    per_row: list[tuple[int, int, int, float, float]] = []
    # per distinct history item of each user, in recency order (rows' hist_rank points here)
    h_ts: list[float] = []
    h_counts: list[list[int]] = []
    h_code: list[int] = []
    h_base: list[int] = []  # per user: where its history items start in h_*
    nows: list[float] = []
    for b, ctx in enumerate(contexts):
        order, rank_of, ts, counts, codes = _history_index(ctx.history)
        h_base.append(len(h_ts))
        h_ts += ts
        h_counts += counts
        h_code += codes
        nows.append(ctx.now)
        bits = dict.fromkeys(order[:n_recent], 1)
        cvs: dict[str, float] = {}
        cvr: dict[str, int] = {}
        if covisit is not None:
            neighbours = covisit.for_user(order, n_covisit)
            for rank, (item, score) in enumerate(sorted(neighbours.items(), key=_minus_weight)):
                bits[item] = bits.get(item, 0) | 2
                cvs[item] = score
                cvr[item] = rank
        mr: dict[str, int] = {}
        if model_lists is not None:
            for rank, (item, _) in enumerate(model_lists[b][:n_model]):
                bits[item] = bits.get(item, 0) | 4
                mr[item] = rank
        for item in popular_items:
            bits[item] = bits.get(item, 0) | 8
        banned = ctx.excluded | (ctx.purchased if cfg.exclude_purchased else frozenset())
        if banned:
            for item in banned if len(banned) < len(bits) else [i for i in bits if i in banned]:
                bits.pop(item, None)
        if listable is not None:
            for item in [i for i in bits if not listable(i)]:
                del bits[item]
        mine = list(bits)
        items += mine
        sources += bits.values()
        users += [b] * len(mine)
        hist, model, cv_r, cv_s = rank_of.get, mr.get, cvr.get, cvs.get
        per_row += [
            (hist(i, -1), model(i, -1), cv_r(i, -1), cv_s(i, 0.0), pop_get(i, nan)) for i in mine
        ]
        batch.offsets.append(len(items))
    if items:
        batch.features = _feature_matrix(
            cfg, popular, users, per_row,
            (h_ts, h_counts, h_code, h_base), nows,
        )  # fmt: skip
    return batch


def _minus_weight(kv: tuple[str, float]) -> float:
    return -kv[1]


def _history_index(
    history: Sequence[Visit],
) -> tuple[list[str], dict[str, int], list[float], list[list[int]], list[int]]:
    """The user's distinct items newest first, each one's rank in that order, and per rank the
    time and type of its newest event and its events per type."""
    newest: dict[str, int] = {}  # item -> index of its newest event
    counts: dict[str, list[int]] = {}
    for i, (item, code, _) in enumerate(history):
        newest[item] = i
        c = counts.get(item)
        if c is None:
            c = counts[item] = [0, 0, 0]
        c[code] += 1
    order = sorted(newest, key=newest.__getitem__, reverse=True)
    last = [history[newest[item]] for item in order]
    return (
        order,
        {item: r for r, item in enumerate(order)},
        [e[2] for e in last],
        [counts[item] for item in order],
        [e[1] for e in last],
    )


def _feature_matrix(
    cfg: CandidateConfig,
    popular: Sequence[tuple[str, float]],
    users: list[int],
    per_row: list[tuple[int, int, int, float, float]],
    history: tuple[list[float], list[list[int]], list[int], list[int]],
    nows: list[float],
) -> np.ndarray:
    """``FEATURES`` of every row, by column; the arithmetic of the reference's rows, in float64
    before the one cast to float32."""
    h_ts, h_counts, h_code, h_base = history
    none_model, none_recent, none_covisit = rank_sentinels(cfg)
    x = np.zeros((len(users), N_FEATURES), np.float64)
    cols = np.asarray(per_row, np.float64)
    mr, cr, pop = cols[:, 1], cols[:, 2], cols[:, 4]
    x[:, F["model_rank"]] = np.where(mr >= 0, np.log1p(np.maximum(mr, 0)), none_model)
    x[:, F["covisit"]] = cols[:, 3]
    x[:, F["covisit_rank"]] = np.where(cr >= 0, np.log1p(np.maximum(cr, 0)), none_covisit)
    pop_top = popular[0][1] if popular else 0.0
    known = ~np.isnan(pop)
    x[:, F["popularity"]] = -1.0
    x[known, F["popularity"]] = np.maximum(-20.0, pop[known] - pop_top) / 20.0
    hr = cols[:, 0].astype(np.int64)
    seen = hr >= 0
    x[:, F["recency_rank"]] = none_recent
    x[:, F["age"]] = AGE_NONE
    if seen.any():
        u = np.asarray(users, np.int64)[seen]
        g = np.asarray(h_base, np.int64)[u] + hr[seen]
        ts = np.asarray(h_ts, np.float64)[g]
        now = np.asarray(nows, np.float64)[u]
        counts = np.asarray(h_counts, np.float64).reshape(-1, 3)[g]
        x[seen, F["in_history"]] = 1.0
        x[seen, F["recency_rank"]] = np.minimum(np.log1p(hr[seen]), none_recent)
        x[seen, F["age"]] = np.log1p(np.maximum(0.0, now - ts)) / 10
        x[seen, F["n_browse"]] = np.log1p(counts[:, 0])
        x[seen, F["n_click"]] = np.log1p(counts[:, 1])
        x[seen, F["n_purchase"]] = np.log1p(counts[:, 2])
        x[seen, F["last_type"]] = np.asarray(h_code, np.float64)[g] + 1.0
    return x.astype(np.float32)


def rank_sentinels(cfg: CandidateConfig) -> tuple[float, float, float]:
    """Feature values past the end of the model's, the recent and the co-visitation ranks."""
    return math.log1p(cfg.model + 1), math.log1p(cfg.recent + 1), math.log1p(cfg.covisit + 1)


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
