"""From an updated user state to a published top-K list: the model work of every path.

The worker, replay-driven evaluation and the offline reference all call ``Recommender``; only
how events arrive differs. Work is batched across users: one encoder step and one top-K for all
events of a micro-batch.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from encoders.checkpoint import TrainedModel
from encoders.incremental import CACHE_DTYPES, IncrementalEncoder, StepRequest
from streamrec.events.schema import Event, Item
from streamrec.features.covisit import CoVisitation, CoVisitConfig
from streamrec.features.popularity import DecayedPopularity
from streamrec.features.user_state import RecentEvents, UserState, event_id_hash
from streamrec.recommend.candidates import (
    CandidateBatch,
    CandidateConfig,
    HistoryStat,
    UserContext,
    build_candidates,
    heuristic_scores,
    history_stats,
    source_scores,
)
from streamrec.recommend.catalog import Catalog, CatalogSnapshot
from streamrec.recommend.diversity import mmr_scores
from streamrec.recommend.explain import (
    COVISIT,
    POPULAR,
    REPEAT,
    SIMILAR,
    Evidence,
    explain,
    ranked_kinds,
    tier_kinds,
)
from streamrec.retrieve.graph_store import GraphStore
from streamrec.retrieve.hnsw import HnswParams
from streamrec.retrieve.retriever import RetrievalConfig
from streamrec.settings import Settings

log = logging.getLogger(__name__)
SCHEMA_VERSION = 1
# Additive revisions within schema 1 (docs/events.md#versioning): 1 added each item's "why".
SCHEMA_MINOR = 1
POPULARITY_VERSION = "popularity"
# What a list came from (its "source" field): the model's candidates ranked with the other
# sources, or, without a model, the heuristic blend or one simple source alone.
MODEL, HEURISTIC, POPULARITY = "model", "heuristic", "popularity"
SINGLE_SOURCES = ("recent", "covisit")
# A list before its reasons: per user, (item, score) best first and each item's reason kind.
Ranked = tuple[list[list[tuple[str, float]]], list[list[str]]]


@dataclass(frozen=True, slots=True)
class Job:
    """What the model needs about one accepted event (a snapshot: the state object may change)."""

    event: Event
    position: int  # index of this event in the user's whole history
    recent: RecentEvents  # the user's last context_events events, in event time
    purchased: frozenset[str]
    # Where this event went in the user's history: before ``position`` when it was read after a
    # later-stamped event of another type (then cached encoder state past it is stale).
    inserted_at: int
    # Retention dropped some of the user's kept events with this one (UserState.expire): cached
    # encoder state still attends to them, so the user is rebuilt from what is kept.
    expired: bool = False

    @property
    def reordered(self) -> bool:
        return self.inserted_at < self.position


def candidate_config(settings: Settings) -> CandidateConfig:
    r = settings.recs
    return CandidateConfig(
        recent=r.candidates_recent,
        covisit=r.candidates_covisit,
        model=r.candidates_model,
        popular=r.candidates_popular,
        exclude_purchased=r.exclude_purchased,
    )


def covisit_config(settings: Settings) -> CoVisitConfig:
    return CoVisitConfig(**dataclasses.asdict(settings.covisit))


def retrieval_config(settings: Settings) -> RetrievalConfig:
    r = settings.retrieval
    return RetrievalConfig(
        method=r.method,
        ann_min_items=r.ann_min_items,
        rebuild_fraction=r.rebuild_fraction,
        k=settings.recs.k,
        max_unlisted_items=r.max_unlisted_items,
        hnsw=HnswParams(
            m=r.hnsw_m,
            ef_construction=r.hnsw_ef_construction,
            ef_search=r.hnsw_ef_search,
            threads=max(1, settings.model.threads),
            target_recall=r.target_recall,
        ),
    )


class Recommender:
    def __init__(
        self,
        settings: Settings,
        model: TrainedModel | None = None,
        graph_store: GraphStore | None = None,
    ) -> None:
        self.settings = settings
        self.k = settings.recs.k
        self.source = settings.recs.source
        self.explains = settings.recs.explain
        self.diversity = settings.recs.diversity
        self.candidates = candidate_config(settings)
        self.popularity = DecayedPopularity(
            settings.features.popularity_half_life_s,
            max_items=settings.features.popularity_max_items,
        )
        self.covisit = CoVisitation(covisit_config(settings))
        self.catalog = Catalog(model, retrieval=retrieval_config(settings), graph_store=graph_store)
        self.model: TrainedModel | None = None
        self.encoder: IncrementalEncoder | None = None
        self.set_model(model)

    # -- model and catalog -----------------------------------------------------------------------

    @property
    def model_version(self) -> str:
        return self.model.model_version if self.model is not None else POPULARITY_VERSION

    @property
    def serves_model(self) -> bool:
        return self.encoder is not None and self.source == "auto"

    def set_model(
        self,
        model: TrainedModel | None,
        prepared: tuple[CatalogSnapshot, torch.Tensor | None] | None = None,
    ) -> None:
        """Serve a new model from the next batch on (caches are dropped: they belong to the old
        one). ``prepared``: the catalog's vectors under it, embedded from a snapshot off the
        event loop (``Catalog.snapshot``, ``catalog.embed``); rows changed since are redone here."""
        self.model = model
        if prepared is None:
            self.catalog.set_model(model)
        else:
            self.catalog.install_model(model, *prepared)
        if model is None:
            self.encoder = None
            return
        context = model.config.context_events
        if self.settings.features.sequence_max < context + 1:
            log.warning(
                "features.sequence_max=%d < model context %d + 1: users with longer histories are "
                "rebuilt from a truncated sequence after a cache miss",
                self.settings.features.sequence_max,
                context,
            )
        m = self.settings.model
        self.encoder = IncrementalEncoder(
            model.model, m.cache_mb * 2**20, CACHE_DTYPES[m.cache_dtype]
        )
        self.encoder.set_item_vectors(self.catalog.index.matrix)

    def upsert_items(self, items: Sequence[Item]) -> None:
        changed = self.catalog.upsert_many(items)
        if changed and self.encoder is not None:
            # Cached K/V were computed from the old vectors; a rebuild uses the new ones. Drop the
            # cache so every user's state is again exactly a function of their history.
            self.encoder.clear()
        self._refresh_item_vectors()

    def forget(self, user_id: str) -> None:
        """Drop everything kept in memory for one user: their cached encoder state. Popularity
        and co-visitation keep counts over items only, never who."""
        if self.encoder is not None:
            self.encoder.evict(user_id)

    def delete_item(self, item_id: str) -> None:
        self.catalog.delete(item_id)

    def _refresh_item_vectors(self) -> None:
        if self.encoder is not None:
            self.encoder.set_item_vectors(self.catalog.index.matrix)

    # -- per event -------------------------------------------------------------------------------

    def observe(self, event: Event, state: UserState) -> None:
        """Account an accepted event in the item-side features: popularity, and co-visitation
        with the user's other recent events (``state`` is the user's state with it applied)."""
        self.popularity.add(event.item_id, event.type_code, event.ts)
        h = event_id_hash(event.event_id)
        span = self.covisit.config.span
        previous = [(i, c, t) for i, c, t, d in state.seq[-span - 1 :] if d != h][-span:]
        self.covisit.observe(previous, (event.item_id, event.type_code, event.ts))

    def seed(self, state: UserState) -> None:
        """Item-side features from a user's stored sequence (after a restart: they live in
        memory, the sequences in the table)."""
        for item, code, ts, _ in state.seq:
            self.popularity.add(item, code, ts)
        self.covisit.observe_sequence([(i, c, t) for i, c, t, _ in state.seq])

    def job(self, event: Event, state: UserState) -> Job:
        # the whole kept sequence: the encoder rebuilds from its tail, candidates read all of it
        n = self.settings.features.sequence_max
        if self.model is not None:
            n = max(n, self.model.config.context_events)
        at = state.position_of(event)
        return Job(
            event,
            state.n_events - 1,
            state.recent(n),
            frozenset(state.purchased),
            inserted_at=-1 if at is None else at,
            expired=state.expired > 0,
        )

    def recommend(
        self, jobs: Sequence[Job], now: float | None = None, fallback: bool = False
    ) -> list[dict[str, Any]]:
        """Lists for a micro-batch: every event updates its user's state; each user gets one list,
        built after their last event in the batch (earlier ones would be superseded at once).
        ``fallback`` serves the heuristic lists even when a model is loaded (the model failed)."""
        if not jobs:
            return []
        last: dict[str, int] = {}
        for i, job in enumerate(jobs):
            last[job.event.user_id] = i
        final = sorted(last.values())
        finals = [jobs[i] for i in final]
        if fallback and self.encoder is not None:
            self.encoder.clear()  # the failed batch may have left some users half-stepped
        contexts = self._contexts(finals)
        # what each user's history says of each item: candidates and reasons both read it
        stats = [history_stats(c.history) for c in contexts]
        if self.source == POPULARITY:
            lists = [self._popular(j) for j in finals]
            ranked: Ranked = lists, [[POPULAR] * len(x) for x in lists]
            source = POPULARITY
        elif self.serves_model and not fallback:
            with self.catalog.pinned_rows():
                vectors = self._encode(jobs, final)
            ranked, source = self._ranked(vectors, contexts, stats), MODEL
        else:
            ranked = self._heuristic(contexts, stats)
            source = self.source if self.source in SINGLE_SOURCES else HEURISTIC
        lists, kinds = ranked
        whys = self._explain(contexts, lists, kinds, stats) if self.explains else None
        emitted = time.time() if now is None else now
        version = self.model_version if source == MODEL else source
        out = []
        for n, (i, items) in enumerate(zip(final, lists, strict=True)):
            entries: list[dict[str, Any]] = [
                {"item_id": item, "score": round(score, 6)} for item, score in items
            ]
            if whys is not None:
                for entry, why in zip(entries, whys[n], strict=True):
                    entry["why"] = why
            out.append(
                {
                    "schema": SCHEMA_VERSION,
                    "schema_minor": SCHEMA_MINOR,
                    "user_id": jobs[i].event.user_id,
                    "items": entries,
                    "model_version": version,
                    "source": source,
                    "event_id": jobs[i].event.event_id,
                    "event_ts": jobs[i].event.ts,
                    "emitted_at": emitted,
                }
            )
        return out

    def _explain(
        self,
        contexts: Sequence[UserContext],
        lists: Sequence[Sequence[tuple[str, float]]],
        kinds: Sequence[Sequence[str]],
        stats: Sequence[Mapping[str, HistoryStat]],
    ) -> list[list[dict[str, Any]]]:
        index = self.catalog.index
        items = self.catalog.items

        def title_of(item_id: str) -> str:
            it = items.get(item_id)
            return it.title if it is not None else ""

        evidence = Evidence(
            covisit=self.covisit,
            vectors=index.matrix if self.model is not None else None,
            row_of=index.row_of,
            title_of=title_of,
        )
        ids = [[item for item, _ in x] for x in lists]
        return explain(contexts, ids, kinds, evidence, self.covisit.config.user_items, stats)

    def _encode(self, jobs: Sequence[Job], final: Sequence[int]) -> torch.Tensor:
        """One vector per user of the batch (``final``: index of each user's last job), after
        their newest event. Only the events new since a user's cached state are stepped, in event
        time, from the last job's view of the sequence, so events of one batch read out of order
        cost nothing extra, and one that belongs just before the newest stepped event rewinds the
        cache by one. The state is rebuilt from that view when an event of the batch went in
        further back than that, or there is no usable cache."""
        assert self.encoder is not None
        enc = self.encoder
        grew = len(self.catalog.index)
        row_for = self.catalog.row_for_history
        first_insert: dict[str, int] = {}
        for j in jobs:
            user = j.event.user_id
            at = -1 if j.expired else j.inserted_at  # -1: nothing cached is usable
            first_insert[user] = min(first_insert.get(user, at), at)
        requests: list[StepRequest] = []
        last_request = []
        for i in final:
            j = jobs[i]
            user = j.event.user_id
            cached = enc.cached_position(user)
            if cached is not None and cached == first_insert[user] and enc.rewind_one(user):
                # The late event belongs just before the newest stepped one: re-step from there.
                cached -= 1
            new = 0 if cached is None else j.position - cached
            if cached is not None and cached < first_insert[user] and 0 < new <= len(j.recent):
                if new == 1:
                    item, code, gap = j.recent.newest()
                    requests.append(StepRequest(user, j.position, [row_for(item)], [code], [gap]))
                else:
                    items, types, gaps = j.recent.tail()
                    for k in range(new, 0, -1):  # one request per new event, oldest first
                        requests.append(
                            StepRequest(
                                user,
                                j.position - k + 1,
                                [row_for(items[-k])],
                                [types[-k]],
                                [gaps[-k]],
                            )
                        )
            else:
                enc.evict(user)  # so the request below rebuilds, whatever the cache held
                items, types, gaps = j.recent.tail()
                rows = [row_for(x) for x in items]
                requests.append(StepRequest(user, j.position, rows, types, gaps))
            last_request.append(len(requests) - 1)
        if len(self.catalog.index) != grew:
            self._refresh_item_vectors()
        return enc.step(requests)[last_request]

    def _contexts(self, jobs: Sequence[Job]) -> list[UserContext]:
        n = self.settings.features.sequence_max
        out = []
        for j in jobs:
            history = [(i, c, t) for i, c, t, _ in j.recent.entries[-n:]]
            now = history[-1][2] if history else j.event.ts  # the user's newest event
            out.append(UserContext(history, j.purchased, now))
        return out

    def _listable(self) -> Callable[[str], bool] | None:
        # Before a catalog arrives, any item seen in events may be listed; after, only available ones.
        index = self.catalog.index
        return index.is_available if len(index) else None

    def _heuristic(
        self, contexts: Sequence[UserContext], stats: Sequence[Mapping[str, HistoryStat]]
    ) -> Ranked:
        """Without a model: recent items, co-visitation neighbours and popularity (or, for a
        baseline worker, one of them alone)."""
        cfg = self.candidates
        listable = self._listable()
        pop = self.popularity.top(cfg.popular, accept=listable)
        batch = build_candidates(contexts, cfg, self.covisit, pop, None, listable, stats)
        if self.source in SINGLE_SOURCES:
            scores = source_scores(batch, self.source)
        else:
            scores = self._diversified(batch, heuristic_scores(batch))
        picked = [
            [r for r in rows if scores[r] > float("-inf")]
            for rows in batch.top_rows(scores, self.k)
        ]
        lists = [[(batch.item_ids[r], float(scores[r])) for r in rows] for rows in picked]
        if self.source in SINGLE_SOURCES:
            kind = REPEAT if self.source == "recent" else COVISIT
            return lists, [[kind] * len(rows) for rows in picked]
        return lists, tier_kinds(batch, picked) if self.explains else []

    def _ranked(
        self,
        vectors: torch.Tensor,
        contexts: Sequence[UserContext],
        stats: Sequence[Mapping[str, HistoryStat]],
    ) -> Ranked:
        """The model's retrieval with the other sources' candidates, ranked by the checkpoint's
        ranker; a checkpoint without one serves its retrieval as it is."""
        assert self.model is not None
        index = self.catalog.index
        cfg = self.candidates
        exclude_ids = [c.purchased if cfg.exclude_purchased else frozenset() for c in contexts]
        exclude = [[index.row_of[i] for i in ids if i in index.row_of] for ids in exclude_ids]
        ranker = self.model.ranker
        fetch = self.k if ranker is None else max(self.k, cfg.model)
        ranked = self.catalog.retriever.topk(vectors, fetch, exclude)
        model_lists = [[(index.ids[r], s) for r, s in rows] for rows in ranked]
        if ranker is None:
            return model_lists, [[SIMILAR] * len(x) for x in model_lists]
        listable = self._listable()
        pop = self.popularity.top(cfg.popular, accept=listable)
        batch = build_candidates(contexts, cfg, self.covisit, pop, model_lists, listable, stats)
        rows = [index.row_of.get(i, -1) for i in batch.item_ids]
        batch.set_model_scores(vectors, index.matrix, rows)
        scores = self._diversified(batch, ranker.score(batch.features), rows)
        picked = batch.top_rows(scores, self.k)
        lists = [[(batch.item_ids[r], float(scores[r])) for r in p] for p in picked]
        kinds = ranked_kinds(batch, picked, ranker.score, cfg) if self.explains else []
        return lists, kinds

    def _diversified(
        self, batch: CandidateBatch, scores: np.ndarray, rows: Sequence[int] | None = None
    ) -> np.ndarray:
        """``scores`` re-ranked for diversity (``recs.diversity``; 0: as they are), over the
        item vectors of the serving index (with a model) and the catalog's categories."""
        if self.diversity <= 0.0 or not len(batch):
            return scores
        index = self.catalog.index
        vectors = None
        if self.model is not None:
            if rows is None:
                rows = [index.row_of.get(i, -1) for i in batch.item_ids]
            r = np.asarray(rows, dtype=np.int64)
            vectors = np.zeros((len(r), index.matrix.shape[1]), dtype=np.float32)
            known = r >= 0
            vectors[known] = index.matrix[torch.from_numpy(r[known])].numpy()
        items = self.catalog.items
        categories = [
            it.category if (it := items.get(i)) is not None else None for i in batch.item_ids
        ]
        return mmr_scores(batch, scores, self.k, self.diversity, vectors, categories)

    def _popular(self, job: Job) -> list[tuple[str, float]]:
        exclude = job.purchased if self.candidates.exclude_purchased else frozenset()
        return self.popularity.top(self.k, exclude=exclude, accept=self._listable())
