"""A Faust consumer that delivers no stream record of a newly assigned partition before that
partition has been seeked to its committed offset.

The race it closes (faust-streaming 0.15.3 + aiokafka 0.14; reproduced by
``tests/integration/test_broker.py::test_faust_backlog_during_table_recovery`` and by
``tests/faults``): after table recovery Faust *first* resumes the stream partitions and *then*
seeks them to their committed offsets (``Recovery.on_recovery_completed`` /
``_resume_streams``). aiokafka prefetches every assigned partition while Faust only "pauses"
them in its own bookkeeping, and the Fetcher's pending ``getmany`` holds the live set of active
partitions; so while the seek is in flight (one committed-offset request per partition), the
backlog prefetched during recovery is handed to the agent. The seek then resets Faust's read
offsets under the records being processed: later records look like a jump and the skipped range
is filed as an already-acked "gap" (events never processed, yet committed past: lost), records
re-fetched after the seek fall below the read offset and are dropped, and the committed offset
Faust remembers is overwritten with the older value, after which a partition's commits stall
for good. The same window opens at every assignment (the active set is reset to every assigned
partition before the app pauses them).

The fix keeps the order Faust intends: a stream partition that is resumed (or becomes active
at assignment) is held back from the active set until the next seek to committed offsets has
completed; changelog partitions (table recovery) are never held. And aiokafka gets a snapshot of
the active set, never an empty one (which it would read as "all partitions").
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from faust.transport.consumer import RecordMap
from faust.transport.drivers.aiokafka import Consumer as AIOKafkaConsumer
from faust.types import TP

logger = logging.getLogger(__name__)
HOLD_LIMIT_S = 3.0


class SeekFirstConsumer(AIOKafkaConsumer):
    """``Consumer`` whose stream partitions start flowing only after their seek."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._held: set[TP] = set()
        self._held_since = 0.0
        self._seeking = False
        super().__init__(*args, **kwargs)

    def _hold(self, tps: Iterable[TP]) -> set[TP]:
        """The stream partitions among ``tps``, now held (changelogs pass)."""
        streams = {tp for tp in tps if not self._is_changelog_tp(tp)}
        if streams and not self._held:
            self._held_since = time.monotonic()
        self._held |= streams
        return streams

    def _release_stale_hold(self) -> None:
        """A hold lasts as long as one seek. Some paths (a member rejoining after its session
        expired, e.g. a process stopped and continued) hold partitions with no seek to follow;
        left alone they would never flow again. Past HOLD_LIMIT_S with no seek in flight, let
        them go: Faust's own order, which is racy only while a seek is pending."""
        stale = time.monotonic() - self._held_since > HOLD_LIMIT_S
        if self._held and not self._seeking and stale:
            held, self._held = self._held & set(self.assignment()), set()
            if held:
                logger.warning("releasing %d partitions held with no seek to follow", len(held))
                super().resume_partitions(held)

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

    async def _getmany(self, active_partitions: set[TP] | None, timeout: float) -> RecordMap:
        # Faust passes its live set of active partitions, which aiokafka reads later, on its own
        # thread, and reads an EMPTY set as "every assigned partition": a fetch queued while the
        # set had only changelogs could drain the held stream partitions after their seek (moving
        # their positions past records Faust then skips). Hand it a snapshot, never an empty one.
        self._release_stale_hold()
        if active_partitions is not None:
            active_partitions = set(active_partitions)
            if not active_partitions:
                return {}
        return await super()._getmany(active_partitions, timeout)

    async def perform_seek(self) -> None:
        self._seeking = True
        try:
            await super().perform_seek()
        finally:
            self._seeking = False
            # Also when the seek failed or was cancelled: holding on would stall the partitions
            # for good, which is worse than Faust's own order. A rebalance meanwhile pauses (and
            # so releases from the hold) whatever it reassigns.
            held, self._held = self._held & set(self.assignment()), set()
            if held:
                super().resume_partitions(held)
