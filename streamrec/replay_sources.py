"""What `streamrec replay` reads: the project's event files or a public log, as event dicts.

Project formats carry the event fields themselves (docs/events.md): JSON Lines (``.gz`` too),
CSV and Parquet with the fields as columns (``context`` only in JSON Lines). Public formats go
through the ``streamrec.datasets`` readers; each record becomes an event whose id is
``{tag}:{position}``, the source's tag and the record's row in the file, so every read of a file
gives the same ids and a rerun is recognised as duplicates by the workers.

Order: ``"time"`` sorts by ts, stably (ties keep file order; each user's events come out as
training sees them); it holds the whole source in memory. ``"file"`` streams. Sources without
timestamps (SASRec text) replay in file order with ts = SYNTHETIC_EPOCH + the event's step in
its user's sequence (seconds), a fixed, valid event time.
"""

from __future__ import annotations

import csv
import gzip
import itertools
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from streamrec.atomic import replacing
from streamrec.datasets.base import Interaction
from streamrec.datasets.formats import iter_parquet, open_text
from streamrec.datasets.registry import DATASETS, HAS_TIMES, READERS, resolve
from streamrec.eventlog import EVENT_FIELDS, EventLogError, read_events
from streamrec.events.schema import EVENT_TYPES

PROJECT_FORMATS: tuple[str, ...] = ("jsonl", "csv", "parquet")
FORMATS: tuple[str, ...] = (*PROJECT_FORMATS, *READERS)
ORDERS: tuple[str, ...] = ("time", "file")
# 2020-01-01T00:00:00Z: after the workers' 2000-01-01 floor, long enough ago to read as history.
SYNTHETIC_EPOCH = 1_577_836_800.0

_SUFFIX_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet"}


@dataclass(frozen=True)
class ReplaySource:
    """A file and how to read it. tag prefixes the event ids of public formats."""

    path: Path
    format: str
    tag: str
    has_times: bool = True

    def read(self) -> Iterator[dict[str, Any]]:
        """The source's events in file order."""
        if self.format == "jsonl":
            return read_events(self.path)
        if self.format == "csv":
            return read_csv_events(self.path)
        if self.format == "parquet":
            return read_parquet_events(self.path)
        return events_from_interactions(
            READERS[self.format](self.path, {}), self.tag, self.has_times
        )

    def events(
        self, order: str | None = None, limit: int | None = None
    ) -> tuple[Iterator[dict[str, Any]], int]:
        """The events to replay and how many there are (in file order, counted from the rows
        without parsing them: an upper bound where the format skips rows). order defaults to
        "time" where the source has timestamps, else "file"; limit keeps the first events of
        that order."""
        order = order or ("time" if self.has_times else "file")
        if order not in ORDERS:
            raise ValueError(f"order must be one of {', '.join(ORDERS)}, got {order!r}")
        if order == "time" and not self.has_times:
            raise ValueError(
                f"{self.path}: {self.format} has no timestamps; replay it in file order"
            )
        if order == "file":
            events, total = self.read(), self.count()
        elif self.format in PROJECT_FORMATS:
            ordered = sorted(self.read(), key=_ts)
            events, total = iter(ordered), len(ordered)
        else:
            # Sorting the compact records and building dicts on the way out keeps memory lower.
            records = sorted(READERS[self.format](self.path, {}), key=_record_ts)
            events = events_from_interactions(records, self.tag, self.has_times)
            total = len(records)
        if limit is not None:
            events = itertools.islice(events, limit)
            total = min(total, limit)
        return events, total

    def count(self) -> int:
        """Rows in the file, read cheaply (no parsing): Parquet metadata, else data lines."""
        if self.format == "parquet" or ".parquet" in self.path.name:
            import pyarrow.parquet as pq

            return int(pq.ParquetFile(self.path).metadata.num_rows)
        with open_text(self.path) as f:
            lines = sum(1 for _ in f)
        has_header = self.format in ("csv", "recbole", "trivago", "yoochoose")
        return max(lines - has_header, 0)


def open_source(
    name_or_path: str,
    fmt: str | None = None,
    root: str | os.PathLike[str] | None = None,
    tag: str | None = None,
) -> ReplaySource:
    """A registered dataset name (read under the data root) or a file, with its format (guessed
    from a .jsonl/.ndjson/.csv/.parquet suffix, optionally .gz, when not given). tag defaults
    to the dataset name or the file name."""
    if fmt == "events":  # the registry's name for the project's JSON Lines log
        fmt = "jsonl"
    if fmt is not None and fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")
    if fmt is None and name_or_path in DATASETS:
        spec, path = resolve(name_or_path, root=root)
        fmt = "jsonl" if spec.format == "events" else spec.format
        return ReplaySource(path, fmt, tag or spec.name, HAS_TIMES[spec.format])
    path = Path(name_or_path)
    if not path.exists():
        known = ", ".join(sorted(DATASETS))
        raise FileNotFoundError(f"{name_or_path!r} is neither a file nor a dataset name ({known})")
    fmt = fmt or _guess_format(path)
    return ReplaySource(path, fmt, tag or path.name, HAS_TIMES.get(fmt, True))


def _guess_format(path: Path) -> str:
    suffixes = [s for s in path.suffixes if s != ".gz"]
    fmt = _SUFFIX_FORMATS.get(suffixes[-1]) if suffixes else None
    if fmt is None:
        raise ValueError(f"{path}: give its format ({', '.join(FORMATS)})")
    return fmt


def events_from_interactions(
    records: Iterable[Interaction], tag: str, has_times: bool = True
) -> Iterator[dict[str, Any]]:
    """Public-format records as events with ids ``{tag}:{position}``."""
    base = 0.0 if has_times else SYNTHETIC_EPOCH
    types = EVENT_TYPES
    for r in records:
        yield {
            "event_id": f"{tag}:{r.position}",
            "user_id": r.user_id,
            "item_id": r.item_id,
            "type": types[r.type_code],
            "ts": base + r.ts,
        }


def _ts(event: Mapping[str, Any]) -> float:
    return float(event["ts"])


def _record_ts(record: Interaction) -> float:
    return record.ts


def read_csv_events(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Events from a CSV (``.gz`` too) whose header names at least the event fields; other
    columns are ignored. Ids stay strings (an integer id means its decimal string anyway)."""
    with open_text(path) as f:
        rows = csv.reader(f)
        header = next(rows, [])
        missing = [c for c in EVENT_FIELDS if c not in header]
        if missing:
            raise EventLogError(path, 1, f"missing column(s) {', '.join(missing)}")
        index = [header.index(c) for c in EVENT_FIELDS]
        for row in rows:
            if row:
                yield _event(path, rows.line_num, [row[i] for i in index])


def read_parquet_events(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Events from a Parquet file with the event fields as columns (others are ignored)."""
    for n, row in enumerate(iter_parquet(path, list(EVENT_FIELDS)), 1):
        yield _event(path, n, list(row))


def _event(path: str | os.PathLike[str], where: int, row: list[Any]) -> dict[str, Any]:
    event = dict(zip(EVENT_FIELDS, row, strict=True))
    if event["type"] not in EVENT_TYPES:
        raise EventLogError(path, where, f"type must be one of {', '.join(EVENT_TYPES)}")
    try:
        event["ts"] = float(event["ts"])
    except (TypeError, ValueError):
        raise EventLogError(path, where, f"ts is not a number: {event['ts']!r}") from None
    return event


def write_table(path: str | os.PathLike[str], events: Iterable[Mapping[str, Any]]) -> int:
    """Write events as CSV or Parquet (by the name's suffix) with the event fields as columns;
    context is dropped. The file appears atomically. Returns the number written."""
    target = Path(path)
    fmt = _guess_format(target)
    rows = [[e[c] for c in EVENT_FIELDS] for e in events]
    with replacing(target) as tmp:
        if fmt == "csv":
            with _open_text_write(tmp, gz=target.name.endswith(".gz")) as f:
                w = csv.writer(f, lineterminator="\n")
                w.writerow(EVENT_FIELDS)
                w.writerows(rows)
        elif fmt == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            columns = list(zip(*rows, strict=True)) if rows else [()] * len(EVENT_FIELDS)
            table = pa.table(
                {
                    name: pa.array(
                        [float(v) for v in col] if name == "ts" else [str(v) for v in col],
                        type=pa.float64() if name == "ts" else pa.string(),
                    )
                    for name, col in zip(EVENT_FIELDS, columns, strict=True)
                }
            )
            pq.write_table(table, tmp)
        else:
            raise ValueError(f"{target}: write_table writes .csv or .parquet, not {fmt}")
    return len(rows)


def _open_text_write(path: Path, gz: bool) -> IO[str]:
    if gz:
        return gzip.open(path, "wt", encoding="utf-8", newline="")
    return open(path, "w", encoding="utf-8", newline="")
