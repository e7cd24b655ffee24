"""A Faust consumer whose seek to committed offsets is the single source of truth for where a
stream partition resumes after a rebalance.

Three faust-streaming 0.15.3 + aiokafka 0.14 races it closes (reproduced by
``tests/integration/test_broker.py::test_faust_backlog_during_table_recovery``,
``tests/integration/test_session_expiry.py`` and ``tests/faults``):

1. **Resume before seek.** After table recovery Faust *first* resumes the stream partitions and
   *then* seeks them to their committed offsets (``Recovery.on_recovery_completed``). aiokafka
   prefetches every assigned partition, so while the seek is in flight the backlog prefetched
   during recovery is handed to the agent. The seek then resets Faust's read offsets under the
   records being processed: later records look like a jump and the skipped range is filed as an
   already-acked "gap" (lost), records re-fetched after the seek fall below the read offset and
   are dropped, and a partition's commits stall for good. Here a resumed stream partition is
   *held* out of the active set until the seek has completed, and aiokafka gets a snapshot of
   the active set, never an empty one (which it reads as "every partition").
2. **A seek that skips partitions with nothing committed.** aiokafka's ``seek_to_committed``
   leaves a partition with no committed offset where it is, and Faust records nothing for it.
   Records that Faust fetched and then dropped (it drops a batch that returns while the flow is
   stopped for a rebalance, and "seeks back") were therefore never re-read: a worker whose
   offsets were not yet committed when it lost its group session (frozen, then continued)
   skipped them, and, once such a partition had no new traffic, its committed offset never
   moved again. Here such partitions are sought to the reset policy's offset explicitly.
3. **Bookkeeping from a dead generation.** A commit that failed (the member had been expelled)
   still updates Faust's memory of committed offsets, and records fetched before a rebalance
   are acked after it. Both leaked into the new generation: an offset "committed" that the
   broker never stored made Faust refuse acks below it. Here the seek overwrites that memory
   with the broker's answer, and acks of records from an earlier generation are not counted
   (their partitions are re-read from the committed offset anyway: at-least-once, and the
   worker's effects are idempotent).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

from faust.transport.consumer import RecordMap, ensure_TP
from faust.transport.drivers.aiokafka import Consumer as AIOKafkaConsumer
from faust.types import TP, Message

logger = logging.getLogger(__name__)


class SeekFirstConsumer(AIOKafkaConsumer):
    """``Consumer`` whose stream partitions start flowing only after their seek."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._held: set[TP] = set()
        self._seeks = 0  # seeks started so far: a fetch that spans one is not trusted
        # where each stream partition resumed at its last seek (the next offset to read)
        self.start_offsets: dict[TP, int] = {}
        super().__init__(*args, **kwargs)

    # -- holding resumed stream partitions until their seek ------------------------------------

    def _hold(self, tps: Iterable[TP]) -> set[TP]:
        """The stream partitions among ``tps``, now held (changelogs pass)."""
        streams = {tp for tp in tps if not self._is_changelog_tp(tp)}
        self._held |= streams
        return streams

    def _set_active_tps(self, tps: set[TP]) -> set[TP]:
        active = super()._set_active_tps(tps)
        # at assignment every assigned partition becomes active until the app pauses them
        active.difference_update(self._hold(active))
        return active

    def resume_partitions(self, tps: Iterable[TP]) -> None:
        tps = set(tps)
        streams = self._hold(tps)
        # not paused any more, but not fetched from either until seeked
        self._paused_partitions.difference_update(streams)
        super().resume_partitions(tps - streams)

    def pause_partitions(self, tps: Iterable[TP]) -> None:
        tps = set(tps)
        self._held.difference_update(tps)
        super().pause_partitions(tps)

    # -- fetching -------------------------------------------------------------------------------

    async def _getmany(self, active_partitions: set[TP] | None, timeout: float) -> RecordMap:
        # Faust passes its live set of active partitions, which aiokafka reads later, on its own
        # thread, and reads an EMPTY set as "every assigned partition": a fetch queued while the
        # set had only changelogs could drain the held stream partitions after their seek (moving
        # their positions past records Faust then skips). Hand it a snapshot, never an empty one.
        if active_partitions is not None:
            active_partitions = set(active_partitions)
            if not active_partitions:
                return {}
        seeks = self._seeks
        records = await super()._getmany(active_partitions, timeout)
        if self._seeks != seeks:
            # A seek ran while this fetch was out: its stream records may come from the positions
            # before it. None has been delivered since the seek, so seeking again is exact.
            # (Changelog positions are the recovery's, which no seek to committed moves.)
            stale = [tp for tp in records if not self._is_changelog_tp(tp)]
            if stale:
                logger.info(
                    "a fetch spanned seek %d: seeking again (%d partitions)", seeks + 1, len(stale)
                )
                records = {tp: rs for tp, rs in records.items() if tp not in stale}
                try:
                    await self.perform_seek()
                except Exception as exc:  # a rebalance under way: its own seek follows
                    logger.warning("seek after a fetch that spanned a seek failed: %r", exc)
        return records

    # -- seeking --------------------------------------------------------------------------------

    async def perform_seek(self) -> None:
        self._seeks += 1
        started = time.monotonic()
        try:
            committed = await self.seek_to_committed()
            unset = {
                ensure_TP(tp)
                for tp, offset in committed.items()
                if not offset and not self._is_changelog_tp(ensure_TP(tp))
            }
            reset = await self._seek_to_reset_policy(unset) if unset else {}
            self._remember_offsets(committed, reset)
            logger.info(
                "seek %d (%.3f s): %d partitions at their committed offsets, %d with none"
                " committed at %s",
                self._seeks,
                time.monotonic() - started,
                sum(1 for offset in committed.values() if offset),
                len(reset),
                self.app.conf.consumer_auto_offset_reset,
            )
        finally:
            # Also when the seek failed or was cancelled: holding on would stall the partitions
            # for good, which is worse than Faust's own order. A rebalance meanwhile pauses (and
            # so releases from the hold) whatever it reassigns.
            held, self._held = self._held & set(self.assignment()), set()
            if held:
                super().resume_partitions(held)

    async def _seek_to_reset_policy(self, tps: set[TP]) -> Mapping[TP, int]:
        """Seek partitions with no committed offset to where the reset policy starts them."""
        if self.app.conf.consumer_auto_offset_reset == "latest":
            offsets = await self.highwaters(*tps)
        else:
            offsets = await self.earliest_offsets(*tps)
        offsets = {tp: offset for tp, offset in offsets.items() if offset is not None}
        await self.seek_wait(offsets)
        return offsets

    def _remember_offsets(
        self, committed: Mapping[TP, int | None], reset: Mapping[TP, int]
    ) -> None:
        """Make Faust's memory of read and committed offsets the broker's answer."""
        for raw_tp, offset in committed.items():
            tp = ensure_TP(raw_tp)
            if not self._is_changelog_tp(tp):
                start = offset or reset.get(tp)
                if start is not None:
                    self.start_offsets[tp] = start
            if offset:
                self._read_offset[tp] = offset
                self._committed_offset[tp] = offset
            elif tp in reset:
                # nothing committed: the partition restarts at the policy's offset, and any
                # memory of an earlier commit (one that failed, or another generation's) goes
                self._read_offset[tp] = None
                self._committed_offset[tp] = None
            else:  # changelogs: Faust's own rule (their offsets live in the table's store)
                self._read_offset[tp] = offset if offset is not None and offset >= 0 else None

    # -- acking ---------------------------------------------------------------------------------

    def ack(self, message: Message) -> bool:
        generation = getattr(message, "generation_id", None)
        if generation is not None and generation != self.app.consumer_generation_id:
            # Fetched before the last rebalance, which revoked its partition: that partition is
            # re-read from its committed offset, so this ack must not move the new generation's.
            message.acked = True
            self._unacked_messages.discard(message)
            return False
        return bool(super().ack(message))
