"""PNG charts of the benchmarks' results, for docs/benchmarks.md.

Each bench writes its results as JSON; its ``--plot DIR`` draws them with these functions at the
end of the run, and this script redraws them later from the saved files:

    .venv/bin/python bench/plots.py live var/bench/live/<run>/results.json --out docs/images
    .venv/bin/python bench/plots.py quality var/quality/taobao/results.json --out docs/images
    .venv/bin/python bench/plots.py online var/online/taobao/online.json --out docs/images

One chart, one question: throughput against the pass-through floor, the latency distribution at
the fixed rate, a quality table as bars (the simple lists beside the model), the live lists
against frozen ones (the real-time lift). Medians with min-max whiskers wherever there are
repeats or seeds, as in the tables.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display on these machines
import matplotlib.pyplot as plt
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streamrec.online.run import CONTINUAL, COVISIT, FROZEN, HEURISTIC, LIVE, POPULARITY, RECENT
from streamrec.quality import BASELINES

FLOOR = "pass-through"
# the simple lists, offline and online, drawn in one colour
SIMPLE = {*BASELINES, RECENT, COVISIT, HEURISTIC, POPULARITY}
COLOURS = {"floor": "#9e9e9e", "simple": "#f2a541", "model": "#2f6db5", "other": "#7fb3e0"}
# PNG metadata without the matplotlib version or a date, so a redraw of the same figures is the
# same file
_META = {"Software": None}


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight", metadata=_META)
    plt.close(fig)
    return path


def _median_range(values: Sequence[float]) -> tuple[float, float, float]:
    return statistics.median(values), min(values), max(values)


def _hbars(
    ax: Any,
    names: Sequence[str],
    groups: Sequence[Sequence[float]],
    colours: Sequence[str],
    fmt: str,
) -> None:
    """One horizontal bar per name: the median of its values, whiskers to min and max."""
    y = np.arange(len(names))[::-1]
    stats = [_median_range(g) for g in groups]
    mids = [s[0] for s in stats]
    err = np.array([[s[0] - s[1] for s in stats], [s[2] - s[0] for s in stats]])
    ax.barh(y, mids, color=colours, xerr=err if err.any() else None, capsize=3)
    ax.set_yticks(y, names)
    top = max(s[2] for s in stats) or 1.0
    for yi, (mid, _, hi) in zip(y, stats, strict=True):
        ax.text(hi + top * 0.01, yi, fmt.format(mid), va="center", fontsize=8)
    ax.set_xlim(0, top * 1.18)
    ax.grid(axis="x", alpha=0.3)


# --- bench/live.py -----------------------------------------------------------------------------


def live_charts(results: Mapping[str, Any], out: Path) -> list[Path]:
    """Drain events/s of every app against the floor; event->list latency at the fixed rate."""
    reps: list[dict[str, Any]] = list(results["repeats"])
    args: dict[str, Any] = dict(results.get("args", {}))
    about = (
        f"{args.get('items', 0):,} items, {args.get('users', 0):,} users, d={args.get('dim', '?')}, "
        f"{len(reps)} repeat{'s' if len(reps) != 1 else ''}"
    )
    apps = [a for a in dict.fromkeys(k for r in reps for k in r["drain"])]
    apps.sort(key=lambda a: (a != FLOOR, a != "streamrec", a))
    drains = [[r["drain"][a] for r in reps if a in r["drain"]] for a in apps]
    floor = statistics.median(drains[0]) if apps and apps[0] == FLOOR else 0.0
    labels = [
        a if a == FLOOR or not floor else f"{a}\n{statistics.median(d) / floor:.2f}× floor"
        for a, d in zip(apps, drains, strict=True)
    ]
    colours = [
        COLOURS["floor"]
        if a == FLOOR
        else COLOURS["model"]
        if a == "streamrec"
        else COLOURS["other"]
        for a in apps
    ]
    fig, ax = plt.subplots(figsize=(7, 0.6 * len(apps) + 1.2))
    _hbars(ax, labels, drains, colours, "{:,.0f}/s")
    ax.set_xlabel("backlog drain, events/s (median, min-max)")
    ax.set_title(f"bench/live.py: throughput against the pass-through floor\n{about}", fontsize=10)
    paths = [_save(fig, out / "live-throughput.png")]

    rate = args.get("rate", 0.0)
    fig, ax = plt.subplots(figsize=(7, 4))
    for app, colour in ((FLOOR, COLOURS["floor"]), ("streamrec", COLOURS["model"])):
        for i, r in enumerate(reps):
            lat = np.sort(np.asarray(r["latency"].get(app, []), dtype=float)) * 1e3
            if not len(lat):
                continue
            frac = np.arange(1, len(lat) + 1) / len(lat)
            p50, p99 = np.percentile(lat, [50, 99])
            label = f"{app}: p50 {p50:,.1f} ms, p99 {p99:,.1f} ms" + (
                f" (repeat {i + 1})" if len(reps) > 1 else ""
            )
            ax.plot(np.maximum(lat, 0.1), frac, color=colour, alpha=1.0 if i == 0 else 0.55,
                    label=label)  # fmt: skip
    ax.set_xscale("log")
    ax.axhline(0.99, color="black", lw=0.6, ls=":")
    ax.text(ax.get_xlim()[0], 0.985, " p99", va="top", fontsize=8)
    ax.set_xlabel("event -> list latency, ms (log)")
    ax.set_ylabel("share of lists at or below")
    ax.set_title(f"bench/live.py: latency at {rate:,.0f} events/s\n{about}", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="lower right")
    paths.append(_save(fig, out / "live-latency.png"))
    return paths


# --- bench/quality.py ------------------------------------------------------------------------


def quality_chart(
    rows: Sequence[Mapping[str, Any]], dataset: str, out: Path, about: str = ""
) -> Path:
    """HR@10 and NDCG@10 per row of a quality table; the simple lists in their own colour."""
    names = list(dict.fromkeys(str(r["name"]) for r in rows))
    by = {n: [r["metrics"] for r in rows if r["name"] == n] for n in names}
    fig, axes = plt.subplots(1, 2, figsize=(10, 0.45 * len(names) + 1.6), sharey=True)
    colours = [COLOURS["simple"] if n in SIMPLE else COLOURS["model"] for n in names]
    for ax, metric in zip(axes, ("hr@10", "ndcg@10"), strict=True):
        _hbars(ax, names, [[m[metric] for m in by[n]] for n in names], colours, "{:.3f}")
        ax.set_xlabel(metric.upper().replace("@", "@"))
    seeds = max(len(v) for v in by.values())
    fig.suptitle(
        f"bench/quality.py: {dataset}, leave-one-out, full ranking"
        + (f", median (min-max) of {seeds} seeds" if seeds > 1 else "")
        + (f"\n{about}" if about else ""),
        fontsize=10,
        y=1.04,  # clear of the panels' own titles
    )
    return _save(fig, out / f"quality-{dataset}.png")


# --- streamrec evaluate --online ---------------------------------------------------------------


def online_chart(result: Mapping[str, Any], out: Path, k: int = 20, name: str = "") -> Path:
    """HR@k of every system's lists as shown, one panel per target kind, lift in the title;
    written to online-<name, default the dataset>.png."""
    metrics: dict[str, dict[str, dict[str, float]]] = result["metrics"]
    systems = list(metrics)
    kinds = list(dict.fromkeys(kind for m in metrics.values() for kind in m))
    fig, axes = plt.subplots(
        1, len(kinds), figsize=(5 * len(kinds), 0.45 * len(systems) + 1.8), sharey=True,
        squeeze=False,
    )  # fmt: skip
    for ax, kind in zip(axes[0], kinds, strict=True):
        names = [s for s in systems if kind in metrics[s]]
        values = [[metrics[s][kind][f"hr@{k}"]] for s in names]
        colours = [
            COLOURS["simple"]
            if s in SIMPLE
            else COLOURS["model"]
            if s in (LIVE, CONTINUAL)
            else COLOURS["other"]
            for s in names
        ]
        _hbars(ax, names, values, colours, "{:.3f}")
        n = metrics[names[0]][kind]["n"] if names else 0
        live = metrics.get(LIVE, {}).get(kind, {}).get(f"hr@{k}")
        frozen = metrics.get(FROZEN, {}).get(kind, {}).get(f"hr@{k}")
        lift = f"; real-time lift {live / frozen - 1:+.0%}" if live and frozen else ""
        ax.set_title(f"{kind} targets (n = {n:,}){lift}", fontsize=9)
        ax.set_xlabel(f"HR@{k} of the list shown before the event")
    fig.suptitle(
        f"streamrec evaluate {result['dataset']} --online: live lists against frozen ones and the "
        f"simple lists\n{result.get('policy', '')}",
        fontsize=10,
        y=1.06,  # clear of the panels' own titles
    )
    return _save(fig, out / f"online-{name or Path(str(result['dataset'])).name}.png")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("kind", choices=("live", "quality", "online"))
    p.add_argument("results", nargs="+", type=Path, help="results.json / online.json files")
    p.add_argument("--out", type=Path, default=Path("docs/images"))
    p.add_argument("--dataset", default="", help="the name in the file (quality: and in the title)")
    args = p.parse_args(argv)
    paths: list[Path] = []
    if args.kind == "live":
        for f in args.results:
            paths += live_charts(load_live(f), args.out)
    elif args.kind == "quality":
        rows = [r for f in args.results for r in json.loads(f.read_text())]
        paths.append(quality_chart(rows, args.dataset or args.results[0].parent.name, args.out))
    else:
        for f in args.results:
            paths.append(online_chart(json.loads(f.read_text()), args.out, name=args.dataset))
    for path in paths:
        print(path)
    return 0


def load_live(path: Path) -> dict[str, Any]:
    """bench/live.py's results.json (a bare list of repeats before the run's arguments were kept)."""
    data = json.loads(path.read_text())
    return {"repeats": data, "args": {}} if isinstance(data, list) else data


if __name__ == "__main__":
    sys.exit(main())
