"""The streamrec worker: Faust agents as thin adapters around the core.

    event topics ─► validate ─(bad)─► DLQ
                       │
                       ▼
        event-time merge of the three topics, per partition (streamrec.events.merge)
                       │
                       ▼
        user state: dedup, sequence, counts, purchases (users table: RocksDB + changelog)
                       │
                       ▼
        micro-batcher ─► Recommender (encoder step + top-K) ─► recommendations topic

Offsets are acked only after an event's list is handed to the producer, and Faust flushes the
producer before committing, so a crash replays uncommitted events; the per-user event-id set in
the same table record makes that replay count nothing twice (at-least-once, idempotent effects).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import faust
import faust.streams
import orjson
import torch
from faust.types import TP

from encoders.checkpoint import CheckpointError, TrainedModel, load_checkpoint
from streamrec.events.merge import EventTimeMerge, Lag, MergeConfig
from streamrec.events.schema import Event, Item
from streamrec.events.validate import (
    Limits,
    Message,
    Rejection,
    parse_forget_request,
    validate_message,
)
from streamrec.features.user_state import FeatureLimits, UserState, last_activity
from streamrec.recommend.catalog import embed
from streamrec.recommend.engine import Job, Recommender
from streamrec.retrieve.graph_store import GraphStore
from streamrec.settings import Settings
from streams.acks import InOrderAcks
from streams.app import create_app
from streams.batcher import MicroBatcher
from streams.catalog_follower import CatalogFollower
from streams.collector import REFREEZE_S, Collector
from streams.dlq import dlq_headers
from streams.error_budget import ErrorBudget
from streams.failpoints import FailPoints
from streams.metrics import CONTENT_TYPE as PROMETHEUS_CONTENT_TYPE
from streams.metrics import Metrics
from streams.topics import USERS_TABLE, declare
from streams.web_auth import user_data_refusal

log = logging.getLogger(__name__)
MODEL_POLL_S = 10.0
FAULT_COMMIT_S = 10.0  # how long a stopping worker tries to commit what it has acked
SWEEP_YIELD_EVERY = 500  # records the retention sweep reads between yields to the event loop


class WorkerFault(RuntimeError):
    """A fault of the worker itself (not of its input): it stops, unhealthy, with exit code 1."""


@dataclasses.dataclass(frozen=True, slots=True)
class Forget:
    """A request to forget a user, queued in order with the lists: the lists of the user queued
    before it are dropped, and a tombstone goes out in their place."""

    user_id: str


@contextlib.contextmanager
def in_event_context(event: Any) -> Iterator[None]:
    """Faust routes a table write (store partition, changelog partition) by the *current* event;
    writes made for an event outside its stream iteration (released by the merge from the
    lateness task) name it here."""
    token = faust.streams._current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        faust.streams._current_event.reset(token)


def load_model(path: str) -> TrainedModel | None:
    """The checkpoint at ``path``, or None when there is none yet (serve the heuristic lists)."""
    if not path or not (Path(path) / "model.json").exists():
        return None
    return load_checkpoint(path)


class Worker:
    """Builds the Faust app and wires the core into it. ``app`` is what `faust worker` runs."""

    def __init__(self, settings: Settings, model: TrainedModel | None = None) -> None:
        self.settings = settings
        torch.set_num_threads(max(1, settings.model.threads))
        self.app = create_app(settings)
        self.topics = declare(self.app, settings)
        self.users = self.app.Table(
            USERS_TABLE,
            key_type=bytes,  # bytes types make Faust use the raw codec for both
            value_type=bytes,
            partitions=settings.topics.partitions,
            help="Per-user rolling features (streamrec.features.user_state).",
        )
        self.limits = Limits.from_settings(settings.validation)
        self.feature_limits = FeatureLimits.from_settings(settings.features)
        self.metrics = Metrics()
        self.collector = Collector(settings.app.gc_young_objects)
        errors = settings.errors
        self.acks = InOrderAcks()
        self.budget = ErrorBudget(errors.budget, errors.budget_window)
        self.failpoints = FailPoints(errors.failpoints)
        if self.failpoints:
            log.warning("fail points armed (fault injection): %s", errors.failpoints)
        self.fault: str | None = None  # set once the worker is stopping on a fault of its own
        self._crash: asyncio.Task[None] | None = None
        ingest = settings.ingest
        self.merge: EventTimeMerge[tuple[Event, Any]] = EventTimeMerge(
            tuple(settings.topics.event_topics()),
            MergeConfig(ingest.lateness_ms / 1e3, ingest.behind_wait_ms / 1e3, ingest.max_pending),
        )
        self._merge_lock = asyncio.Lock()
        self._topic_of = settings.topics.event_topics()
        self._next_offset: dict[TP, int] = {}
        if model is None:
            model = load_model(settings.model.checkpoint)
        # The item graph is saved beside the worker's tables: a restart loads it (seconds)
        # instead of building it (minutes at a million items).
        store = None
        if settings.retrieval.save_graph:
            store = GraphStore(Path(settings.app.datadir) / "item-graph")
        self.recommender = Recommender(settings, model, store)
        self._model_mtime = self._checkpoint_mtime()
        # users forgotten while a batch was being published: a retry of it leaves them out
        self._forgotten_in_flight: set[str] = set()
        recs = settings.recs
        self.batcher: MicroBatcher[tuple[Job | Forget, Any]] = MicroBatcher(
            self._publish,
            recs.batch_max,
            recs.batch_wait_ms / 1e3,
            behind=self._behind,
            behind_size=recs.batch_max_behind,
            behind_wait_s=recs.batch_wait_behind_ms / 1e3,
        )
        self.catalog = CatalogFollower(settings, self._on_items, self._dead_letter)
        self._register()

    # -- wiring ----------------------------------------------------------------------------------

    def _register(self) -> None:
        app = self.app
        app.agent(self.topics.events, name="streamrec.events")(self._process)
        app.task(self.catalog.run)
        app.task(self.batcher.run)
        if self.merge.config.lateness_s > 0:
            app.task(self._release_late)
        app.task(self._seed_popularity)
        app.timer(MODEL_POLL_S)(self._poll_model)
        app.timer(REFREEZE_S)(self._refreeze)
        if self.feature_limits.retention_s > 0:
            app.timer(self.settings.features.retention_sweep_s)(self._sweep_retention)
        app.page("/live/")(self._live_view())
        app.page("/health/")(self._health_view())
        app.page("/metrics/")(self._metrics_view())
        app.page("/users/{user_id}/")(self._user_view())
        app.page("/items/{item_id}/neighbours/")(self._neighbours_view())

    async def _process(self, stream: Any) -> None:
        await self.catalog.ready.wait()
        await self._await_item_graph()
        async for event in stream.noack().events():
            await self._guarded(self.handle, event)

    async def _guarded(self, step: Any, event: Any, *args: Any) -> None:
        """Run ``step`` on ``event``; an error there is the worker's (the event was valid): the
        event is dead-lettered within the error budget, and past it the worker stops. This never
        raises, so an event handed to the merge is never acked for another's failure."""
        try:
            await step(event, *args)
        except Exception as exc:
            if self.fault is not None:
                return  # stopping: left unacked
            if not self.budget.error():
                await self._fail(
                    f"{self.budget.in_window()} errors applying events within the last "
                    f"{self.budget.window} events (budget {self.budget.budget}); last: {exc!r}"
                )
                return  # unacked: read again after the restart
            # Within the budget: an unacked event would pin its partition's committed offset
            # forever, so park it in the DLQ with the reason instead, and go on.
            log.exception("failed to process an event; dead-lettering it")
            self.metrics.inc("internal_errors")
            await self._park(event, Rejection("internal_error", f"worker failed on it: {exc!r}"))

    async def _park(self, event: Any, why: Rejection) -> None:
        """Dead-letter ``event`` and ack it; if the dead letter cannot be sent, that is the
        worker's fault: it stops with the event unacked (nothing is lost)."""
        msg = event.message
        try:
            await self._dead_letter(msg.topic, msg.partition, msg.offset, msg.key, msg.value, why)
        except Exception as exc:
            log.exception("could not send a dead letter")
            await self._fail(f"could not send a dead letter ({why.code}): {exc!r}")
            return
        self.acks.ack(event)

    async def _fail(self, reason: str) -> None:
        """Stop on a fault of the worker's own: unhealthy at once, loud, and exit code 1 (Faust's
        crash path). Nothing more is acked, so a restart reads every event whose effects are not
        done from the committed offsets."""
        if self.fault is not None:
            return
        self.fault = reason
        self.metrics.inc("worker_faults")
        log.critical("worker fault, stopping: %s", reason)
        # From a task of its own: the crash stops (cancels) the agent or batcher calling this.
        self._crash = asyncio.ensure_future(self._commit_then_crash(WorkerFault(reason)))

    async def _commit_then_crash(self, fault: WorkerFault) -> None:
        """Commit what is acked (done: applied and listed, or dead-lettered) before crashing, so
        the restart does not read it again: an event dead-lettered as ``internal_error`` must not
        be applied after all by a healthy restart while its dead letter says it was not. Best
        effort: a fault of the producer or broker may keep the commit from finishing, and then
        the restart re-reads from the last commit (at-least-once, and idempotent)."""
        try:
            await asyncio.wait_for(self.app.consumer.commit(), FAULT_COMMIT_S)
        except Exception as exc:  # the crash goes on regardless
            log.warning("could not commit acked offsets before stopping: %r", exc)
        await self.app.crash(fault)

    async def _await_item_graph(self) -> None:
        """Past retrieval.ann_min_items the first lists wait for the item graph (seconds at 100k
        items, minutes at millions) instead of each paying an exact scan of the catalog."""
        while not self._item_graph_ready():
            self.recommender.catalog.retriever.maintain()
            await asyncio.sleep(0.2)

    def _item_graph_ready(self) -> bool:
        retriever = self.recommender.catalog.retriever
        return retriever.graph_ready or not retriever.wants_graph()

    async def handle(self, event: Any) -> None:
        """Validate one event read from a type topic and hand it to the event-time merge (bad
        input goes to the DLQ at once)."""
        if self.fault is not None:
            return  # stopping: left unacked, read again after the restart
        msg = event.message
        self.acks.read(event)  # from here on every way out acks through self.acks
        if msg.topic == self.topics.forget:
            await self.forget(event)
            return
        self.budget.event()
        self.metrics.inc("events_in")
        # read up to here, valid or not (lower again after a seek back: re-reading)
        self._next_offset[TP(msg.topic, msg.partition)] = msg.offset + 1
        merging = self.merge.config.lateness_s > 0
        etype = self.topics.type_of[msg.topic]
        self.metrics.inc(f"events_in_{etype}")
        parsed = validate_message(Message(etype, msg.key, msg.value), self.limits)
        if isinstance(parsed, Rejection):
            await self._park(event, parsed)
            return
        if not merging:
            await self.apply(event, parsed)
            return
        self.merge.push(etype, msg.partition, parsed.ts, (parsed, event), time.monotonic())
        await self._release()

    async def forget(self, event: Any) -> None:
        """Forget the user named by a request's key (docs/guarantees.md#forgetting-a-user): their
        record goes (a changelog tombstone), their events read but not applied yet are dropped,
        their cached encoder state is dropped, and a tombstone replaces their list on the output
        topic, after any list of theirs already on its way and before any list built from events
        that come after. Events of the user read later start a new, empty history."""
        msg = event.message
        user = _forget_key(msg.key, self.limits.max_id_length)
        if isinstance(user, Rejection):
            await self._park(event, user)
            return
        idle_before = parse_forget_request(msg.value)
        if isinstance(idle_before, Rejection):
            await self._park(event, idle_before)
            return
        key = user.encode()
        async with self._merge_lock:
            if idle_before is not None and self._active_since(user, idle_before):
                # The sweep's request, and the user came back since it was sent: keep them.
                self.metrics.inc("retention_kept")
                self.acks.ack(event)
                return
            dropped = self.merge.remove(lambda held: held[0].user_id == user)
        for _, held_event in dropped:
            self.acks.ack(held_event)
        with in_event_context(event):
            if self.users.get(key) is not None:
                del self.users[key]
        self.recommender.forget(user)
        self._forgotten_in_flight.add(user)
        self.metrics.inc("users_forgotten" if idle_before is None else "users_expired")
        self.metrics.inc("events_forgotten", len(dropped))
        # Which request, not whose: the log keeps no user id.
        log.info("forgetting a user (request %s[%d]@%d)", msg.topic, msg.partition, msg.offset)
        await self.batcher.submit((Forget(user), event))

    def _active_since(self, user: str, idle_before: float) -> bool:
        """Whether ``user`` has an event at or after ``idle_before`` (event time) in their record,
        or events held in the merge (read, so not idle); a user with no record has nothing to
        expire. Called under the merge lock."""
        if self.merge.holds(lambda held: held[0].user_id == user):
            return True
        raw = self.users.get(user.encode())
        return not raw or last_activity(raw) >= idle_before

    async def _sweep_retention(self) -> None:
        """Ask to forget each user of this worker's partitions whose newest event is older than
        features.retention_days by the wall clock (docs/guarantees.md#retention). The request
        goes on the forget topic keyed by the user, so the worker holding them carries it out in
        order with their events, and checks again then: one who came back is kept."""
        if not self.ready():
            return  # tables not recovered or partitions moving: the next sweep looks again
        idle_before = time.time() - self.feature_limits.retention_s
        value = orjson.dumps({"reason": "retention", "idle_before": idle_before})
        idle: list[bytes] = []
        # A RocksDB iterator reads a snapshot, so the loop may yield to the event loop.
        for n, (key, raw) in enumerate(self.users.items()):
            if n % SWEEP_YIELD_EVERY == SWEEP_YIELD_EVERY - 1:
                await asyncio.sleep(0)
            if raw and last_activity(raw) < idle_before:
                idle.append(key)
        for key in idle:
            await self.topics.forget_requests.send(key=key, value=value)
        self.metrics.inc("retention_swept", len(idle))
        if idle:
            log.info("retention sweep: asked to forget %d idle user(s)", len(idle))

    async def _release(self) -> None:
        """Apply the events the merge lets go, in its order (one caller at a time, so the order
        holds across the agent and the lateness task)."""
        async with self._merge_lock:
            for parsed, event in self.merge.release(time.monotonic(), self._lag):
                await self._guarded(self.apply, event, parsed)

    async def _release_late(self) -> None:
        """Lets events out whose lateness bound ran out while no new event came in."""
        idle = self.merge.config.lateness_s
        while True:
            deadline = self.merge.next_deadline()
            # Never longer than the lateness bound: a rebalance waits for every held event to be
            # acked, and lets them all go (_lag) without their behind_wait_s.
            wait = idle if deadline is None else max(0.001, min(idle, deadline - time.monotonic()))
            await asyncio.sleep(wait)
            if len(self.merge):
                await self._release()

    def _lag(self, etype: str, partition: int) -> Lag:
        """How far this worker has read that topic partition, against what the broker had at the
        consumer's last fetch."""
        if self.app.rebalancing:
            # Faust waits for every event it handed out to be acked before it revokes: let the
            # held ones go now rather than after their wait bound.
            return Lag.CAUGHT_UP
        unread = self._unread(TP(self._topic_of[etype], partition))
        if unread is None:
            return Lag.UNKNOWN  # no fetch answered yet
        return Lag.CAUGHT_UP if unread <= 0 else Lag.BEHIND

    def _behind(self) -> bool:
        """At least a normal batch's worth of records waits on the broker for this worker's
        event partitions (the batcher then sizes its batch for a backlog)."""
        if self.app.rebalancing:
            return False
        waiting = sum(unread for _, _, unread in self.consumer_lag())
        return waiting >= self.settings.recs.batch_max

    def _unread(self, tp: TP) -> int | None:
        """Records of ``tp`` on the broker not read yet, as far as the consumer's last fetch
        knows its end (0 when it is not assigned any more: nothing to wait for); None before
        the first fetch answered."""
        consumer = self.app.consumer
        try:
            highwater = consumer.highwater(tp)
        except Exception:  # not assigned (any more)
            return 0
        read = self._next_offset.get(tp, getattr(consumer, "start_offsets", {}).get(tp))
        if highwater is None or read is None:
            return None
        return max(0, highwater - read)

    async def apply(self, event: Any, parsed: Event) -> None:
        """Apply one valid event (``parsed`` from the Faust ``event``) to its user's state and
        queue its list."""
        if self.fault is not None:
            return  # stopping: nothing more is written or acked
        key = parsed.user_id.encode()
        with in_event_context(event):
            self.failpoints.hit("state.read")
            # The read too: Faust looks a key up in the store partition of the *current* event,
            # and an event the merge releases is not the one the agent has just read (often
            # another partition): read outside its context, a user's record came back empty.
            state = UserState.from_bytes(self.users.get(key))
        if not state.apply(parsed, self.feature_limits):
            self.metrics.inc("events_duplicate")
            if state.is_last_applied(parsed):
                # The event applied last, redelivered after a crash: its list may never have
                # been published, so publish it again (the output topic keeps the latest anyway).
                # Nor may its changelog record: RocksDB took the write at once, the changelog
                # only once the producer flushed, and a kill -9 between leaves the local state
                # ahead of the changelog, which a rebalance or a lost disk restores from. Write
                # the record again (the whole state: it also carries any earlier unflushed event).
                with in_event_context(event):
                    self.users[key] = state.to_bytes()
                await self.batcher.submit((self.recommender.job(parsed, state), event))
            else:
                self.acks.ack(event)
            return
        with in_event_context(event):
            # One write per event: the online evaluation reads each app's processing order from
            # these changelog records (streamrec/online/run.py: read_applied).
            self.users[key] = state.to_bytes()
        self.recommender.observe(parsed, state)
        self.metrics.inc("events_accepted")
        self.metrics.applied(parsed.ts)
        job = self.recommender.job(parsed, state)
        if job.reordered:
            self.metrics.inc("events_reordered")  # read after a later-stamped event: a rebuild
        await self.batcher.submit((job, event))

    async def _seed_popularity(self) -> None:
        """Popularity and co-visitation live in memory; once the tables are recovered, seed them
        from the users' stored sequences, so lists after a restart do not wait for traffic."""
        while not self.ready():
            await asyncio.sleep(0.2)
        users = 0
        try:
            for _, raw in self.users.items():
                self.recommender.seed(UserState.from_bytes(raw))
                users += 1
                if users % 500 == 0:
                    await asyncio.sleep(0)  # a few ms at a time: the loop keeps serving meanwhile
        except RuntimeError as exc:  # a rebalance changed the store's partitions under the scan
            log.warning("seeding stopped after %d users: %s", users, exc)
        log.info(
            "popularity and co-visitation seeded from %d users' recent events: %d and %d items",
            users,
            len(self.recommender.popularity),
            len(self.recommender.covisit),
        )
        await self._refreeze()  # the long-lived state is built: out of the collector's way

    async def _refreeze(self) -> None:
        t0 = time.perf_counter()
        frozen = self.collector.refreeze()
        log.info(
            "collected and froze %d objects in %.0f ms", frozen, (time.perf_counter() - t0) * 1e3
        )

    async def _publish(self, batch: list[tuple[Job | Forget, Any]]) -> None:
        """Rank a batch and hand its lists to the producer; only then are its events acked (Faust
        flushes the producer before it commits). A failure is retried; a batch that keeps
        failing stops the worker with the events unacked. A forget request in the batch drops
        the user's lists queued before it and sends their tombstone first."""
        self._forgotten_in_flight.clear()
        jobs, forgets = split_forgets([item for item, _ in batch])
        if len(jobs) + len(forgets) < len(batch):
            self.metrics.inc("lists_forgotten", len(batch) - len(jobs) - len(forgets))
        attempts = self.settings.errors.publish_attempts
        for attempt in range(1, attempts + 1):
            if self.fault is not None:
                return
            if self._forgotten_in_flight:
                # forgotten while this batch was on its way: their lists are not sent again
                gone = self._forgotten_in_flight
                jobs = [j for j in jobs if j.event.user_id not in gone]
            try:
                for user in forgets:
                    await self.topics.recommendations.send(key=user.encode(), value=None)
                await self._rank_and_send(jobs)
                break
            except Exception as exc:
                self.metrics.inc("publish_failures")
                if attempt == attempts:
                    log.exception("publishing a batch of %d lists failed", len(jobs))
                    await self._fail(
                        f"could not publish a batch of {len(jobs)} lists in {attempts} "
                        f"attempts; last error: {exc!r}"
                    )
                    return
                wait_s = self.settings.errors.retry_backoff_ms / 1e3 * 2 ** (attempt - 1)
                log.warning(
                    "publishing a batch of %d lists failed (attempt %d of %d), retrying in "
                    "%.2f s: %r",
                    len(jobs),
                    attempt,
                    attempts,
                    wait_s,
                    exc,
                )
                # Lists of this batch already sent go out again: consumers keep the latest.
                await asyncio.sleep(wait_s)
        for _, event in batch:
            self.acks.ack(event)

    async def _rank_and_send(self, jobs: list[Job]) -> None:
        t0 = time.perf_counter()
        try:
            self.failpoints.hit("rank")
            # On the event loop: a model thread was tried, and lost. Torch releases the GIL
            # around every op, and each re-acquisition waited out the loop thread's switch
            # interval, so batches took several times longer (demo p50 75 ms vs 28 ms).
            lists = self.recommender.recommend(jobs)
        except Exception:
            # The events' state is already durable; serve this batch from the heuristic lists
            # rather than stall the partition.
            log.exception("model failed on a batch of %d; serving the heuristic lists", len(jobs))
            self.metrics.inc("batch_failures")
            self.failpoints.hit("rank.fallback")
            lists = self.recommender.recommend(jobs, fallback=True)
        self.metrics.batch(len(jobs), time.perf_counter() - t0)
        for rec in lists:
            self.failpoints.hit("publish.send")
            await self.topics.recommendations.send(
                key=rec["user_id"].encode(), value=orjson.dumps(rec)
            )
            self.metrics.latency(rec["event_ts"], rec["emitted_at"])
        self.metrics.inc("lists_out", len(lists))
        # by the type of the event each list answers (a user's events in one batch share one)
        type_of = {job.event.event_id: job.event.type for job in jobs}
        for rec in lists:
            self.metrics.inc(f"lists_out_{type_of.get(rec['event_id'], 'other')}")

    async def _dead_letter(
        self,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        why: Rejection,
    ) -> None:
        self.failpoints.hit("dlq.send")
        self.metrics.reject(why.code)
        log.info("dead-letter %s[%d]@%d: %s", topic, partition, offset, why.reason)
        await self.topics.dlq.send(
            key=key, value=value, headers=dlq_headers(topic, partition, offset, why)
        )

    def _on_items(self, upserts: list[Item], deletes: list[str]) -> None:
        self.recommender.upsert_items(upserts)
        for item_id in deletes:
            self.recommender.delete_item(item_id)
        self.metrics.inc("items_in", len(upserts) + len(deletes))

    # -- model hot reload ------------------------------------------------------------------------

    def _checkpoint_mtime(self) -> float:
        try:
            return os.stat(Path(self.settings.model.checkpoint) / "model.json").st_mtime
        except OSError:
            return 0.0

    async def _poll_model(self) -> None:
        mtime = self._checkpoint_mtime()
        if mtime == self._model_mtime:
            return
        try:
            # Off the event loop (reading, hashing and checking a checkpoint takes seconds for a
            # large one), and so is embedding the catalog under it below: only the swap, between
            # two batches, runs on the loop.
            model = await asyncio.to_thread(load_model, self.settings.model.checkpoint)
        except CheckpointError as exc:
            # Not marked as seen: a checkpoint still being copied in is retried on the next poll.
            self.metrics.inc("model_load_failures")
            log.error(
                "refusing new checkpoint, still serving %s: %s", self.recommender.model_version, exc
            )
            return
        self._model_mtime = mtime
        if model is not None and model.model_version != self.recommender.model_version:
            catalog = self.recommender.catalog
            snapshot = catalog.snapshot()
            try:
                vectors = await asyncio.to_thread(embed, model, snapshot)
            except Exception:
                catalog.drop_snapshot()
                self.metrics.inc("model_load_failures")
                log.exception("could not embed the catalog under model %s", model.model_version)
                return
            log.info(
                "serving model %s (was %s)", model.model_version, self.recommender.model_version
            )
            self.recommender.set_model(model, prepared=(snapshot, vectors))
            self.metrics.inc("model_loads")
            await self._refreeze()  # the old model's objects go, the new one's are frozen

    # -- web ------------------------------------------------------------------------------------

    def gauges(self) -> dict[str, float]:
        enc = self.recommender.encoder
        g: dict[str, float] = {
            "catalog_items": float(len(self.recommender.catalog.index)),
            "catalog_ready": float(self.catalog.ready.is_set()),
            "batcher_pending": float(len(self.batcher)),
            "batcher_batches": float(self.batcher.batches),
            "batcher_behind_batches": float(self.batcher.behind_batches),
            "popularity_items": float(len(self.recommender.popularity)),
            "popularity_dropped": float(self.recommender.popularity.dropped),
            "catalog_unlisted_rows": float(len(self.recommender.catalog.unlisted)),
            "unlisted_rows_reused": float(self.recommender.catalog.unlisted_reused),
            "covisit_items": float(len(self.recommender.covisit)),
            "covisit_pairs_added": float(self.recommender.covisit.pairs_added),
            "covisit_items_dropped": float(self.recommender.covisit.items_dropped),
            "merge_pending": float(len(self.merge)),
            "acks_pending": float(len(self.acks)),
            **self.collector.gauges(),
        }
        g.update({f"merge_{k}": float(v) for k, v in dataclasses.asdict(self.merge.stats).items()})
        retrieval = self.recommender.catalog.retriever.stats
        g.update({f"retrieval_{k}": float(v) for k, v in dataclasses.asdict(retrieval).items()})
        if enc is not None:
            g.update(
                {f"encoder_cache_{k}": float(v) for k, v in dataclasses.asdict(enc.stats).items()}
            )
            g["encoder_cache_bytes_budget"] = float(enc.capacity * enc.bytes_per_user)
        return g

    def ready(self) -> bool:
        """Serving: catalog loaded, table recovery done, and not in the middle of a rebalance."""
        app = self.app
        recovery = app.tables.recovery  # type: ignore[attr-defined]  # concrete TableManager
        recovered = recovery.completed.is_set() and not app.in_recovery
        serving = self.catalog.ready.is_set() and self._item_graph_ready()
        return serving and recovered and not app.rebalancing and self.fault is None

    def _live_view(self) -> Any:
        worker = self

        class Live(faust.web.View):
            """Liveness: the event loop answers. Recovery, a rebalance or a graph build make the
            worker unready (/health/), never dead; only a fault of its own does."""

            async def get(self, request: Any) -> Any:
                alive = worker.fault is None
                return self.json(
                    {"alive": alive, "fault": worker.fault}, status=200 if alive else 500
                )

        return Live

    def _health_view(self) -> Any:
        worker = self

        class Health(faust.web.View):
            async def get(self, request: Any) -> Any:
                ready = worker.ready()
                return self.json(
                    {
                        "status": "ok" if ready else "fault" if worker.fault else "starting",
                        "fault": worker.fault,
                        "model_version": worker.recommender.model_version,
                        "catalog_items": len(worker.recommender.catalog.index),
                        "popularity_items": len(worker.recommender.popularity),
                        "partitions": worker.event_partitions(),
                        # read and not yet done (applied and listed, or dead-lettered): 0 with
                        # events_in at the sent count means the worker has caught up
                        "events_pending": len(worker.acks),
                        "metrics": worker.metrics.snapshot(),
                    },
                    status=200 if ready else 503,
                )

        return Health

    def consumer_lag(self) -> list[tuple[str, int, int]]:
        """(topic, partition, records not read yet) for each event-topic partition owned, as far
        as the consumer's last fetch knows the partition's end."""
        topics = set(self.settings.topics.event_topics().values())
        out = []
        for tp in sorted(self.app.assignor.assigned_actives()):
            if tp.topic in topics and (unread := self._unread(tp)) is not None:
                out.append((tp.topic, tp.partition, unread))
        return out

    def event_partitions(self) -> list[int]:
        """The event-topic partitions this worker owns (the same numbers on all three topics:
        they are co-partitioned), so the users whose state it holds."""
        topics = set(self.settings.topics.event_topics().values())
        assigned = self.app.assignor.assigned_actives()
        return sorted({tp.partition for tp in assigned if tp.topic in topics})

    def _neighbours_view(self) -> Any:
        worker = self

        class NeighboursView(faust.web.View):
            async def get(self, request: Any, item_id: str) -> Any:
                # This worker's co-visitation counts: over the users of its partitions only.
                cv = worker.recommender.covisit
                return self.json(
                    {
                        "item_id": item_id,
                        "neighbours": [[i, w] for i, w in cv.neighbours(item_id)],
                        "decay_t0": cv.t0,
                        "half_life_s": cv.config.half_life_s,
                        "partitions": worker.event_partitions(),
                    }
                )

        return NeighboursView

    def _user_view(self) -> Any:
        worker = self

        class UserView(faust.web.View):
            async def get(self, request: Any, user_id: str) -> Any:
                app = worker.settings.app
                refused = user_data_refusal(
                    app.web_host, app.web_token, request.headers.get("Authorization")
                )
                if refused is not None:
                    return self.json({"error": refused}, status=401 if app.web_token else 403)
                # Only users of the partitions this worker owns are found here.
                raw = worker.users.get(user_id.encode())
                if raw is None:
                    return self.json({"user_id": user_id, "found": False}, status=404)
                state = UserState.from_bytes(raw)
                return self.json(
                    {"user_id": user_id, "found": True, **state.summary(worker.feature_limits)}
                )

        return UserView

    def _metrics_view(self) -> Any:
        worker = self

        class MetricsView(faust.web.View):
            async def get(self, request: Any) -> Any:
                body = worker.metrics.prometheus(worker.gauges(), worker.consumer_lag())
                return self.bytes(body, content_type=PROMETHEUS_CONTENT_TYPE)

        return MetricsView


def split_forgets(items: list[Job | Forget]) -> tuple[list[Job], list[str]]:
    """A batch's jobs to rank, in order, and the users to send tombstones for: a job of a user
    with a forget request later in the batch is dropped (its list would show what is being
    forgotten); jobs after the request are kept (a new history), and go out after the
    tombstone."""
    jobs: list[Job] = []
    forgets: list[str] = []
    forgotten_later: set[str] = set()
    for item in reversed(items):
        if isinstance(item, Forget):
            if item.user_id not in forgotten_later:
                forgets.append(item.user_id)
            forgotten_later.add(item.user_id)
        elif item.event.user_id not in forgotten_later:
            jobs.append(item)
    jobs.reverse()
    forgets.reverse()
    return jobs, forgets


def _forget_key(key: bytes | None, max_length: int) -> str | Rejection:
    """The user id a forget request names (its key), as events name it."""
    if key is None:
        return Rejection("missing_key", "a forget request needs the user id as its key")
    try:
        user = key.decode("utf-8")
    except UnicodeDecodeError:
        return Rejection("key_mismatch", "the key of a forget request is not valid UTF-8")
    if not user.strip():
        return Rejection("empty_field", "the key of a forget request is empty")
    if len(user) > max_length:
        return Rejection(
            "too_large", f"the user id of a forget request is over {max_length} characters"
        )
    return user
