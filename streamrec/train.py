"""`streamrec train`: event log -> checkpoint, with a held-out comparison against popularity."""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

from encoders.checkpoint import save_checkpoint
from encoders.model import EncoderConfig
from encoders.presets import PRESETS
from encoders.train import evaluate_next_item, split_holdout, train_model
from streamrec.eventlog import read_events, read_items
from streamrec.training import items_by_id, sequences_from_events

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
) -> str:
    """Train on every user's history but the last event, report HR/NDCG@10 on those held-out
    events for the model and for popularity, and save the checkpoint. Returns a summary.
    The model and training recipe are the named preset's, the one bench/quality.py evaluates."""
    t0 = time.perf_counter()
    sequences, rejected = sequences_from_events(read_events(events_path))
    items = items_by_id(read_items(items_path)) if items_path else {}
    train_seqs, holdout = split_holdout(sequences)
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; one of {', '.join(PRESETS)}")
    chosen = PRESETS[preset]
    cfg = dataclasses.replace(chosen.train, seed=seed)
    if epochs is not None:
        cfg = dataclasses.replace(cfg, epochs=epochs)
    trained = train_model(train_seqs, items, encoder or chosen.encoder, cfg, progress=progress)
    metrics = evaluate_next_item(trained, train_seqs, holdout, k=10)
    trained.metadata.setdefault("training", {})["holdout"] = metrics
    path = save_checkpoint(out_dir, trained)
    n_events = sum(len(s) for s in sequences.values())
    k, m, p = metrics["k"], metrics["model"], metrics["popularity"]
    return (
        f"trained {trained.model_version} on {len(sequences)} users / {n_events} events "
        f"({rejected} rejected) in {time.perf_counter() - t0:.1f} s -> {path}\n"
        f"held-out last events ({metrics['users']} users), HR@{k} / NDCG@{k}: "
        f"model {m['hr']:.4f} / {m['ndcg']:.4f}, popularity {p['hr']:.4f} / {p['ndcg']:.4f}"
    )
