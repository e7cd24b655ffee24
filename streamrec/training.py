"""Training: event logs -> training inputs (the same validation as the live path), and the one
path that fits a checkpoint (encoder and ranker) from them."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from encoders.checkpoint import TrainedModel, save_checkpoint
from encoders.evaluate import Split, leave_one_out
from encoders.presets import Preset
from encoders.train import TrainConfig, train_model
from streamrec.events.schema import EVENT_TYPE_CODE
from streamrec.events.validate import Limits, Rejection, parse_event
from streamrec.recommend.offline import ListProtocol, ListState, as_cases, fit_ranker_on

Sequences = dict[str, list[tuple[str, int, float]]]


def sequences_from_events(
    events: Iterable[Mapping[str, Any]], limits: Limits | None = None
) -> tuple[Sequences, int]:
    """Per-user time-ordered (item, type code, ts), de-duplicated by event id; returns (seqs, rejected)."""
    limits = limits or Limits(max_future_skew_s=float("inf"))
    seqs: dict[str, list[tuple[float, int, str, int]]] = defaultdict(list)
    seen: set[tuple[str, str]] = set()
    rejected = 0
    for n, raw in enumerate(events):
        etype = str(raw.get("type", ""))
        ev = (
            parse_event(orjson.dumps(raw), etype, None, limits)
            if etype in EVENT_TYPE_CODE
            else None
        )
        if ev is None or isinstance(ev, Rejection):
            rejected += 1
            continue
        if (ev.user_id, ev.event_id) in seen:
            continue
        seen.add((ev.user_id, ev.event_id))
        seqs[ev.user_id].append((ev.ts, n, ev.item_id, ev.type_code))
    return {u: [(i, t, ts) for ts, _, i, t in sorted(s)] for u, s in seqs.items()}, rejected


def items_by_id(items: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    return {str(it["item_id"]): dict(it) for it in items}


@dataclass
class Fitted:
    """A checkpoint fit by ``fit_checkpoint``, with the split and state it was fit on."""

    trained: TrainedModel
    split: Split
    state: ListState
    minutes: float


def fit_checkpoint(
    sequences: Mapping[str, Sequence[tuple[str, int, float]]],
    items: Mapping[str, Mapping[str, Any]],
    preset: Preset,
    train_cfg: TrainConfig,
    out: Path,
    protocol: ListProtocol,
    exclude_history: bool = False,
    progress: bool = True,
    ranker: bool = True,
    metadata: Mapping[str, Any] | None = None,
    init: TrainedModel | None = None,
) -> Fitted:
    """The one training path (`streamrec train`, bench/quality.py, the online evaluation).

    Leave-one-out: the encoder trains on each user's events but the last two, early stopping on
    the second-to-last; the ranker is then fit on those same second-to-last events (which the
    encoder never trained on), with candidates and features from state counted on the training
    events; both go into one checkpoint in ``out``. The last events stay for the test.

    ``init``: fine-tune that model instead of starting afresh (``encoders.train.train_model``)."""
    t0 = time.perf_counter()
    split = leave_one_out(sequences)
    extra = dict(metadata or {})

    def save_best(trained: TrainedModel) -> None:
        trained.metadata["training"].update(extra)
        save_checkpoint(out, trained)

    trained = train_model(
        split.train,
        items,
        preset.encoder,
        train_cfg,
        progress=progress,
        validation={u: v[1] for u, v in split.valid.items()},
        on_best=save_best,
        init=init,
    )
    summary = trained.metadata["training"]
    summary.update(extra, preset=preset.name, protocol=protocol.describe())
    state = ListState.from_sequences(split.train, protocol)
    if ranker:
        trained.ranker, summary["ranker"] = fit_ranker_on(
            trained, as_cases(split.valid), state, protocol, exclude_history, train_cfg.seed
        )
    save_checkpoint(out, trained)
    return Fitted(trained, split, state, (time.perf_counter() - t0) / 60)
