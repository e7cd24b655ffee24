"""Readers for the public log formats, each streaming ``Interaction`` records in file order.

Sources without event types give every record type code 0 (browse); sources without timestamps
give each record its step within the user's sequence (0, 1, 2, ... seconds), which keeps the
file's order and makes every gap the same.
"""

from __future__ import annotations

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
