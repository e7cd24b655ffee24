"""Named datasets: where each lives under the data root and which reader parses it."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamrec.datasets.base import Dataset, Interaction, group_by_user
from streamrec.datasets.formats import (
    read_movielens_dat,
    read_recbole_inter,
    read_sasrec_text,
    read_taobao,
    read_trivago,
    read_yoochoose,
)

Reader = Callable[[Path, dict[str, dict[str, Any]]], Iterator[Interaction]]


def _untyped(reader: Callable[[Path], Iterator[Interaction]]) -> Reader:
    return lambda path, items: reader(path)


READERS: dict[str, Reader] = {
    "sasrec": _untyped(read_sasrec_text),
    "movielens": _untyped(read_movielens_dat),
    "recbole": _untyped(read_recbole_inter),
    "taobao": read_taobao,
    "trivago": _untyped(read_trivago),
    "yoochoose": _untyped(read_yoochoose),
}
HAS_TIMES = {
    "sasrec": False,
    "movielens": True,
    "recbole": True,
    "taobao": True,
    "trivago": True,
    "yoochoose": True,
    "events": True,
}
# Logs where going back to an item is itself a likely next event (repeat views, re-clicks):
# evaluating them with the history removed would hide the commonest right answer.
REPEATS_MATTER = frozenset({"taobao", "trivago", "yoochoose"})


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    path: str  # relative to the data root
    format: str  # a READERS key, or "events" (the project's JSON Lines log)
    # Whether evaluation removes the user's own history from the ranking. True is the protocol
    # of the papers compared against (their data has no repeats); False suits logs where
    # returning to an item is a real next event (Taobao).
    exclude_history: bool = True
    about: str = ""


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            "ml-1m", "ml-1m-sasrec/ml-1m.txt.gz", "sasrec", about="MovieLens-1M, SASRec file"
        ),
        DatasetSpec(
            "beauty",
            "amazon-beauty-bert4rec/beauty.txt.gz",
            "sasrec",
            about="Amazon Beauty, BERT4Rec file",
        ),
        DatasetSpec(
            "games",
            "amazon-games-sasrec/Video.txt.gz",
            "sasrec",
            about="Amazon Video Games, SASRec file",
        ),
        DatasetSpec(
            "ml-100k", "ml-100k/ml-100k.inter.gz", "recbole", about="MovieLens-100K, RecBole file"
        ),
        DatasetSpec(
            "ml-1m-raw-prefix",
            "ml-1m-raw-prefix/ratings_prefix.dat.gz",
            "movielens",
            about="MovieLens-1M ratings.dat, users 1-2999",
        ),
        DatasetSpec(
            "taobao",
            "taobao-userbehavior-prefix/UserBehavior_prefix_upto_2017-12-01.csv.gz",
            "taobao",
            exclude_history=False,
            about="Taobao UserBehavior, 814 users to 2017-12-01",
        ),
        DatasetSpec(
            "trivago",
            "trivago-rsc19-100k/trivago_val_100k.csv.gz",
            "trivago",
            exclude_history=False,
            about="trivago RecSys Challenge 2019, first 100k rows of the validation log",
        ),
        DatasetSpec(
            "yoochoose",
            "yoochoose-clicks-100k/yoochoose-clicks-100k_train_full.txt.gz",
            "yoochoose",
            exclude_history=False,
            about="YooChoose 2015 clicks, session-rec 100k sample (train_full); sessions as users",
        ),
    )
}


def data_root(root: str | os.PathLike[str] | None = None) -> Path:
    """The data root: the argument, else the ``data.root`` setting."""
    if root is None:
        from streamrec.settings import load_settings

        root = load_settings().data.root
    return Path(root)


def resolve(
    name_or_path: str, fmt: str | None = None, root: str | os.PathLike[str] | None = None
) -> tuple[DatasetSpec, Path]:
    """A registered name (read under the data root) or a file path with its ``fmt``."""
    if name_or_path in DATASETS and fmt is None:
        spec = DATASETS[name_or_path]
        path = data_root(root) / spec.path
        if not path.exists():
            raise FileNotFoundError(
                f"dataset {spec.name!r} expected at {path}; set data.root "
                "(STREAMREC_DATA_ROOT) to the folder that holds it"
            )
        return spec, path
    path = Path(name_or_path)
    if not path.exists():
        known = ", ".join(sorted(DATASETS))
        raise FileNotFoundError(f"{name_or_path!r} is neither a file nor a dataset name ({known})")
    if fmt is None:
        raise ValueError(f"{path}: give its format ({', '.join([*READERS, 'events'])})")
    if fmt not in READERS and fmt != "events":
        raise ValueError(f"unknown format {fmt!r}; one of {', '.join([*READERS, 'events'])}")
    return DatasetSpec(path.name, str(path), fmt, exclude_history=fmt not in REPEATS_MATTER), path


def read_interactions(
    spec: DatasetSpec, path: Path, items: dict[str, dict[str, Any]]
) -> Iterator[Interaction]:
    return READERS[spec.format](path, items)


def load_dataset(
    name_or_path: str,
    fmt: str | None = None,
    root: str | os.PathLike[str] | None = None,
    min_events: int = 1,
    items_path: str | os.PathLike[str] | None = None,
) -> Dataset:
    """Load a dataset by registered name or by path and format. ``min_events`` drops users with
    fewer events (leave-one-out needs 3)."""
    spec, path = resolve(name_or_path, fmt, root)
    if spec.format == "events":
        from streamrec.eventlog import read_events, read_items
        from streamrec.training import items_by_id, sequences_from_events

        seqs, _ = sequences_from_events(read_events(path))
        seqs = {u: s for u, s in seqs.items() if len(s) >= min_events}
        catalog = items_by_id(read_items(items_path)) if items_path else {}
        types = {t for s in seqs.values() for _, t, _ in s}
        return Dataset(
            spec.name, seqs, catalog, len(types) > 1, True, exclude_history=spec.exclude_history
        )
    items: dict[str, dict[str, Any]] = {}
    ds = group_by_user(
        read_interactions(spec, path, items), spec.name, HAS_TIMES[spec.format], min_events
    )
    ds.items = items
    ds.exclude_history = spec.exclude_history
    return ds
