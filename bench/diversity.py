"""The accuracy / diversity trade-off of ``recs.diversity``: the served lists (a checkpoint's
candidates ranked by its ranker, then re-ranked by MMR) at several settings, beside the simple
lists, on the same leave-one-out test cases as bench/quality.py, with the beyond-accuracy
metrics (streamrec/recommend/list_metrics.py) of every row, all measured in the checkpoint's
item space.

    OMP_NUM_THREADS=1 .venv/bin/python bench/diversity.py taobao var/quality/taobao/streamrec
    OMP_NUM_THREADS=1 .venv/bin/python bench/diversity.py ml-1m var/quality/ml-1m/streamrec

Prints one table: HR/NDCG@10, ILD, categories per list, catalog coverage and novelty of the top
10, and the time MMR adds per list.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from collections.abc import Callable

import numpy as np
import torch
from tqdm import tqdm

from encoders.checkpoint import load_checkpoint
from encoders.evaluate import leave_one_out
from encoders.metrics import at_k
from streamrec.datasets import load_dataset
from streamrec.quality import HEURISTICS
from streamrec.recommend.candidates import CandidateBatch
from streamrec.recommend.diversity import mmr_scores
from streamrec.recommend.list_metrics import list_metrics
from streamrec.recommend.offline import (
    ListProtocol,
    ListState,
    as_cases,
    candidates_for,
    ranks_of,
    served_scores,
)
from streamrec.settings import load_settings

Score = Callable[[CandidateBatch], np.ndarray]
DEPTH = 10


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("dataset")
    p.add_argument("checkpoint")
    p.add_argument("--settings", default="0,0.1,0.25,0.5,0.75", help="recs.diversity values")
    args = p.parse_args()
    torch.set_num_threads(1)
    settings = load_settings()
    k = settings.recs.k
    ds = load_dataset(args.dataset, None, min_events=3)
    protocol = ListProtocol.from_settings(settings)
    trained = load_checkpoint(args.checkpoint)
    split = leave_one_out(ds.sequences)
    state = ListState.from_sequences(split.train, protocol)
    blocks = candidates_for(as_cases(split.test), state, protocol, trained, ds.exclude_history)
    vocab = trained.vocab_item_vectors().numpy()
    row_of = trained.row_of
    categories = {i: str(f["category"]) for i, f in ds.items.items() if "category" in f}
    counts = Counter(i for seq in split.train.values() for i, _, _ in seq)
    served = served_scores(trained)

    def diversified(lam: float) -> Score:
        def score(batch: CandidateBatch) -> np.ndarray:
            vectors = vocab[[row_of.get(i, 0) for i in batch.item_ids]]
            cats = [categories.get(i) for i in batch.item_ids] if categories else None
            return mmr_scores(batch, served(batch), k, lam, vectors, cats)

        return score

    systems: dict[str, Score] = dict(HEURISTICS)
    for text in args.settings.split(","):
        lam = float(text)
        systems[f"served (ranker), diversity {lam:g}"] = diversified(lam)
    rows = []
    for name, fn in tqdm(systems.items(), desc="lists"):
        t0 = time.perf_counter()
        scores = [fn(batch) for batch, _ in blocks]
        seconds = time.perf_counter() - t0
        parts = iter(scores)
        ranks = ranks_of(blocks, lambda _b, parts=parts: next(parts))
        accuracy = at_k(torch.from_numpy(ranks), (DEPTH,))
        lists = [
            [batch.item_ids[r] for r in rows_]
            for (batch, _), s in zip(blocks, scores, strict=True)
            for rows_ in batch.top_rows(s, DEPTH)
        ]
        beyond = list_metrics(lists, vocab, row_of, categories, counts, len(trained.item_ids))
        rows.append((name, accuracy, beyond, seconds / max(1, len(lists)) * 1e6))
    base = next(r for r in rows if r[0].endswith("diversity 0"))[1][f"ndcg@{DEPTH}"]
    print(f"\n{ds.describe()}; {protocol.describe()}; checkpoint {args.checkpoint}; lists of {k}\n")
    cols = ["ild", "categories", "coverage", "novelty"]
    have = [c for c in cols if c in rows[0][2]]
    print(
        f"| lists | HR@{DEPTH} | NDCG@{DEPTH} | NDCG@{DEPTH} vs diversity 0 | "
        + " | ".join(f"{c}@{DEPTH}" for c in have)
        + " | µs per list (scoring + re-ranking) |"
    )
    print("|---|" + "---:|" * (4 + len(have)))
    for name, acc, beyond, us in rows:
        ndcg = acc[f"ndcg@{DEPTH}"]
        print(
            f"| {name} | {acc[f'hr@{DEPTH}']:.4f} | {ndcg:.4f} | {ndcg / base:.2f}× | "
            + " | ".join(f"{beyond[c]:.3f}" for c in have)
            + f" | {us:,.0f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
