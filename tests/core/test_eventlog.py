"""Event-log and catalog files: round trips, gzip by suffix, errors that point at the line."""

from __future__ import annotations

import gzip
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

from streamrec.eventlog import (
    EventLogError,
    read_events,
    read_items,
    write_events,
    write_items,
)

EVENTS: list[dict[str, Any]] = [
    {"event_id": "e1", "user_id": "u1", "item_id": "i1", "type": "browse", "ts": 1735689600.5},
    {
        "event_id": "e2",
        "user_id": "u1",
        "item_id": "i1",
        "type": "click",
        "ts": 1735689610,
        "context": {"session": "s1", "tags": ["a", "é"], "nested": {"x": [1, 2.5, None]}},
    },
    {"event_id": "e3", "user_id": "u2", "item_id": "i2", "type": "purchase", "ts": 1735689700.125},
]
ITEMS: list[dict[str, Any]] = [
    {"item_id": "i1", "category": "books", "price": 12.5, "title": "Ünïcode", "available": True},
    {"item_id": "i2", "category": "toys", "price": 0, "available": False},
]
GOOD = b'{"event_id":"e","user_id":"u","item_id":"i","type":"browse","ts":1735689600}\n'


@pytest.mark.parametrize("name", ["events.jsonl", "events.jsonl.gz"])
def test_events_round_trip(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    assert write_events(path, EVENTS) == len(EVENTS)
    assert list(read_events(path)) == EVENTS
    assert list(read_events(str(path))) == EVENTS  # str paths work too


@pytest.mark.parametrize("name", ["items.jsonl", "items.jsonl.gz"])
def test_items_round_trip(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    assert write_items(path, ITEMS) == len(ITEMS)
    assert list(read_items(path)) == ITEMS


def test_gzip_is_chosen_by_suffix(tmp_path: Path) -> None:
    write_events(tmp_path / "a.jsonl.gz", EVENTS)
    write_events(tmp_path / "a.jsonl", EVENTS)
    raw = (tmp_path / "a.jsonl").read_bytes()
    assert gzip.decompress((tmp_path / "a.jsonl.gz").read_bytes()) == raw
    assert raw.count(b"\n") == len(EVENTS)
    # Same content, same bytes: no timestamp in the gzip header.
    (tmp_path / "again").mkdir()
    write_events(tmp_path / "again" / "a.jsonl.gz", EVENTS)
    assert (tmp_path / "a.jsonl.gz").read_bytes() == (tmp_path / "again/a.jsonl.gz").read_bytes()


def test_writers_take_any_mapping_and_iterable(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    assert write_events(path, (MappingProxyType(e) for e in EVENTS)) == len(EVENTS)
    assert list(read_events(path)) == EVENTS
    assert write_events(path, []) == 0
    assert list(read_events(path)) == []


def test_blank_lines_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    path.write_bytes(b"\n" + GOOD + b"   \n" + GOOD)
    assert len(list(read_events(path))) == 2


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b'{"event_id": "e", "user_id": ', "invalid JSON"),
        (b"[1, 2, 3]", "expected a JSON object, got an array"),
        (b'"just a string"', "expected a JSON object, got a string"),
        (b'{"event_id":"e","user_id":"u","type":"browse","ts":1}', "missing field(s) item_id"),
        (b'{"event_id":"e","user_id":"u","item_id":"i","ts":1}', "missing field(s) type"),
        (b'{"event_id":"e","user_id":"u","item_id":"i","type":"view","ts":1}', "'view'"),
        (b"\xff\xfe not utf-8", "invalid JSON"),
    ],
)
@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz"])
def test_malformed_line_names_file_and_line(
    tmp_path: Path, line: bytes, message: str, suffix: str
) -> None:
    path = tmp_path / f"bad{suffix}"
    data = GOOD + b"\n" + GOOD + line + b"\n" + GOOD
    path.write_bytes(gzip.compress(data) if suffix.endswith(".gz") else data)
    reader = read_events(path)
    assert next(reader)["event_id"] == "e"  # lazy: good lines before the bad one are served
    with pytest.raises(EventLogError) as info:
        list(reader)
    assert info.value.line == 4  # 1-based, blank line included
    assert info.value.path == str(path)
    assert str(info.value).startswith(f"{path}:4: ")
    assert message in str(info.value)
    assert isinstance(info.value, ValueError)


def test_item_file_errors(tmp_path: Path) -> None:
    path = tmp_path / "items.jsonl"
    path.write_bytes(b'{"item_id":"i1","category":"c","price":1}\n{"item_id":"i2","price":1}\n')
    with pytest.raises(EventLogError, match=r":2: missing field\(s\) category"):
        list(read_items(path))


def test_truncated_gzip_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "cut.jsonl.gz"
    data = gzip.compress(GOOD * 2000)
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(EventLogError, match="corrupt or truncated gzip"):
        list(read_events(path))


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"event_id": "e", "user_id": "u", "item_id": "i", "ts": 1.0}, "missing field"),
        ({**EVENTS[0], "type": "view"}, "type must be one of"),
        ({**EVENTS[0], "ts": float("nan")}, "finite number"),
        ({**EVENTS[0], "ts": float("inf")}, "finite number"),
        ({**EVENTS[0], "ts": "1735689600"}, "finite number"),
        ({**EVENTS[0], "ts": True}, "finite number"),
    ],
)
def test_write_events_rejects_broken_records(
    tmp_path: Path, bad: dict[str, Any], message: str
) -> None:
    path = tmp_path / "e.jsonl"
    with pytest.raises(ValueError, match=message) as info:
        write_events(path, [*EVENTS, bad])
    assert "event #4" in str(info.value)
    assert list(tmp_path.iterdir()) == []  # neither the target nor a temp file is left


def test_write_items_rejects_broken_records(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"item #1: missing field\(s\) price"):
        write_items(tmp_path / "i.jsonl", [{"item_id": "i", "category": "c"}])
    with pytest.raises(ValueError, match="finite number"):
        write_items(tmp_path / "i.jsonl", [{"item_id": "i", "category": "c", "price": None}])


def test_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl.gz"
    write_events(path, EVENTS)
    before = path.read_bytes()

    def boom() -> Any:
        yield EVENTS[0]
        raise RuntimeError("source died")

    with pytest.raises(RuntimeError, match="source died"):
        write_events(path, boom())
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.jsonl.gz"]


def test_written_file_is_readable_by_others(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    write_events(path, EVENTS)
    assert path.stat().st_mode & 0o444 == 0o444


def test_numpy_numbers_are_written_as_plain_numbers(tmp_path: Path) -> None:
    np = pytest.importorskip("numpy")
    event = {**EVENTS[0], "ts": np.float64(1735689600.5), "context": {"rank": np.int64(3)}}
    write_events(tmp_path / "e.jsonl", [event])
    assert list(read_events(tmp_path / "e.jsonl")) == [
        {**EVENTS[0], "ts": 1735689600.5, "context": {"rank": 3}}
    ]


def test_unserializable_value_names_the_record(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"record #2: not JSON-serializable"):
        write_events(tmp_path / "e.jsonl", [EVENTS[0], {**EVENTS[1], "context": {"s": {1, 2}}}])
    assert list(tmp_path.iterdir()) == []
