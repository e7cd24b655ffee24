"""Recommendation quality on a public dataset: the simple lists (popularity, recent items,
co-visitation, their blend) vs the SASRec configuration vs our presets, each preset alone and as
served (its candidates ranked by its learned ranker), fit by the same code under leave-one-out
(HR/NDCG@10 and @50).

    .venv/bin/python bench/quality.py ml-1m                      # all presets, 60 min budget each
    .venv/bin/python bench/quality.py games --minutes 20 --presets sasrec,streamrec

Datasets are read in place from data.root (STREAMREC_DATA_ROOT, default ../shared/data).
Checkpoints of each preset's best epoch land in --out/<preset> (the live worker loads them).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from encoders.presets import PRESETS
from streamrec.datasets import DATASETS, load_dataset
from streamrec.quality import Row, format_table, load_rows, run_quality
from streamrec.recommend.offline import ListProtocol
from streamrec.settings import load_settings


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("dataset", help=f"a name ({', '.join(DATASETS)}) or a file with --format")
    p.add_argument(
        "--format", help="sasrec | movielens | recbole | taobao | trivago | yoochoose | events"
    )
    p.add_argument("--presets", default=",".join(PRESETS), help="comma-separated presets")
    p.add_argument("--minutes", type=float, default=60.0, help="training budget per preset")
    p.add_argument("--epochs", type=int, default=None, help="cap epochs (default: budget/patience)")
    p.add_argument("--seeds", default="0", help="comma-separated; >1 prints median (min–max)")
    p.add_argument("--out", default=None, help="default var/quality/<dataset>")
    p.add_argument("--data-root", default=None, help="overrides data.root")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override a model or training field of every preset (repeatable)",
    )
    p.add_argument(
        "--report",
        nargs="+",
        metavar="RESULTS_JSON",
        help="print the table of earlier runs' results.json files instead of training",
    )
    p.add_argument("--plot", metavar="DIR", help="also draw the table as a chart there")
    p.add_argument("--untyped", action="store_true", help="treat every event type alike")
    p.add_argument(
        "--keep-purchased",
        action="store_true",
        help="let lists show items the user bought (default: recs.exclude_purchased)",
    )
    p.add_argument(
        "--keep-history",
        action="store_true",
        help="rank the user's own history too (default: removed, as the compared papers do; "
        "the taobao dataset keeps it by default)",
    )
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    ds = load_dataset(args.dataset, args.format, root=args.data_root, min_events=3)
    if args.report:
        rows = load_rows([Path(p) for p in args.report])
        print(format_table(ds, rows))
        plot(args.plot, rows, ds.name, "")
        return 0
    if args.untyped:
        ds = ds.without_types()
    exclude = not args.keep_history and ds.exclude_history
    out = Path(args.out or f"var/quality/{ds.name}")
    settings = load_settings()
    if args.keep_purchased:
        settings = settings.replace(recs={"exclude_purchased": False})
    protocol = ListProtocol.from_settings(settings)
    print(ds.describe(), flush=True)
    t0 = time.perf_counter()
    rows = run_quality(
        ds,
        [s for s in args.presets.split(",") if s],
        out,
        args.minutes,
        seeds=[int(x) for x in args.seeds.split(",") if x],
        exclude_history=exclude,
        epochs=args.epochs,
        overrides=args.set,
        protocol=protocol,
    )
    print()
    print(format_table(ds, rows))
    print(
        f"\nhistory {'removed' if exclude else 'kept'}; {protocol.describe()}; "
        f"{(time.perf_counter() - t0) / 60:.1f} min; results in {out}/results.json"
    )
    plot(
        args.plot,
        rows,
        ds.name,
        f"history {'removed' if exclude else 'kept'}; {protocol.describe()}",
    )
    return 0


def plot(where: str | None, rows: list[Row], dataset: str, about: str) -> None:
    if where:
        from plots import quality_chart

        print(
            f"chart {quality_chart([dataclasses.asdict(r) for r in rows], dataset, Path(where), about)}"
        )


if __name__ == "__main__":
    raise SystemExit(main())
