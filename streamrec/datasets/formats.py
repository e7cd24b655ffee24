"""Readers for the public log formats, each streaming ``Interaction`` records in file order.

Sources without event types give every record type code 0 (browse); sources without timestamps
give each record its step within the user's sequence (0, 1, 2, ... seconds), which keeps the
file's order and makes every gap the same.
"""

from __future__ import annotations

import csv
import gzip
import io
import os
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

from streamrec.datasets.base import Interaction
from streamrec.events.schema import EVENT_TYPE_CODE

PathLike = str | os.PathLike[str]

# Taobao behaviours, strongest intent last: a page view is browsing, cart and favourite are
# explicit interest short of buying (the contract has no separate codes for them), buy is a purchase.
TAOBAO_TYPES: dict[str, int] = {
    "pv": EVENT_TYPE_CODE["browse"],
    "cart": EVENT_TYPE_CODE["click"],
    "fav": EVENT_TYPE_CODE["click"],
    "buy": EVENT_TYPE_CODE["purchase"],
}


class FormatError(ValueError):
    """A line that does not fit the format it was read as."""

    def __init__(self, path: PathLike, line: int, message: str) -> None:
        super().__init__(f"{os.fspath(path)}:{line}: {message}")


def open_text(path: PathLike) -> io.TextIOBase:
    """Text lines of a plain or gzip file (by its ``.gz`` suffix)."""
    if os.fspath(path).endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def _fields(
    path: PathLike, sep: str | None, n: int, skip_header: bool = False
) -> Iterator[list[str]]:
    with open_text(path) as f:
        for lineno, line in enumerate(f, 1):
            if skip_header and lineno == 1:
                continue
            if not line.strip():
                continue
            parts = line.rstrip("\r\n").split(sep)
            if len(parts) < n:
                raise FormatError(path, lineno, f"expected {n} fields, got {len(parts)}: {line!r}")
            yield parts


def _number(path: PathLike, line: int, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise FormatError(path, line, f"not a number: {text!r}") from None


def read_sasrec_text(path: PathLike) -> Iterator[Interaction]:
    """SASRec / BERT4Rec text: ``user item`` per line, each user's lines in time order."""
    step: dict[str, int] = defaultdict(int)
    for pos, parts in enumerate(_fields(path, None, 2)):
        user, item = parts[0], parts[1]
        yield Interaction(user, item, 0, float(step[user]), pos)
        step[user] += 1


def read_movielens_dat(path: PathLike) -> Iterator[Interaction]:
    """MovieLens ``ratings.dat``: ``user::item::rating::timestamp``; every rating is an interaction."""
    for pos, parts in enumerate(_fields(path, "::", 4)):
        yield Interaction(parts[0], parts[1], 0, _number(path, pos + 1, parts[3]), pos)


def read_recbole_inter(path: PathLike) -> Iterator[Interaction]:
    """RecBole atomic ``.inter`` TSV with a typed header (``user_id:token``, ``item_id:token``,
    ``timestamp:float``, ...); columns are found by name."""
    with open_text(path) as f:
        header = f.readline().rstrip("\r\n").split("\t")
    names = [h.split(":", 1)[0] for h in header]
    try:
        cu, ci, ct = names.index("user_id"), names.index("item_id"), names.index("timestamp")
    except ValueError:
        raise FormatError(
            path, 1, f"header needs user_id, item_id and timestamp: {header}"
        ) from None
    for pos, parts in enumerate(_fields(path, "\t", len(names), skip_header=True)):
        yield Interaction(parts[cu], parts[ci], 0, _number(path, pos + 2, parts[ct]), pos)


def read_taobao(
    path: PathLike, items: dict[str, dict[str, Any]] | None = None
) -> Iterator[Interaction]:
    """Taobao ``UserBehavior.csv``: ``user,item,category,behavior,timestamp`` (no header).
    ``items``, when given, collects each item's category."""
    for pos, parts in enumerate(_fields(path, ",", 5)):
        user, item, category, behavior, ts = parts[:5]
        code = TAOBAO_TYPES.get(behavior)
        if code is None:
            raise FormatError(path, pos + 1, f"unknown behavior {behavior!r}")
        if items is not None and item not in items:
            items[item] = {"item_id": item, "category": category}
        yield Interaction(user, item, code, _number(path, pos + 1, ts), pos)


# trivago RecSys Challenge 2019 actions. Looking at a hotel's images is browsing; reading its info,
# ratings or deals, or searching for it by name, is a deliberate step towards it; a click-out to a
# booking site is the conversion trivago sees (the log has no bookings), so it plays the purchase.
# None marks actions whose reference is a filter, destination, point of interest or sort order
# rather than a hotel: they are not interactions with an item and are not yielded.
TRIVAGO_TYPES: dict[str, int | None] = {
    "interaction item image": EVENT_TYPE_CODE["browse"],
    "interaction item info": EVENT_TYPE_CODE["click"],
    "interaction item rating": EVENT_TYPE_CODE["click"],
    "interaction item deals": EVENT_TYPE_CODE["click"],
    "search for item": EVENT_TYPE_CODE["click"],
    "clickout item": EVENT_TYPE_CODE["purchase"],
    "filter selection": None,
    "search for destination": None,
    "search for poi": None,
    "change of sort order": None,
}


def _is_parquet(path: PathLike) -> bool:
    return ".parquet" in os.path.basename(os.fspath(path))


def iter_parquet(path: PathLike, columns: list[str]) -> Iterator[tuple[Any, ...]]:
    """Rows of the named columns of a Parquet file (any codec pyarrow reads, snappy included),
    as tuples in file order; FormatError when a column is missing."""
    import pyarrow.parquet as pq  # imported late: a heavy import only Parquet input needs

    f = pq.ParquetFile(path)
    missing = [c for c in columns if c not in f.schema_arrow.names]
    if missing:
        raise FormatError(path, 0, f"missing column(s) {', '.join(missing)}")
    # Column-wise conversion per batch is several times faster than converting row dicts.
    for batch in f.iter_batches(batch_size=65_536, columns=columns):
        yield from zip(*(batch.column(c).to_pylist() for c in columns), strict=True)


def _csv_columns(
    path: PathLike, delimiter: str, columns: list[str]
) -> Iterator[tuple[int, list[str]]]:
    """(1-based line, the named columns' fields in that order) of each data row after the
    header; a blank line comes as no fields, so callers can still count it as a row."""
    with open_text(path) as f:
        rows = csv.reader(f, delimiter=delimiter)
        header = next(rows, [])
        try:
            index = [header.index(c) for c in columns]
        except ValueError:
            raise FormatError(path, 1, f"header needs {', '.join(columns)}: {header}") from None
        width = max(index) + 1
        for row in rows:
            if not row:
                yield rows.line_num, row
                continue
            if len(row) < width:
                raise FormatError(path, rows.line_num, f"expected {width} fields, got {row!r}")
            yield rows.line_num, [row[i] for i in index]


def read_trivago(path: PathLike) -> Iterator[Interaction]:
    """trivago RecSys Challenge 2019 log (CSV with a header, plain or gzip, or a Parquet copy):
    ``user_id, session_id, timestamp, step, action_type, reference, ...``.

    Actions map to types as in ``TRIVAGO_TYPES``; filter, destination, point-of-interest and
    sort-order actions, and item actions whose reference is ``unknown``, are skipped. ``position``
    is the 0-based data row, counted over skipped rows too, so it names the same row on every read.
    """
    columns = ["user_id", "timestamp", "action_type", "reference"]
    rows: Iterator[tuple[int, Any]]
    if _is_parquet(path):
        # Errors name row + 2: the line the row has in the CSV form (header first).
        rows = ((pos + 2, row) for pos, row in enumerate(iter_parquet(path, columns)))
    else:
        rows = _csv_columns(path, ",", columns)
    for pos, (line, row) in enumerate(rows):
        if not row:
            continue
        user, ts, action, ref = row
        code = TRIVAGO_TYPES.get(action, -1)
        if code == -1:
            raise FormatError(path, line, f"unknown action_type {action!r}")
        # A handful of item actions name no hotel ("unknown"): nothing to record them against.
        if code is None or not ref or ref == "unknown":
            continue
        yield Interaction(str(user), str(ref), code, _number(path, line, ts), pos)


def read_yoochoose(path: PathLike) -> Iterator[Interaction]:
    """YooChoose (RecSys Challenge 2015) clicks as session-rec prepares them: TSV with the header
    ``SessionId ItemId Time`` (Unix seconds with milliseconds). The data has no user ids, so the
    session is the user; every row is a click. ``position`` is the 0-based data row."""
    for pos, (line, row) in enumerate(_csv_columns(path, "\t", ["SessionId", "ItemId", "Time"])):
        if row:
            yield Interaction(
                row[0], row[1], EVENT_TYPE_CODE["click"], _number(path, line, row[2]), pos
            )
