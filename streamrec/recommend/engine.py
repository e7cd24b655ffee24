"""From an updated user state to a published top-K list: the model work of every path.

The worker, replay-driven evaluation and the offline reference all call ``Recommender``; only
how events arrive differs. Work is batched across users: one encoder step and one top-K for all
events of a micro-batch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from encoders.checkpoint import TrainedModel
from encoders.incremental import IncrementalEncoder, StepRequest
from streamrec.events.schema import Event, Item
from streamrec.features.popularity import DecayedPopularity
from streamrec.features.user_state import RecentEvents, UserState
from streamrec.recommend.catalog import Catalog
from streamrec.retrieve.hnsw import HnswParams
from streamrec.retrieve.retriever import RetrievalConfig
from streamrec.settings import Settings

log = logging.getLogger(__name__)
SCHEMA_VERSION = 1
POPULARITY_VERSION = "popularity"


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

    @property
    def reordered(self) -> bool:
        return self.inserted_at < self.position


def retrieval_config(settings: Settings) -> RetrievalConfig:
    r = settings.retrieval
    return RetrievalConfig(
        method=r.method,
        ann_min_items=r.ann_min_items,
        rebuild_fraction=r.rebuild_fraction,
        k=settings.recs.k,
        hnsw=HnswParams(
            m=r.hnsw_m,
            ef_construction=r.hnsw_ef_construction,
            ef_search=r.hnsw_ef_search,
            threads=max(1, settings.model.threads),
            target_recall=r.target_recall,
        ),
    )


class Recommender:
    def __init__(self, settings: Settings, model: TrainedModel | None = None) -> None:
        self.settings = settings
        self.k = settings.recs.k
        self.popularity = DecayedPopularity(settings.features.popularity_half_life_s)
        self.catalog = Catalog(model, retrieval=retrieval_config(settings))
        self.model: TrainedModel | None = None
        self.encoder: IncrementalEncoder | None = None
        self.set_model(model)

    # -- model and catalog -----------------------------------------------------------------------

    @property
    def model_version(self) -> str:
        return self.model.model_version if self.model is not None else POPULARITY_VERSION

    def set_model(self, model: TrainedModel | None) -> None:
        """Serve a new model from the next batch on (caches are dropped: they belong to the old one)."""
        self.model = model
        self.catalog.set_model(model)
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
        self.encoder = IncrementalEncoder(model.model, self.settings.model.cache_mb * 2**20)
        self.encoder.set_item_vectors(self.catalog.index.matrix)

    def upsert_items(self, items: Sequence[Item]) -> None:
        changed = self.catalog.upsert_many(items)
        if changed and self.encoder is not None:
            # Cached K/V were computed from the old vectors; a rebuild uses the new ones. Drop the
            # cache so every user's state is again exactly a function of their history.
            self.encoder.clear()
        self._refresh_item_vectors()

    def delete_item(self, item_id: str) -> None:
        self.catalog.delete(item_id)

    def _refresh_item_vectors(self) -> None:
        if self.encoder is not None:
            self.encoder.set_item_vectors(self.catalog.index.matrix)

    # -- per event -------------------------------------------------------------------------------

    def observe(self, event: Event) -> None:
        """Account an accepted event in the item-side features."""
        self.popularity.add(event.item_id, event.type_code, event.ts)

    def job(self, event: Event, state: UserState) -> Job:
        n = self.model.config.context_events if self.model is not None else 1
        at = state.position_of(event)
        return Job(
            event,
            state.n_events - 1,
            state.recent(n),
            frozenset(state.purchased),
            inserted_at=-1 if at is None else at,
        )

    def recommend(
        self, jobs: Sequence[Job], now: float | None = None, fallback: bool = False
    ) -> list[dict[str, Any]]:
        """Lists for a micro-batch: every event updates its user's state; each user gets one list,
        built after their last event in the batch (earlier ones would be superseded at once).
        ``fallback`` serves popularity even when a model is loaded (the model failed)."""
        if not jobs:
            return []
        last: dict[str, int] = {}
        for i, job in enumerate(jobs):
            last[job.event.user_id] = i
        final = sorted(last.values())
        if self.encoder is None or fallback:
            if fallback and self.encoder is not None:
                self.encoder.clear()  # the failed batch may have left some users half-stepped
            lists = [self._popular(jobs[i]) for i in final]
            source = "popularity"
        else:
            vectors = self._encode(jobs, final)
            lists = self._rank(vectors, [jobs[i] for i in final])
            source = "model"
        emitted = time.time() if now is None else now
        return [
            {
                "schema": SCHEMA_VERSION,
                "user_id": jobs[i].event.user_id,
                "items": [{"item_id": item, "score": round(score, 6)} for item, score in items],
                "model_version": self.model_version if source == "model" else POPULARITY_VERSION,
                "source": source,
                "event_id": jobs[i].event.event_id,
                "event_ts": jobs[i].event.ts,
                "emitted_at": emitted,
            }
            for i, items in zip(final, lists, strict=True)
        ]

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
            first_insert[user] = min(first_insert.get(user, j.inserted_at), j.inserted_at)
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

    def _rank(self, vectors: torch.Tensor, jobs: Sequence[Job]) -> list[list[tuple[str, float]]]:
        index = self.catalog.index
        exclude = [[index.row_of[i] for i in j.purchased if i in index.row_of] for j in jobs]
        ranked = self.catalog.retriever.topk(vectors, self.k, exclude)
        return [[(index.ids[r], s) for r, s in rows] for rows in ranked]

    def _popular(self, job: Job) -> list[tuple[str, float]]:
        index = self.catalog.index
        # Before a catalog arrives, any item seen in events may be listed; after, only available ones.
        listable = index.is_available if len(index) else None
        return self.popularity.top(self.k, exclude=job.purchased, accept=listable)
