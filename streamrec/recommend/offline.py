"""The list-building path of the worker, run offline on a split: candidates for held-out cases,
from state built on the training events alone, with the same code the worker calls.

Used to train the ranker (on validation cases) and to evaluate every list source side by side
(recent items, co-visitation, popularity, the model's retrieval, the ranked blend) under the
leave-one-out protocol, by item id: what the list would have shown.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from encoders.checkpoint import TrainedModel
from encoders.evaluate import encode_history, user_vectors
from encoders.ranker import Ranker, RankerTrainConfig, fit_ranker
from streamrec.features.covisit import CoVisitation, CoVisitConfig, Visit
from streamrec.features.popularity import DecayedPopularity
from streamrec.recommend.candidates import (
    FEATURES,
    CandidateBatch,
    CandidateConfig,
    UserContext,
    build_candidates,
    heuristic_scores,
)
from streamrec.recommend.explain import Evidence, explain, ranked_kinds, tier_kinds
from streamrec.settings import Settings

Case = tuple[Sequence[Visit], Visit]  # (history, the event that came next)
PURCHASE = 2
BLOCK = 1024  # users per candidate block: bounds the [B, N] score matrix


@dataclass(frozen=True)
class ListProtocol:
    """How lists are built: the worker's candidate and co-visitation settings, and how much it
    keeps per user. Every offline list (baselines, ranker training, evaluation) follows it."""

    candidates: CandidateConfig = field(default_factory=CandidateConfig)
    covisit: CoVisitConfig = field(default_factory=CoVisitConfig)
    history_max: int = 100  # features.sequence_max
    purchased_max: int = 50  # features.purchased_max
    popularity_half_life_s: float = 3600.0

    def describe(self) -> str:
        return "purchased items " + ("excluded" if self.candidates.exclude_purchased else "kept")

    @classmethod
    def from_settings(cls, settings: Settings) -> ListProtocol:
        from streamrec.recommend.engine import candidate_config, covisit_config

        return cls(
            candidate_config(settings),
            covisit_config(settings),
            settings.features.sequence_max,
            settings.features.purchased_max,
            settings.features.popularity_half_life_s,
        )


def as_cases(cases: Mapping[str, tuple[Sequence[Visit], Visit]]) -> list[Case]:
    """A split's per-user (history, next event), in user order; empty histories dropped."""
    return [(h, t) for _, (h, t) in sorted(cases.items()) if h]


@dataclass
class ListState:
    """Item-side state as a worker would hold it after the training events."""

    covisit: CoVisitation
    popularity: DecayedPopularity

    @classmethod
    def from_sequences(
        cls, sequences: Mapping[str, Sequence[Visit]], protocol: ListProtocol | None = None
    ) -> ListState:
        protocol = protocol or ListProtocol()
        cv = CoVisitation(protocol.covisit)
        pop = DecayedPopularity(protocol.popularity_half_life_s)
        for seq in sequences.values():
            cv.observe_sequence(seq)
            for item, code, ts in seq:
                pop.add(item, code, ts)
        return cls(cv, pop)


def context_for(
    history: Sequence[Visit], history_max: int, purchased_max: int, exclude_history: bool
) -> UserContext:
    """The state a worker keeps for this history: the last ``history_max`` events and the last
    ``purchased_max`` purchases (streamrec.features.user_state)."""
    kept = list(history[-history_max:])
    bought: list[str] = []
    for item, code, _ in history:
        if code == PURCHASE:
            if item in bought:
                bought.remove(item)
            bought.append(item)
    excluded = frozenset(i for i, _, _ in history) if exclude_history else frozenset()
    return UserContext(
        kept, frozenset(bought[-purchased_max:]), kept[-1][2] if kept else 0.0, excluded
    )


def candidates_for(
    cases: Sequence[Case],
    state: ListState,
    protocol: ListProtocol,
    trained: TrainedModel | None,
    exclude_history: bool = False,
) -> list[tuple[CandidateBatch, list[int]]]:
    """Candidate blocks for ``cases`` with model scores filled in, and per case the row (in its
    block) of the next item, or -1 when no source found it."""
    cfg = protocol.candidates
    history_max, purchased_max = protocol.history_max, protocol.purchased_max
    out = []
    item_vecs = trained.vocab_item_vectors() if trained is not None else None
    for s in range(0, len(cases), BLOCK):
        part = cases[s : s + BLOCK]
        contexts = [context_for(h, history_max, purchased_max, exclude_history) for h, _ in part]
        model_lists = None
        vecs = None
        if trained is not None and item_vecs is not None:
            row_of = trained.row_of
            hist = [encode_history(list(h), row_of) for h, _ in part]
            vecs = user_vectors(trained.model, item_vecs, hist)
            model_lists = _retrieve(trained, vecs, item_vecs, contexts, cfg)
        pop = state.popularity.top(max(cfg.popular, 1))
        batch = build_candidates(contexts, cfg, state.covisit, pop, model_lists)
        if trained is not None and vecs is not None and item_vecs is not None:
            # outside the vocabulary an item is the unknown row (0), as the model ranks it
            rows = [trained.row_of.get(i, 0) for i in batch.item_ids]
            batch.set_model_scores(vecs, item_vecs, rows)
        labels = []
        for b, (_, target) in enumerate(part):
            lo, hi = batch.offsets[b], batch.offsets[b + 1]
            try:
                labels.append(lo + batch.item_ids[lo:hi].index(target[0]))
            except ValueError:
                labels.append(-1)
        out.append((batch, labels))
    return out


def _retrieve(
    trained: TrainedModel,
    vecs: torch.Tensor,
    item_vecs: torch.Tensor,
    contexts: Sequence[UserContext],
    cfg: CandidateConfig,
) -> list[list[tuple[str, float]]]:
    scores = vecs @ item_vecs.T
    scores[:, 0] = float("-inf")  # the unknown row is no item
    row_of = trained.row_of
    for b, ctx in enumerate(contexts):
        banned = ctx.excluded | (ctx.purchased if cfg.exclude_purchased else frozenset())
        cols = [row_of[i] for i in banned if i in row_of]
        if cols:
            scores[b, cols] = float("-inf")
    top = torch.topk(scores, min(cfg.model, scores.shape[1] - 1), dim=1)
    ids = trained.item_ids
    return [
        [
            (ids[r - 1], v)
            for v, r in zip(vals.tolist(), rows.tolist(), strict=True)
            if v > float("-inf")  # the unknown row and excluded items, when k reaches them
        ]
        for vals, rows in zip(top.values, top.indices, strict=True)
    ]


def ranks_of(
    blocks: Sequence[tuple[CandidateBatch, list[int]]],
    score_fn: Callable[[CandidateBatch], np.ndarray],
) -> np.ndarray:
    """0-based rank of each case's next item in its list under ``score_fn(batch) -> scores``;
    a next item that is no candidate, or scored -inf (not listed), is a miss (a huge rank).
    Ties rank the target below every equal-scored candidate (pessimistic)."""
    out = []
    for batch, labels in blocks:
        scores = np.asarray(score_fn(batch), dtype=np.float64)
        for b, lab in enumerate(labels):
            if lab < 0 or not np.isfinite(scores[lab]):
                out.append(1 << 30)
                continue
            lo, hi = batch.offsets[b], batch.offsets[b + 1]
            s = scores[lo:hi]
            t = scores[lab]
            out.append(int((s > t).sum() + (s == t).sum() - 1))
    return np.asarray(out, dtype=np.int64)


def served_scores(trained: TrainedModel | None) -> Callable[[CandidateBatch], np.ndarray]:
    """How the worker scores candidates with this checkpoint: its ranker, else the heuristic."""
    ranker = trained.ranker if trained is not None else None
    if ranker is None:
        return heuristic_scores
    return lambda batch: ranker.score(batch.features)


@dataclass(frozen=True)
class ExplainedList:
    """One case's served list: (item, score) best first, and each item's ``why``."""

    items: list[tuple[str, float]]
    why: list[dict[str, Any]]


def explained_lists(
    cases: Sequence[Case],
    state: ListState,
    protocol: ListProtocol,
    trained: TrainedModel | None,
    k: int,
    exclude_history: bool = False,
) -> list[ExplainedList]:
    """The list the worker would serve for each case, with its reasons, by the worker's code:
    the same candidates, scorer, kinds and texts (``streamrec.recommend.explain``)."""
    blocks = candidates_for(cases, state, protocol, trained, exclude_history)
    score = served_scores(trained)
    ranker = trained.ranker if trained is not None else None
    evidence = Evidence(
        covisit=state.covisit,
        vectors=trained.vocab_item_vectors() if trained is not None else None,
        row_of=trained.row_of if trained is not None else None,
    )
    out: list[ExplainedList] = []
    for s, (batch, _) in zip(range(0, len(cases), BLOCK), blocks, strict=True):
        part = cases[s : s + BLOCK]
        contexts = [
            context_for(h, protocol.history_max, protocol.purchased_max, exclude_history)
            for h, _ in part
        ]
        scores = score(batch)
        picked = batch.top_rows(scores, k)
        if ranker is not None:
            kinds = ranked_kinds(batch, picked, ranker.score, protocol.candidates)
        else:
            kinds = tier_kinds(batch, picked)
        ids = [[batch.item_ids[r] for r in rows] for rows in picked]
        whys = explain(contexts, ids, kinds, evidence, protocol.covisit.user_items)
        for rows, why in zip(picked, whys, strict=True):
            items = [(batch.item_ids[r], float(scores[r])) for r in rows]
            out.append(ExplainedList(items, why))
    return out


def fit_ranker_on(
    trained: TrainedModel,
    cases: Sequence[Case],
    state: ListState,
    protocol: ListProtocol,
    exclude_history: bool,
    seed: int = 0,
) -> tuple[Ranker, dict[str, Any]]:
    """The ranker for ``trained``, fit on ``cases``: events the encoder did not train on (its
    model-score feature would be optimistic on the others)."""
    blocks = candidates_for(cases, state, protocol, trained, exclude_history)
    features, offsets, labels = flatten_blocks(blocks)
    return fit_ranker(features, offsets, labels, FEATURES, RankerTrainConfig(seed=seed))


def flatten_blocks(
    blocks: Sequence[tuple[CandidateBatch, list[int]]],
) -> tuple[np.ndarray, list[int], list[int]]:
    """``candidates_for``'s blocks as one case list, as ``fit_ranker`` takes them: all feature
    rows, each case's first row (and the end), each case's label row (-1: no candidate)."""
    features = np.concatenate([b.features for b, _ in blocks])
    offsets: list[int] = [0]
    labels: list[int] = []
    base = 0
    for batch, labs in blocks:
        offsets.extend(base + o for o in batch.offsets[1:])
        labels.extend(base + lab if lab >= 0 else -1 for lab in labs)
        base += len(batch)
    return features, offsets, labels
