"""The offline reference: the worker's per-event logic run over an event log with no Kafka.

Each message goes through the same steps as in ``streams.worker.Worker.handle``: validation
(rejections counted by code, as the dead-letter topic would hold them), the user-state fold with
its event-id de-duplication, item popularity; then every user's last list is built from their
final state by the same ``Recommender``. Fault tests compare a live run's tables and last lists
with this; analysts get the expected outcome of a replay before running it.

Per-user state depends on the order a user's events arrive in. Live, a user's events of one type
keep their order (one topic partition), but the three types' topics are consumed independently;
feed the reference the order the live run saw, or compare order-free aspects (counts, event ids).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from encoders.checkpoint import TrainedModel
from streamrec.events.schema import Event, Item
from streamrec.events.validate import Limits, Message, Rejection, validate_message
from streamrec.features.user_state import FeatureLimits, UserState
from streamrec.recommend.engine import Recommender
from streamrec.settings import Settings


@dataclass
class ReferenceRun:
    states: dict[str, UserState] = field(default_factory=dict)
    last_event: dict[str, Event] = field(default_factory=dict)
    lists: dict[str, dict[str, Any]] = field(default_factory=dict)
    accepted: int = 0
    duplicates: int = 0
    rejected: Counter[str] = field(default_factory=Counter)

    @property
    def processed(self) -> int:
        return self.accepted + self.duplicates + sum(self.rejected.values())

    def table(self) -> dict[bytes, bytes]:
        """The users table as the worker stores it (key: user id bytes, value: state bytes)."""
        return {u.encode(): s.to_bytes() for u, s in self.states.items()}


def run_reference(
    messages: Iterable[Message],
    settings: Settings,
    model: TrainedModel | None = None,
    items: Sequence[Item] = (),
    now: float | None = None,
) -> ReferenceRun:
    """Fold ``messages`` in order; then one list per user from their final state."""
    limits = Limits.from_settings(settings.validation)
    flimits = FeatureLimits.from_settings(settings.features)
    recommender = Recommender(settings, model)
    if items:
        recommender.upsert_items(items)
    run = ReferenceRun()
    for msg in messages:
        parsed = validate_message(msg, limits, now)
        if isinstance(parsed, Rejection):
            run.rejected[parsed.code] += 1
            continue
        state = run.states.setdefault(parsed.user_id, UserState())
        if not state.apply(parsed, flimits):
            run.duplicates += 1
            continue
        run.accepted += 1
        recommender.observe(parsed, state)
        run.last_event[parsed.user_id] = parsed
    users = sorted(run.last_event)
    jobs = [recommender.job(run.last_event[u], run.states[u]) for u in users]
    batch = settings.recs.batch_max
    for s in range(0, len(jobs), batch):
        for rec in recommender.recommend(jobs[s : s + batch], now=now):
            run.lists[rec["user_id"]] = rec
    return run
