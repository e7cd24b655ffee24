"""Ranker variants refit on a saved checkpoint, side by side on the same candidates: the ranker as
`streamrec train` fits it, with per-user context columns, and with the loss weighted by the
next event's type. Same leave-one-out split as bench/quality.py: fit on the validation cases
(second-to-last events), scored on the test cases (last events), beside the simple lists and
the candidates' ceiling (the next item first whenever a source found it).

    STREAMREC_RECS_EXCLUDE_PURCHASED=false OMP_NUM_THREADS=1 \\
      .venv/bin/python bench/ranker_variants.py trivago var/quality3/trivago/seed0/streamrec

Prints test NDCG@10 per variant and ranker seed, and each as a ratio of the best simple list.
"""

from __future__ import annotations

import argparse
import math
import statistics
from collections.abc import Sequence

import numpy as np
import torch
from tqdm import tqdm

from encoders.checkpoint import load_checkpoint
from encoders.evaluate import leave_one_out
from encoders.metrics import at_k
from encoders.ranker import RankerTrainConfig, fit_ranker
from streamrec.datasets import load_dataset
from streamrec.quality import HEURISTICS
from streamrec.recommend.candidates import FEATURES, CandidateBatch, F
from streamrec.recommend.offline import (
    Case,
    ListProtocol,
    ListState,
    as_cases,
    candidates_for,
    flatten_blocks,
    ranks_of,
)
from streamrec.settings import load_settings

Blocks = list[tuple[CandidateBatch, list[int]]]
RELATIVE = ("model_score_vs_best", "covisit_vs_best")
CONTEXT = ("user_last_browse", "user_last_click", "user_last_purchase", "user_gap", "user_len")
TYPE_WEIGHTS = (1.0, 2.0, 4.0)  # browse, click, purchase: the co-visitation weights


def context_columns(cases: Sequence[Case], blocks: Blocks) -> np.ndarray:
    """Per row, its user's context: the type of their last event, the gap to the one before it
    (log seconds / 10, -0.1 for none) and log1p(history length) / 5."""
    out: list[list[float]] = []
    case = iter(cases)
    for batch, _ in blocks:
        for b in range(batch.n_users):
            history, _ = next(case)
            code = history[-1][1]
            gap = history[-1][2] - history[-2][2] if len(history) > 1 else -1.0
            row = [float(code == t) for t in range(3)]
            row += [math.log1p(gap) / 10 if gap >= 0 else -0.1, math.log1p(len(history)) / 5]
            out.extend([row] * (batch.offsets[b + 1] - batch.offsets[b]))
    return np.asarray(out, np.float32).reshape(-1, len(CONTEXT))


def relative_columns(blocks: Blocks) -> np.ndarray:
    """Per row, its model and co-visitation scores minus the best of its user's candidates: a
    row scorer sees a candidate alone, and these say how it stands among the others."""
    out = []
    for batch, _ in blocks:
        f = batch.features
        for b in range(batch.n_users):
            lo, hi = batch.offsets[b], batch.offsets[b + 1]
            part = f[lo:hi][:, [F["model_score"], F["covisit"]]]
            out.append(part - part.max(0, keepdims=True))
    return np.concatenate(out).astype(np.float32)


def ndcg10(blocks: Blocks, scores: np.ndarray) -> float:
    """Test NDCG@10 of flat per-row ``scores`` over ``blocks``, ranked as every evaluation
    ranks (``ranks_of``: ties pessimistic, a next item no source found is a miss)."""
    parts = iter(np.split(scores, np.cumsum([len(batch) for batch, _ in blocks])[:-1]))
    ranks = ranks_of(blocks, lambda _batch: next(parts))
    return at_k(torch.from_numpy(ranks), (10,))["ndcg@10"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("dataset")
    p.add_argument("checkpoint")
    p.add_argument("--seeds", default="0,1", help="ranker fit seeds")
    args = p.parse_args()
    torch.set_num_threads(1)
    ds = load_dataset(args.dataset, None, min_events=3)
    protocol = ListProtocol.from_settings(load_settings())
    trained = load_checkpoint(args.checkpoint)
    split = leave_one_out(ds.sequences)
    state = ListState.from_sequences(split.train, protocol)
    valid, test = as_cases(split.valid), as_cases(split.test)
    vb = candidates_for(valid, state, protocol, trained, ds.exclude_history)
    tb = candidates_for(test, state, protocol, trained, ds.exclude_history)
    simple = {
        name: at_k(torch.from_numpy(ranks_of(tb, fn)), (10,))["ndcg@10"]
        for name, fn in HEURISTICS.items()
    }
    best = max(simple.values())
    vx, vo, vl = flatten_blocks(vb)
    tx, _, tl = flatten_blocks(tb)
    vc, tc = context_columns(valid, vb), context_columns(test, tb)
    weights = [TYPE_WEIGHTS[t[1]] for _, t in valid]
    variants = {
        "as fit by streamrec train": (vx, tx, FEATURES, None, 32),
        "+ user context columns": (
            np.concatenate([vx, vc], 1), np.concatenate([tx, tc], 1), FEATURES + CONTEXT, None, 32
        ),
        "loss weighted by next type (1/2/4)": (vx, tx, FEATURES, weights, 32),
        "+ scores relative to the user's best candidate": (
            np.concatenate([vx, relative_columns(vb)], 1),
            np.concatenate([tx, relative_columns(tb)], 1),
            FEATURES + RELATIVE, None, 32,
        ),
        "hidden 64": (vx, tx, FEATURES, None, 64),
    }  # fmt: skip
    seeds = [int(s) for s in args.seeds.split(",") if s]
    results: dict[str, list[float]] = {}
    with tqdm(total=len(variants) * len(seeds), desc="ranker fits") as bar:
        for name, (x, txx, names, w, hidden) in variants.items():
            for seed in seeds:
                cfg = RankerTrainConfig(seed=seed)
                ranker, _ = fit_ranker(x, vo, vl, names, cfg, hidden=hidden, weights=w)
                results.setdefault(name, []).append(ndcg10(tb, ranker.score(txx)))
                bar.update()
    ceiling = float(np.mean([lab >= 0 for lab in tl]))
    print(f"\n{ds.describe()}; {protocol.describe()}; checkpoint {args.checkpoint}\n")
    print("| lists | test NDCG@10 (per ranker seed) | median vs best simple |")
    print("|---|---|---:|")
    for name, v in simple.items():
        print(f"| {name} | {v:.4f} | {v / best:.3f}× |")
    for name, vals in results.items():
        cells = " / ".join(f"{v:.4f}" for v in vals)
        print(f"| {name} | {cells} | {statistics.median(vals) / best:.3f}× |")
    print(f"| candidates, next item first (ceiling) | {ceiling:.4f} | {ceiling / best:.3f}× |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
