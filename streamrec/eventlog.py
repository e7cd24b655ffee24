"""Event-log and item-catalog files: JSON Lines, gzip when the name ends in ``.gz``.

The format is described in docs/events.md ("Files"). Readers check only what every consumer of a
file relies on (a JSON object per line with the required fields); full validation of values is
the job of the event validator.
"""

from __future__ import annotations

import gzip
import io
import math
import os
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson

from streamrec.atomic import replacing
from streamrec.events.schema import EVENT_TYPES

PathLike = str | os.PathLike[str]

EVENT_FIELDS: tuple[str, ...] = ("event_id", "user_id", "item_id", "ts", "type")
ITEM_FIELDS: tuple[str, ...] = ("item_id", "category", "price")

_GZIP_LEVEL = 6  # level 9 costs ~3x the time for a few percent on JSON Lines
_WRITE_CHUNK = 4096  # lines joined per write call
# Numpy scalars are common in generated or computed records; write them as plain numbers.
_DUMP_OPTIONS = orjson.OPT_APPEND_NEWLINE | orjson.OPT_SERIALIZE_NUMPY


class EventLogError(ValueError):
    """A file line (1-based) that is not a usable record."""

    def __init__(self, path: PathLike, line: int, message: str) -> None:
        super().__init__(f"{os.fspath(path)}:{line}: {message}")
        self.path = os.fspath(path)
        self.line = line


def _is_gzip(path: PathLike) -> bool:
    return os.fspath(path).endswith(".gz")


def _open_read(path: PathLike) -> io.BufferedIOBase:
    return gzip.open(path, "rb") if _is_gzip(path) else open(path, "rb")


def _read_objects(
    path: PathLike, required: tuple[str, ...], check: Callable[[dict[str, Any]], str | None]
) -> Iterator[dict[str, Any]]:
    lineno = 0
    with _open_read(path) as f:
        lines = iter(f)
        while True:
            try:
                line = next(lines)
            except StopIteration:
                return
            except (EOFError, gzip.BadGzipFile, zlib.error) as e:
                # A writer that died mid-file leaves a truncated stream; say where it stops.
                raise EventLogError(path, lineno + 1, f"corrupt or truncated gzip ({e})") from e
            lineno += 1
            if not line.strip():
                continue
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError as e:
                raise EventLogError(path, lineno, f"invalid JSON: {e}") from None
            if not isinstance(obj, dict):
                raise EventLogError(path, lineno, f"expected a JSON object, got {_kind(obj)}")
            missing = [k for k in required if k not in obj]
            if missing:
                raise EventLogError(path, lineno, f"missing field(s) {', '.join(missing)}")
            problem = check(obj)
            if problem:
                raise EventLogError(path, lineno, problem)
            yield obj


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", str: "a string", list: "an array"}.get(type(value), "a number")


def _event_problem(event: Mapping[str, Any]) -> str | None:
    if event["type"] not in EVENT_TYPES:
        return f"type must be one of {', '.join(EVENT_TYPES)}, got {event['type']!r}"
    return None


def _no_problem(_: Mapping[str, Any]) -> None:
    return None


def read_events(path: PathLike) -> Iterator[dict[str, Any]]:
    """Yield the events of a log file in file order.

    Raises EventLogError (a ValueError naming the file and line) on a line that is not a JSON
    object with event_id, user_id, item_id, ts and a known type. Blank lines are skipped.
    """
    return _read_objects(path, EVENT_FIELDS, _event_problem)


def read_items(path: PathLike) -> Iterator[dict[str, Any]]:
    """Yield the items of a catalog file; EventLogError on a malformed line."""
    return _read_objects(path, ITEM_FIELDS, _no_problem)


def _check_event(n: int, event: Mapping[str, Any]) -> None:
    missing = [k for k in EVENT_FIELDS if k not in event]
    if missing:
        raise ValueError(f"event #{n}: missing field(s) {', '.join(missing)}")
    problem = _event_problem(event)
    if problem:
        raise ValueError(f"event #{n}: {problem}")
    _check_number(f"event #{n}", "ts", event["ts"])


def _check_item(n: int, item: Mapping[str, Any]) -> None:
    missing = [k for k in ITEM_FIELDS if k not in item]
    if missing:
        raise ValueError(f"item #{n}: missing field(s) {', '.join(missing)}")
    _check_number(f"item #{n}", "price", item["price"])


def _check_number(where: str, name: str, value: Any) -> None:
    # orjson writes NaN/inf as null, which would turn a bug into a silently corrupt file.
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{where}: {name} must be a finite number, got {value!r}")


def _write_objects(
    path: PathLike,
    records: Iterable[Mapping[str, Any]],
    check: Callable[[int, Mapping[str, Any]], None],
) -> int:
    target = Path(path)
    count = 0
    with replacing(target) as tmp, open(tmp, "wb") as raw:
        out: io.BufferedIOBase = raw
        if _is_gzip(target):
            # mtime=0 and a fixed name make the bytes depend on the content only.
            out = gzip.GzipFile(
                filename=target.name, mode="wb", fileobj=raw, compresslevel=_GZIP_LEVEL, mtime=0
            )
        with out:
            buf: list[bytes] = []
            for count, record in enumerate(records, 1):
                check(count, record)
                obj = record if isinstance(record, dict) else dict(record)
                try:
                    buf.append(orjson.dumps(obj, option=_DUMP_OPTIONS))
                except orjson.JSONEncodeError as e:
                    raise ValueError(f"record #{count}: not JSON-serializable ({e})") from e
                if len(buf) >= _WRITE_CHUNK:
                    out.write(b"".join(buf))
                    buf.clear()
            out.write(b"".join(buf))
    return count


def write_events(path: PathLike, events: Iterable[Mapping[str, Any]]) -> int:
    """Write events (each with its type) as JSON Lines; returns the number written.

    The file appears atomically; ``.gz`` paths are gzip-compressed.
    """
    return _write_objects(path, events, _check_event)


def write_items(path: PathLike, items: Iterable[Mapping[str, Any]]) -> int:
    """Write catalog items as JSON Lines; returns the number written."""
    return _write_objects(path, items, _check_item)
