"""The event and item contract shared by every layer (see docs/events.md).

Behavior events are keyed by user id and carry JSON values; the topic an event arrives on names
its type. Items are keyed by item id on a compacted catalog topic.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Order matters: the index is the event-type code the encoder embeds.
EVENT_TYPES: tuple[str, ...] = ("browse", "click", "purchase")
EVENT_TYPE_CODE: dict[str, int] = {name: code for code, name in enumerate(EVENT_TYPES)}


@dataclass(frozen=True, slots=True)
class Event:
    """One validated behavior event."""

    event_id: str
    user_id: str
    item_id: str
    type: str
    ts: float  # event time, seconds since the Unix epoch
    context: dict[str, Any] | None = None

    @property
    def type_code(self) -> int:
        return EVENT_TYPE_CODE[self.type]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "event_id": self.event_id,
            "user_id": self.user_id,
            "item_id": self.item_id,
            "type": self.type,
            "ts": self.ts,
        }
        if self.context is not None:
            out["context"] = self.context
        return out


@dataclass(frozen=True, slots=True)
class Item:
    """One catalog entry."""

    item_id: str
    category: str
    price: float
    title: str = ""
    available: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "item_id": self.item_id,
            "category": self.category,
            "price": self.price,
            "title": self.title,
            "available": self.available,
        }
        out.update(self.extra)
        return out
