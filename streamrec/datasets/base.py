"""The loaded form of an interaction log: per-user time-ordered (item, type code, ts)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

Sequences = dict[str, list[tuple[str, int, float]]]


class Interaction(NamedTuple):
    """One event of a public log, in the project's vocabulary. ``position`` is its 0-based data row
    in the source (rows a reader skips keep their numbers), stable across reads: replay derives
    event ids from it."""

    user_id: str
    item_id: str
    type_code: int  # streamrec.events.schema.EVENT_TYPES index
    ts: float  # seconds; synthetic (the per-user step) where the source has no timestamps
    position: int


@dataclass
class Dataset:
    name: str
    sequences: Sequences
    items: dict[str, dict[str, Any]] = field(default_factory=dict)
    has_types: bool = False  # more than one event type occurs
    has_times: bool = False  # timestamps are real, not per-user steps
    # evaluation removes the user's own history from the ranking (see DatasetSpec)
    exclude_history: bool = True

    @property
    def n_users(self) -> int:
        return len(self.sequences)

    @property
    def n_events(self) -> int:
        return sum(len(s) for s in self.sequences.values())

    @property
    def n_items(self) -> int:
        return len({i for s in self.sequences.values() for i, _, _ in s})

    def describe(self) -> str:
        return (
            f"{self.name}: {self.n_users:,} users, {self.n_items:,} items, "
            f"{self.n_events:,} events"
            + (", typed" if self.has_types else "")
            + (", timestamped" if self.has_times else "")
        )

    def without_types(self) -> Dataset:
        """The same log with every event typed alike (code 0): the event-type ablation."""
        seqs = {u: [(i, 0, ts) for i, _, ts in s] for u, s in self.sequences.items()}
        return Dataset(
            f"{self.name}-untyped", seqs, self.items, False, self.has_times, self.exclude_history
        )


def group_by_user(
    records: Iterable[Interaction], name: str, has_times: bool, min_events: int = 1
) -> Dataset:
    """Per-user sequences sorted by (ts, source position): ties keep the file's order."""
    grouped: dict[str, list[tuple[float, int, str, int]]] = defaultdict(list)
    types: set[int] = set()
    for r in records:
        grouped[r.user_id].append((r.ts, r.position, r.item_id, r.type_code))
        types.add(r.type_code)
    seqs = {
        u: [(item, code, ts) for ts, _, item, code in sorted(evs)]
        for u, evs in grouped.items()
        if len(evs) >= min_events
    }
    return Dataset(name, seqs, has_types=len(types) > 1, has_times=has_times)
