"""Exact top-K vs the HNSW retriever, side by side on the same item vectors and users:
latency per user (batches of 1 and of 64), recall@K of the approximate lists against the exact
ones, and the graph's build time and memory.

Catalogs: the bench model's item vectors (bench/workload.py) at 10k, 100k and 1M items with user
vectors from its user tower over sampled sessions, and, with --checkpoint/--dataset, a model
trained on a public dataset with its real test users (the geometry recall depends on).

Run:  .venv/bin/python bench/retrieval.py                               # 10k, 100k, 1M
      .venv/bin/python bench/retrieval.py --sizes 100000 --checkpoint var/quality/beauty/streamrec \
          --dataset beauty
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from encoder import timed  # noqa: E402
from workload import Sessions, make_items, make_model  # noqa: E402

from encoders.checkpoint import TrainedModel, load_checkpoint  # noqa: E402
from encoders.evaluate import encode_history, leave_one_out, user_vectors  # noqa: E402
from streamrec.retrieve.hnsw import HnswParams  # noqa: E402
from streamrec.retrieve.index import ItemIndex  # noqa: E402
from streamrec.retrieve.retriever import RetrievalConfig, Retriever, recall_at_k  # noqa: E402


def fmt_ms(seconds: list[float], per: int) -> tuple[str, float]:
    ms = [s / per * 1e3 for s in seconds]
    med = statistics.median(ms)
    return f"{med:.3f} ({min(ms):.3f}-{max(ms):.3f})", med


def bench_users(
    model: TrainedModel, items: list[dict], n_users: int, tower: bool = False
) -> torch.Tensor:
    """Users after a session-shaped history of 5-60 events each. The bench model is untrained, so
    its user tower points nowhere in particular (the hardest case for a graph search, ``tower``);
    by default a user is the mean of their history's item vectors, which is where a trained tower
    points: near the items the user engaged with."""
    row_of = model.row_of
    sessions = Sessions(items, n_users * 10, seed=3).events("q")
    g = torch.Generator().manual_seed(0)
    histories = []
    for _ in range(n_users):
        n = int(torch.randint(5, 60, (1,), generator=g))
        seq = [(next(sessions)[3], 0, 60.0 * i) for i in range(n)]
        histories.append(encode_history(seq, row_of))
    vecs = model.vocab_item_vectors()
    if tower:
        return user_vectors(model.model, vecs, histories)
    return torch.stack([vecs[torch.tensor(rows)].mean(0) for rows, _, _ in histories])


def compare(
    name: str, vectors: torch.Tensor, users: torch.Tensor, args: argparse.Namespace
) -> list[str]:
    index = ItemIndex(vectors.shape[1], capacity=vectors.shape[0])
    for i in range(vectors.shape[0]):
        index.upsert(f"i{i}", vectors[i], True)
    params = HnswParams(args.m, args.ef_construction, args.ef_search, threads=1)
    retriever = Retriever(index, RetrievalConfig(method="hnsw", hnsw=params))
    t0 = time.perf_counter()
    retriever.maintain(block=True)
    build_s = time.perf_counter() - t0
    k = args.k
    exclude = [list(range(j, j + 20)) for j in range(users.shape[0])]  # purchased-like
    recall = recall_at_k(retriever.topk(users, k, exclude), index.topk(users, k, exclude))
    rows = []
    for b in (1, 64):
        u, ex = users[:b], exclude[:b]
        reps = args.repeats
        e_t, e_m = fmt_ms(timed(lambda u=u, ex=ex: index.topk(u, k, ex), reps), b)
        a_t, a_m = fmt_ms(timed(lambda u=u, ex=ex: retriever.topk(u, k, ex), reps), b)
        graph_mb = retriever._graph.bytes / 2**20 if retriever._graph else 0.0
        rows.append(
            f"| {name} | {vectors.shape[0]:,} | {b} | {e_t} | {a_t} | {e_m / a_m:.1f}x | "
            f"{recall:.4f} | {retriever.stats.ef_search} | {build_s:.1f} | {graph_mb:.0f} |"
        )
    retriever.close()
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--users", type=int, default=512)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--m", type=int, default=32)
    ap.add_argument("--ef-construction", type=int, default=200)
    ap.add_argument("--ef-search", type=int, default=64)
    ap.add_argument(
        "--checkpoint", action="append", default=[], help="a trained model (repeatable)"
    )
    ap.add_argument("--dataset", action="append", default=[], help="its dataset, same order")
    ap.add_argument("--data-root", default="../shared/data")
    ap.add_argument(
        "--untrained-tower",
        action="store_true",
        help="also query with the untrained bench tower's user vectors (worst case)",
    )
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows: list[str] = []
    sizes = [int(s) for s in args.sizes.split(",") if s]
    for n in tqdm(sizes, desc="bench catalogs", file=sys.stderr):
        items = make_items(n)
        model = make_model(items)
        vectors = model.vocab_item_vectors()[1:]
        users = bench_users(model, items, args.users)
        rows += compare("bench, history-mean users", vectors, users, args)
        if args.untrained_tower:
            users = bench_users(model, items, args.users, tower=True)
            rows += compare("bench, untrained-tower users", vectors, users, args)
    for ckpt, dataset in zip(args.checkpoint, args.dataset, strict=True):
        from streamrec.datasets.registry import load_dataset

        model = load_checkpoint(ckpt)
        ds = load_dataset(dataset, root=args.data_root)
        split = leave_one_out(ds.sequences)
        test = list(split.test)[: args.users]
        histories = [encode_history(split.test[u][0], model.row_of) for u in test]
        vecs = model.vocab_item_vectors()
        users = user_vectors(model.model, vecs, histories)
        rows += compare(f"trained on {dataset}", vecs[1:], users, args)
    print(
        f"\nexact scan vs HNSW (m={args.m}, ef_construction={args.ef_construction}, "
        f"ef_search={args.ef_search}), top-{args.k} with 20 excluded items per user, 1 thread; "
        f"ms per user, median (min-max) of {args.repeats} repeats; recall@{args.k} over "
        f"{args.users} users; the search breadth is calibrated at build (on catalog items) to "
        f"recall {HnswParams().target_recall}"
    )
    print(
        "\n| vectors | items | batch | exact ms/user | hnsw ms/user | speed-up | recall "
        "| ef (calibrated) | build s | graph MB |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(r)
    return 0


if __name__ == "__main__":
    sys.exit(main())
