"""The fit side of online evaluation: a time split of a dataset and the models fit before it.

The split is by event time, not per user: everything before ``split_ts`` is history the models
are trained on (and that warms the workers' state), everything from it on is the evaluation
window. ``split_ts`` is the time by which ``fit_fraction`` of the events had happened, so a few
outlying early timestamps (Taobao has some) do not move it.

Two checkpoints are fit with the project's one training path and preset: the model as served
(encoder and ranker), and the same encoder without event-type inputs (trained on the log with
every type alike, then made type-blind at serving, see ``make_type_blind``).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import torch

from encoders.checkpoint import TrainedModel, save_checkpoint
from encoders.presets import PRESETS
from streamrec.datasets.base import Dataset, Sequences
from streamrec.recommend.offline import ListProtocol
from streamrec.training import fit_checkpoint

log = logging.getLogger(__name__)


def split_time(ds: Dataset, fit_fraction: float) -> float:
    """The event time by which ``fit_fraction`` of the dataset's events had happened."""
    if not 0.0 < fit_fraction < 1.0:
        raise ValueError(f"fit_fraction must be in (0, 1), got {fit_fraction}")
    times = sorted(ts for seq in ds.sequences.values() for _, _, ts in seq)
    if not times:
        raise ValueError(f"{ds.name}: no events")
    return times[min(int(len(times) * fit_fraction), len(times) - 1)]


def fit_part(sequences: Sequences, split_ts: float) -> Sequences:
    """Every user's events before split_ts (users with none are left out)."""
    out: Sequences = {}
    for user, seq in sequences.items():
        head = [e for e in seq if e[2] < split_ts]
        if head:
            out[user] = head
    return out


def catalog(ds: Dataset) -> dict[str, dict[str, Any]]:
    """The item catalog the workers are given (items topic) and the models are trained with.

    The workers list only items they have a catalog record for, and a record needs a category and
    a price. Public logs have no prices (and trivago no categories), so every item gets price 0
    and its category or ""; training sees exactly these records, so item vectors at serving are
    the ones trained. Every item of the log is listed from the start (existence only)."""
    out: dict[str, dict[str, Any]] = {}
    for seq in ds.sequences.values():
        for item, _, _ in seq:
            if item not in out:
                category = ds.items.get(item, {}).get("category")
                out[item] = {
                    "item_id": item,
                    "category": category if isinstance(category, str) else "",
                    "price": 0.0,
                    "title": "",
                    "available": True,
                }
    return out


def make_type_blind(trained: TrainedModel) -> TrainedModel:
    """The model with every event-type embedding set to the one it was trained with (code 0).

    A model trained on an untyped log has only ever seen type 0; the worker passes the real
    types, which would index embeddings that training never touched. Making all rows equal makes
    the served model ignore types exactly, with no change to the worker."""
    emb = trained.model.user_tower.type_emb.weight
    with torch.no_grad():
        emb[1:] = emb[0]
    return dataclasses.replace(trained, model_version=f"{trained.model_version}-untyped")


def train_checkpoint(
    sequences: Sequences,
    ds: Dataset,
    out: Path,
    minutes: float,
    preset: str = "streamrec",
    seed: int = 0,
    untyped: bool = False,
    progress: bool = True,
    protocol: ListProtocol | None = None,
) -> TrainedModel:
    """Fit the preset on ``sequences`` through the one training path (encoder by epochs with
    early stopping, ``minutes`` only as a guard; then the ranker) and save it to ``out``. The
    untyped ablation has no ranker: it is the model without event types, served as retrieved."""
    chosen = PRESETS[preset]
    tc = dataclasses.replace(chosen.train, seed=seed, max_minutes=minutes, num_threads=1)
    items = catalog(ds)
    if not ds.items:
        tc = dataclasses.replace(tc, id_dropout=0.0)  # as bench/quality.py: ids are all there is
    if untyped:
        sequences = {u: [(i, 0, ts) for i, _, ts in s] for u, s in sequences.items()}
    fitted = fit_checkpoint(
        sequences,
        items,
        chosen,
        tc,
        out,
        protocol or ListProtocol(),
        exclude_history=False,
        progress=progress,
        ranker=not untyped,
        metadata={"dataset": ds.name, "untyped": untyped, "online_fit": True},
    )
    trained = fitted.trained
    if untyped:
        trained = make_type_blind(trained)
    summary = trained.metadata["training"]
    log.info(
        "fit %s: %d epochs (best %d), validation NDCG@10 %s, %.1f min",
        out.name,
        summary["epochs_run"],
        summary["best_epoch"],
        summary.get("val_ndcg@10"),
        fitted.minutes,
    )
    save_checkpoint(out, trained)
    log.info("saved %s to %s", trained.model_version, out)
    return trained
