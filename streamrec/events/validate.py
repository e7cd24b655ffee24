"""Turn raw Kafka message bytes into a validated Event or Item, or a Rejection with a reason.

Pure functions with no Kafka in them: the worker, replay and the offline reference all call these,
so a message is judged the same way everywhere.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import orjson

from streamrec.events.schema import EVENT_TYPES, Event, Item

if TYPE_CHECKING:
    from streamrec.settings import ValidationSettings

MIN_TS = 946684800.0  # 2000-01-01: anything earlier is a unit mistake (ms vs s) or garbage


@dataclass(frozen=True, slots=True)
class Limits:
    max_bytes: int = 16384
    max_future_skew_s: float = 86400.0
    max_context_depth: int = 4
    max_id_length: int = 128

    @classmethod
    def from_settings(cls, v: ValidationSettings, *, items: bool = False) -> Limits:
        """The limits for events (or, with ``items``, catalog records) from ``[validation]``."""
        size = v.max_item_bytes if items else v.max_event_bytes
        return cls(size, v.max_future_skew_s, v.max_context_depth, v.max_id_length)


class Message(NamedTuple):
    """One record as a worker consumes it: the event type its topic stands for, key, value."""

    event_type: str
    key: bytes | None
    value: bytes | None


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a message was refused. ``code`` is stable (DLQ header ``dlq.error``)."""

    code: str
    reason: str


def _decode(raw: bytes | None, limits: Limits, what: str) -> dict[str, Any] | Rejection:
    if raw is None:
        return Rejection("missing_value", f"{what} has no value (null message)")
    if len(raw) > limits.max_bytes:
        return Rejection(
            "too_large", f"{what} is {len(raw)} bytes; the limit is {limits.max_bytes}"
        )
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Rejection(
            "invalid_utf8", f"{what} is not valid UTF-8 ({exc.reason} at byte {exc.start})"
        )
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return Rejection("invalid_json", f"{what} is not valid JSON: {exc}")
    if not isinstance(value, dict):
        return Rejection("wrong_type", f"{what} must be a JSON object, got {type(value).__name__}")
    return value


def _id(value: dict[str, Any], name: str, limits: Limits) -> str | Rejection:
    if name not in value or value[name] is None:
        return Rejection("missing_field", f"required field '{name}' is missing")
    v = value[name]
    if isinstance(v, bool) or not isinstance(v, str | int):
        return Rejection("wrong_type", f"'{name}' must be a string, got {type(v).__name__}")
    s = str(v)
    if not s.strip():
        return Rejection("empty_field", f"'{name}' must not be empty")
    if len(s) > limits.max_id_length:
        return Rejection(
            "too_large", f"'{name}' is {len(s)} characters; the limit is {limits.max_id_length}"
        )
    return s


def _depth(value: Any, limit: int) -> bool:
    """True when ``value`` nests deeper than ``limit`` containers (iterative: no recursion bombs)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        v, d = stack.pop()
        if d > limit:
            return True
        if isinstance(v, dict):
            stack.extend((c, d + 1) for c in v.values() if isinstance(c, dict | list))
        elif isinstance(v, list):
            stack.extend((c, d + 1) for c in v if isinstance(c, dict | list))
    return False


def parse_event(
    raw: bytes | None,
    event_type: str,
    key: bytes | None = None,
    limits: Limits = Limits(),
    now: float | None = None,
) -> Event | Rejection:
    """Validate one behavior event that arrived on the topic of ``event_type``."""
    value = _decode(raw, limits, "event")
    if isinstance(value, Rejection):
        return value
    ids: dict[str, str] = {}
    for name in ("event_id", "user_id", "item_id"):
        r = _id(value, name, limits)
        if isinstance(r, Rejection):
            return r
        ids[name] = r
    if "ts" not in value or value["ts"] is None:
        return Rejection("missing_field", "required field 'ts' is missing")
    ts = value["ts"]
    if isinstance(ts, bool) or not isinstance(ts, int | float):
        return Rejection(
            "wrong_type",
            f"'ts' must be a number of seconds since the epoch, got {type(ts).__name__}",
        )
    ts = float(ts)
    if not math.isfinite(ts):
        return Rejection("bad_timestamp", f"'ts' must be finite, got {ts}")
    if ts < MIN_TS:
        return Rejection(
            "bad_timestamp", f"'ts' {ts} is before 2000-01-01 (seconds expected, not ms?)"
        )
    now = time.time() if now is None else now
    if ts > now + limits.max_future_skew_s:
        return Rejection(
            "bad_timestamp",
            f"'ts' {ts} is {ts - now:.0f} s in the future (limit {limits.max_future_skew_s:.0f} s; ms instead of s?)",
        )
    declared = value.get("type")
    if declared is not None and declared != event_type:
        return Rejection(
            "type_mismatch",
            f"'type' is {declared!r} but the event arrived on the {event_type} topic",
        )
    if event_type not in EVENT_TYPES:
        return Rejection("unknown_type", f"unknown event type {event_type!r}")
    context = value.get("context")
    if context is not None:
        if not isinstance(context, dict):
            return Rejection(
                "wrong_type", f"'context' must be a JSON object, got {type(context).__name__}"
            )
        if _depth(context, limits.max_context_depth):
            return Rejection(
                "too_deep", f"'context' nests deeper than {limits.max_context_depth} levels"
            )
    if key is not None:
        try:
            key_s = key.decode("utf-8")
        except UnicodeDecodeError:
            return Rejection("key_mismatch", "message key is not valid UTF-8")
        if key_s != ids["user_id"]:
            # State is partitioned by the key; a mismatch would put this user's state in two places.
            return Rejection(
                "key_mismatch", f"message key {key_s!r} differs from user_id {ids['user_id']!r}"
            )
    return Event(ids["event_id"], ids["user_id"], ids["item_id"], event_type, ts, context)


def parse_item(
    raw: bytes | None,
    key: bytes | None = None,
    limits: Limits = Limits(),
) -> Item | Rejection:
    """Validate one catalog record (a ``None`` value is a tombstone: handle it before calling)."""
    value = _decode(raw, limits, "item")
    if isinstance(value, Rejection):
        return value
    item_id = _id(value, "item_id", limits)
    if isinstance(item_id, Rejection):
        return item_id
    category = value.get("category")
    if category is None:
        return Rejection("missing_field", "required field 'category' is missing")
    if not isinstance(category, str):
        return Rejection(
            "wrong_type", f"'category' must be a string, got {type(category).__name__}"
        )
    if value.get("price") is None:
        return Rejection("missing_field", "required field 'price' is missing")
    price = value["price"]
    if (
        isinstance(price, bool)
        or not isinstance(price, int | float)
        or not math.isfinite(price)
        or price < 0
    ):
        return Rejection("wrong_type", f"'price' must be a finite number >= 0, got {price!r}")
    title = value.get("title", "")
    if not isinstance(title, str):
        return Rejection("wrong_type", f"'title' must be a string, got {type(title).__name__}")
    available = value.get("available", True)
    if not isinstance(available, bool):
        return Rejection("wrong_type", f"'available' must be true or false, got {available!r}")
    if key is not None and key.decode("utf-8", "replace") != item_id:
        return Rejection("key_mismatch", f"message key {key!r} differs from item_id {item_id!r}")
    return Item(item_id, category, float(price), title, available)


def validate_message(msg: Message, limits: Limits, now: float | None = None) -> Event | Rejection:
    """The worker's judgement of one message (a missing key is refused: it names the user): the
    same code for live traffic, replays and the offline reference."""
    if msg.key is None:
        return Rejection("missing_key", "message has no key; the key must be the user id")
    return parse_event(msg.value, msg.event_type, msg.key, limits, now)


def parse_forget_request(value: bytes | None) -> float | Rejection | None:
    """The condition of a forget request: the retention sweep's names the time before which the
    user must have been idle (``{"idle_before": <epoch s>}``, returned); any other request is
    unconditional (None). Workers and the trainer read requests through this one function."""
    if not value:
        return None
    try:
        body = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None  # the value of a plain request is not read
    if not isinstance(body, dict) or "idle_before" not in body:
        return None
    t = body["idle_before"]
    if isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t):
        return Rejection(
            "bad_timestamp", f"'idle_before' of a forget request must be finite seconds, got {t!r}"
        )
    return float(t)
