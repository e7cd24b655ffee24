"""`streamrec train`: event log -> checkpoint (encoder and ranker), through the one training path
and the one evaluation protocol (leave-one-out), with the simple lists beside it."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from encoders.checkpoint import load_checkpoint, save_checkpoint
from encoders.model import EncoderConfig
from encoders.presets import PRESETS
from streamrec.datasets.base import Dataset
from streamrec.eventlog import read_events, read_items
from streamrec.quality import categories_of, checkpoint_rows, format_table, simple_rows
from streamrec.recommend.offline import ListProtocol
from streamrec.training import fit_checkpoint, items_by_id, sequences_from_events

log = logging.getLogger(__name__)


def train_from_files(
    events_path: Path,
    items_path: Path | None,
    out_dir: Path,
    epochs: int | None = None,
    seed: int = 0,
    encoder: EncoderConfig | None = None,
    progress: bool = True,
    preset: str = "streamrec",
    protocol: ListProtocol | None = None,
    train_overrides: Mapping[str, Any] | None = None,
) -> str:
    """Fit the named preset (the one bench/quality.py evaluates) on every user's events but the
    last two, save the checkpoint, and report the held-out last events for the model, the lists
    it serves, popularity and the simple lists. Returns the report."""
    t0 = time.perf_counter()
    protocol = protocol or ListProtocol()
    sequences, rejected = sequences_from_events(read_events(events_path))
    items = items_by_id(read_items(items_path)) if items_path else {}
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; one of {', '.join(PRESETS)}")
    chosen = PRESETS[preset]
    if encoder is not None:
        chosen = dataclasses.replace(chosen, encoder=encoder)
    cfg = dataclasses.replace(chosen.train, seed=seed)
    if epochs is not None:
        cfg = dataclasses.replace(cfg, epochs=epochs)
    if train_overrides:
        cfg = dataclasses.replace(cfg, **train_overrides)  # e.g. DP-SGD: dp_epsilon, dp_delta
    fitted = fit_checkpoint(sequences, items, chosen, cfg, out_dir, protocol, progress=progress)
    served = load_checkpoint(out_dir)
    ds = Dataset(events_path.name, sequences, items, exclude_history=False)
    rows = [
        *simple_rows(fitted.split, fitted.state, protocol, False, categories_of(items), served),
        *checkpoint_rows(served, fitted.split, fitted.state, protocol, False, categories_of(items)),
    ]
    served.metadata["training"]["test"] = {
        "users": len(fitted.split.test),
        "protocol": protocol.describe(),
        "rows": {r.name: r.metrics for r in rows},
    }
    save_checkpoint(out_dir, served)
    n_events = sum(len(s) for s in sequences.values())
    return (
        f"trained {served.model_version} on {len(sequences)} users / {n_events} events "
        f"({rejected} rejected) in {time.perf_counter() - t0:.1f} s -> {out_dir}\n"
        f"held-out last events ({len(fitted.split.test)} users, {protocol.describe()}):\n\n"
        + format_table(ds, rows)
    )
