"""The offline quality benchmark: fit presets on a dataset under leave-one-out and compare them
on the held-out last events (HR/NDCG@10 and @50) with the strongest simple lists: popularity,
the user's recent items, co-visitation and their blend, built by the worker's own list code.

Each preset gives two rows: its model alone (full ranking over the vocabulary) and the lists the
worker serves with its checkpoint (the model's candidates with the other sources', ranked by the
learned ranker). The checkpoint (encoder and ranker) is saved to ``<out>/<preset>`` in the format
the live worker loads, and the test numbers come from it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import statistics
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from encoders.checkpoint import TrainedModel, load_checkpoint, save_checkpoint
from encoders.evaluate import (
    Split,
    evaluate_model,
    evaluate_popularity,
    leave_one_out,
    serving_agreement,
)
from encoders.metrics import at_k
from encoders.presets import PRESETS, Preset
from streamrec.datasets import Dataset
from streamrec.recommend.candidates import CandidateBatch, heuristic_scores, source_scores
from streamrec.recommend.list_metrics import list_metrics
from streamrec.recommend.offline import (
    ListProtocol,
    ListState,
    as_cases,
    candidates_for,
    ranks_of,
    served_scores,
)
from streamrec.training import fit_checkpoint

log = logging.getLogger(__name__)
KS = (10, 50)
BEYOND_AT = 10
# The simple lists every evaluation shows beside the model: name -> how its candidates are scored
HEURISTICS = {
    "recent items": lambda b: source_scores(b, "recent"),
    "co-visitation": lambda b: source_scores(b, "covisit"),
    "recent+covisit+popular": heuristic_scores,
}


@dataclass
class Row:
    name: str
    metrics: dict[str, float]
    minutes: float = 0.0
    epochs: int = 0
    best_epoch: int = 0
    params: int = 0
    serving_diff: float | None = None
    checkpoint: str = ""
    about: str = ""
    # beyond accuracy, of the top BEYOND_AT (streamrec.recommend.list_metrics): rows with lists
    beyond: dict[str, float] = dataclasses.field(default_factory=dict)


def categories_of(items: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """Each catalog item's category, where the dataset has them."""
    return {i: str(f["category"]) for i, f in items.items() if f.get("category") is not None}


def beyond_accuracy(
    blocks: Sequence[tuple[CandidateBatch, list[int]]],
    score_fn: Callable[[CandidateBatch], np.ndarray],
    split: Split,
    categories: Mapping[str, str] | None,
    trained: TrainedModel | None,
) -> dict[str, float]:
    """Diversity, coverage and novelty of the top ``BEYOND_AT`` of each list under
    ``score_fn``; intra-list diversity in ``trained``'s item space (left out without one)."""
    lists = []
    for batch, _ in blocks:
        scores = score_fn(batch)
        for rows in batch.top_rows(scores, BEYOND_AT):
            lists.append([batch.item_ids[r] for r in rows if np.isfinite(scores[r])])
    counts = Counter(i for seq in split.train.values() for i, _, _ in seq)
    vectors = trained.vocab_item_vectors().numpy() if trained is not None else None
    row_of = trained.row_of if trained is not None else None
    return list_metrics(lists, vectors, row_of, categories, counts, len(counts))


def _params(trained: TrainedModel) -> int:
    return sum(p.numel() for p in trained.model.parameters())


def run_preset(
    ds: Dataset,
    preset: Preset,
    out_dir: Path,
    minutes: float,
    seed: int,
    exclude_history: bool,
    progress: bool,
    epochs: int | None = None,
    protocol: ListProtocol | None = None,
) -> list[Row]:
    """Fit the preset (encoder and ranker, one checkpoint in ``<out>/<preset>``) and return its
    test rows, computed from the saved checkpoint: what the worker would load."""
    protocol = protocol or ListProtocol()
    tc = dataclasses.replace(
        preset.train,
        seed=seed,
        max_minutes=minutes,
        exclude_history=exclude_history,
        epochs=epochs if epochs is not None else preset.train.epochs,
    )
    if not ds.items:
        # no item features: an item is its id, and dropping ids would leave a constant vector
        tc = dataclasses.replace(tc, id_dropout=0.0)
    target = out_dir / preset.name
    fitted = fit_checkpoint(
        ds.sequences, ds.items, preset, tc, target, protocol, exclude_history, progress,
        metadata={"dataset": ds.name},
    )  # fmt: skip
    served = load_checkpoint(target)
    rows = checkpoint_rows(
        served, fitted.split, fitted.state, protocol, exclude_history, categories_of(ds.items)
    )
    meta = served.metadata["training"]
    meta["test"], meta["test_ranked"] = rows[0].metrics, rows[1].metrics
    save_checkpoint(target, served)
    for r in rows:
        r.minutes, r.checkpoint = fitted.minutes, str(target)
    rows[0].about = f"{preset.about}; {rows[0].about}"
    return rows


def checkpoint_rows(
    trained: TrainedModel,
    split: Split,
    state: ListState,
    protocol: ListProtocol,
    exclude_history: bool,
    categories: Mapping[str, str] | None = None,
) -> list[Row]:
    """A checkpoint on the test cases: its model alone (full ranking over the vocabulary), and
    the lists the worker serves with it (candidates from every source, ranked by its ranker)."""
    metrics = evaluate_model(trained, split.test, KS, exclude_history)
    agreement = serving_agreement(trained, split.test, users=32)
    blocks = candidates_for(as_cases(split.test), state, protocol, trained, exclude_history)
    ranked = at_k(torch.from_numpy(ranks_of(blocks, served_scores(trained))), KS)
    trained.metadata.setdefault("training", {})["serving_agreement"] = agreement
    meta = trained.metadata.get("training", {})
    name = str(meta.get("preset", "model"))
    common = {
        "epochs": int(meta.get("epochs_run", 0)),
        "best_epoch": int(meta.get("best_epoch", 0)),
        "minutes": float(meta.get("seconds", 0.0)) / 60,
        "params": _params(trained),
        "serving_diff": agreement["max_abs_diff"],
    }
    served_as = "ranker" if trained.ranker is not None else "heuristic blend"
    # What any scorer of these candidates could reach: the next item first whenever a source
    # found it. A ranker short of a target near this row needs better candidates, not scoring.
    found = [0 if lab >= 0 else 1 << 30 for _, labels in blocks for lab in labels]
    ceiling = at_k(torch.tensor(found, dtype=torch.long), KS)
    return [
        Row(name, metrics, about="model alone, full ranking", **common),
        Row(
            f"{name} + {served_as}",
            ranked,
            about="the lists the worker serves",
            beyond=beyond_accuracy(blocks, served_scores(trained), split, categories, trained),
            **common,
        ),
        Row(f"{name} candidates, next item first (ceiling)", ceiling, about="oracle order"),
    ]


def simple_rows(
    split: Split,
    state: ListState,
    protocol: ListProtocol,
    exclude_history: bool,
    categories: Mapping[str, str] | None = None,
    trained: TrainedModel | None = None,
) -> list[Row]:
    """The simple lists on the test cases of ``split``: popularity (the training-event count,
    full ranking), and recent items, co-visitation and their blend with popularity (what a
    worker serves without a model), built by the worker's list code from ``state``, counted
    on the training events. Their intra-list diversity is measured in ``trained``'s item space
    when one is given."""
    vocab = sorted({i for s in split.train.values() for i, _, _ in s})
    row_of = {item: r + 1 for r, item in enumerate(vocab)}
    popularity = evaluate_popularity(split.train, split.test, row_of, KS, exclude_history)
    blocks = candidates_for(as_cases(split.test), state, protocol, None, exclude_history)
    return [
        Row("popularity", popularity, about="most events in training first"),
        *(
            Row(
                name,
                at_k(torch.from_numpy(ranks_of(blocks, fn)), KS),
                about="heuristic",
                beyond=beyond_accuracy(blocks, fn, split, categories, trained),
            )
            for name, fn in HEURISTICS.items()
        ),
    ]


def baseline_rows(
    ds: Dataset, exclude_history: bool, protocol: ListProtocol | None = None
) -> list[Row]:
    """``simple_rows`` on the dataset's leave-one-out split."""
    protocol = protocol or ListProtocol()
    split = leave_one_out(ds.sequences)
    state = ListState.from_sequences(split.train, protocol)
    return simple_rows(split, state, protocol, exclude_history, categories_of(ds.items))


def evaluate_checkpoint(
    ds: Dataset, directory: Path, exclude_history: bool, protocol: ListProtocol | None = None
) -> list[Row]:
    """The simple lists and a saved checkpoint (its model's full ranking, and the ranked lists
    it serves) on the dataset's leave-one-out test cases."""
    protocol = protocol or ListProtocol()
    trained = load_checkpoint(directory)
    split = leave_one_out(ds.sequences)
    state = ListState.from_sequences(split.train, protocol)
    categories = categories_of(ds.items)
    rows = checkpoint_rows(trained, split, state, protocol, exclude_history, categories)
    for r in rows:
        r.checkpoint = str(directory)
    simple = simple_rows(split, state, protocol, exclude_history, categories, trained)
    return [*simple, *rows]


def _cell(values: Sequence[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.median(values):.4f} ({min(values):.4f}–{max(values):.4f})"


BASELINES = ("popularity", *HEURISTICS)
BEYOND = ("ild", "categories", "coverage", "novelty")


def format_table(ds: Dataset, rows: Sequence[Row], baseline: str = "sasrec") -> str:
    """Markdown table, one line per model; several rows of one model (seeds) are shown as
    median (min–max). NDCG@10 is compared with ``baseline`` and with the best simple list."""
    names = list(dict.fromkeys(r.name for r in rows))
    groups = {n: [r for r in rows if r.name == n] for n in names}

    def median_ndcg(name: str) -> float:
        g = groups.get(name)
        return statistics.median(r.metrics["ndcg@10"] for r in g) if g else 0.0

    base_ndcg = median_ndcg(baseline)
    simple = max(BASELINES, key=median_ndcg)
    best_simple = median_ndcg(simple)
    seeds = max(len(g) for g in groups.values())
    head = "| model | HR@10 | NDCG@10 | HR@50 | NDCG@50 | NDCG@10 vs " + baseline
    head += " | vs best simple | epochs (best) | train min | params | serve Δ |"
    beyond = [c for c in BEYOND if any(c in r.beyond for r in rows)]
    head += "".join(f" {c}@{BEYOND_AT} |" for c in beyond)
    lines = [
        f"{ds.describe()}; leave-one-out, full ranking"
        + (f"; median (min–max) over {seeds} seeds" if seeds > 1 else "")
        + f"; best simple list: {simple}",
        "",
        head,
        "|" + "---|" * (11 + len(beyond)),
    ]
    for name, g in groups.items():
        cells = [_cell([r.metrics[m] for r in g]) for m in ("hr@10", "ndcg@10", "hr@50", "ndcg@50")]
        ndcg = median_ndcg(name)
        ratio = f"{ndcg / base_ndcg:.2f}×" if base_ndcg > 0 else ""
        vs_simple = f"{ndcg / best_simple:.2f}×" if best_simple > 0 else ""
        r0 = g[0]
        trained = (
            f"{'/'.join(str(r.epochs) for r in g)} ({'/'.join(str(r.best_epoch) for r in g)}) | "
            f"{statistics.median(r.minutes for r in g):.1f} | {r0.params:,}"
            if r0.epochs
            else " | | "
        )
        diffs = [r.serving_diff for r in g if r.serving_diff is not None]
        extra = "".join(
            f" {_cell([r.beyond[c] for r in g if c in r.beyond])} |"
            if any(c in r.beyond for r in g)
            else " |"
            for c in beyond
        )
        lines.append(
            f"| {name} | {' | '.join(cells)} | {ratio} | {vs_simple} | {trained} | "
            + (f"{max(diffs):.1e} |" if diffs else " |")
            + extra
        )
    if beyond:
        lines += [
            "",
            f"beyond accuracy, of the top {BEYOND_AT}: ild = intra-list diversity (mean cosine "
            "distance in the model's item space), categories = distinct per list, coverage = "
            "share of the training items listed at all, novelty = mean -log2 training share",
        ]
    return "\n".join(lines)


def with_overrides(preset: Preset, overrides: Sequence[str]) -> Preset:
    """``key=value`` pairs applied to the preset's EncoderConfig or TrainConfig field of that
    name (e.g. ``dropout=0.3``, ``batch_size=256``)."""
    enc: dict[str, Any] = {}
    train: dict[str, Any] = {}
    enc_fields = {f.name: f for f in dataclasses.fields(preset.encoder)}
    train_fields = {f.name: f for f in dataclasses.fields(preset.train)}
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or (key not in enc_fields and key not in train_fields):
            raise ValueError(f"override {item!r}: expected FIELD=VALUE with a model/training field")
        current = getattr(preset.encoder if key in enc_fields else preset.train, key)
        value: Any = (
            text.lower() in ("1", "true", "yes")
            if isinstance(current, bool)
            else type(current)(text)
        )
        (enc if key in enc_fields else train)[key] = value
    return dataclasses.replace(
        preset,
        encoder=dataclasses.replace(preset.encoder, **enc),
        train=dataclasses.replace(preset.train, **train),
    )


def load_rows(paths: Sequence[Path]) -> list[Row]:
    """Rows saved by earlier runs (``results.json``), popularity once."""
    rows: list[Row] = []
    for path in paths:
        for r in json.loads(Path(path).read_text()):
            if r["name"] in BASELINES and any(x.name == r["name"] for x in rows):
                continue
            rows.append(Row(**r))
    return rows


def run_quality(
    ds: Dataset,
    presets: Sequence[str],
    out_dir: Path,
    minutes: float,
    seeds: Sequence[int] = (0,),
    exclude_history: bool = True,
    progress: bool = True,
    epochs: int | None = None,
    overrides: Sequence[str] = (),
    protocol: ListProtocol | None = None,
) -> list[Row]:
    unknown = [p for p in presets if p not in PRESETS]
    if unknown:
        raise ValueError(f"unknown presets {unknown}; known: {', '.join(PRESETS)}")
    rows = baseline_rows(ds, exclude_history, protocol)
    for name in presets:
        for seed in seeds:
            log.info("training %s on %s, seed %d (budget %.0f min)", name, ds.name, seed, minutes)
            # with several seeds each gets its own checkpoint directory
            target = out_dir if len(seeds) == 1 else out_dir / f"seed{seed}"
            rows.extend(
                run_preset(
                    ds,
                    with_overrides(PRESETS[name], overrides),
                    target,
                    minutes,
                    seed,
                    exclude_history,
                    progress,
                    epochs,
                    protocol,
                )
            )
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(
        json.dumps([dataclasses.asdict(r) for r in rows], indent=2) + "\n"
    )
    return rows
