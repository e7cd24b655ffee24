"""Exact top-K vs the HNSW retriever, side by side on the same item vectors and users:
latency per user (batches of 1 and of 64), recall@K of the approximate lists against the exact
ones, and the graph's build time and memory.

Then the inverted-file indexes of faiss beside the serving graph, index search alone (no
exclusions, no re-scoring; the same fetch of K + 20 per user): the HNSW graph at its calibrated
breadth, IVF-Flat and IVF-PQ (16-byte codes, the top 4K re-ranked on the full vectors), each
calibrated the way the graph is (the probe count doubled until recall@K on catalog items
reaches the target), recall@K measured on the users.

Catalogs: the bench model's item vectors (bench/workload.py) at 10k, 100k and 1M items with user
vectors from its user tower over sampled sessions, and, with --checkpoint/--dataset, a model
trained on a public dataset with its real test users (the geometry recall depends on).

Run:  .venv/bin/python bench/retrieval.py                               # 10k, 100k, 1M
      .venv/bin/python bench/retrieval.py --sizes 100000 --checkpoint var/quality/beauty/streamrec \
          --dataset beauty
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import faiss
import numpy as np
import torch
from tqdm import tqdm

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from encoder import timed  # noqa: E402
from workload import Sessions, make_items, make_model  # noqa: E402

from encoders.checkpoint import TrainedModel, load_checkpoint  # noqa: E402
from encoders.evaluate import encode_history, leave_one_out, user_vectors  # noqa: E402
from streamrec.retrieve.hnsw import HnswParams, exact_top  # noqa: E402
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
    if args.ivf:
        assert retriever._graph is not None
        IVF_ROWS.extend(compare_ivf(name, vectors, users, retriever._graph, build_s, args))
    retriever.close()
    return rows


IVF_ROWS: list[str] = []


def compare_ivf(
    name: str,
    vectors: torch.Tensor,
    users: torch.Tensor,
    graph: object,
    graph_build_s: float,
    args: argparse.Namespace,
) -> list[str]:
    """Index search alone, batches of 64: the calibrated HNSW graph vs IVF-Flat vs IVF-PQ."""
    from streamrec.retrieve.hnsw import HnswGraph

    assert isinstance(graph, HnswGraph)
    x = np.ascontiguousarray(vectors.numpy(), dtype=np.float32)
    q = np.ascontiguousarray(users.numpy(), dtype=np.float32)
    k, fetch, n = args.k, args.k + 20, x.shape[0]
    truth_users = exact_top(x, q, k)
    rng = np.random.default_rng(0)
    calib = x[rng.choice(n, 256, replace=False)]
    truth_calib = exact_top(x, calib, k)
    nlist = args.nlist or int(4 * math.sqrt(n))

    def recall(found: np.ndarray, truth: np.ndarray) -> float:
        return float(
            np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth, strict=True)])
        )

    def ivf(spec: str) -> tuple[faiss.Index, float]:
        t0 = time.perf_counter()
        index = faiss.index_factory(x.shape[1], spec, faiss.METRIC_INNER_PRODUCT)
        index.train(x)
        index.add(x)
        if spec.endswith("RFlat"):
            faiss.downcast_index(index).k_factor = 4  # re-rank 4x the fetch on full vectors
        return index, time.perf_counter() - t0

    def set_probes(index: faiss.Index, probes: int) -> None:
        faiss.ParameterSpace().set_index_parameter(index, "nprobe", probes)

    def calibrate(index: faiss.Index) -> int:
        probes = 1
        while True:
            set_probes(index, probes)
            if recall(index.search(calib, k)[1], truth_calib) >= args.target_recall:
                return probes
            if probes >= nlist:
                return probes
            probes = min(2 * probes, nlist)

    faiss.omp_set_num_threads(1)
    u = q[:64]
    out = []
    t = timed(lambda: graph.search(u, fetch), args.repeats)
    found = graph.search(q, k)
    out.append(
        (
            f"HNSW m={args.m}",
            f"ef {graph.ef_search}",
            t,
            recall(np.asarray(found), truth_users),
            graph_build_s,
        )
    )
    for spec, label in (
        (f"IVF{nlist},Flat", "IVF-Flat"),
        (f"IVF{nlist},PQ16,RFlat", "IVF-PQ 16 B + refine"),
    ):
        index, build_s = ivf(spec)
        probes = calibrate(index)
        set_probes(index, probes)
        t = timed(lambda index=index: index.search(u, fetch), args.repeats)
        found = index.search(q, k)[1]
        out.append(
            (f"{label}, {nlist} lists", f"nprobe {probes}", t, recall(found, truth_users), build_s)
        )
    base = statistics.median(out[0][2])
    rows = []
    for label, breadth, t, rec, build_s in out:
        ms, _ = fmt_ms(t, 64)
        rows.append(
            f"| {name} | {n:,} | {label} | {breadth} | {ms} | {statistics.median(t) / base:.2f}x "
            f"| {rec:.4f} | {build_s:.1f} |"
        )
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
        "--ivf", action="store_true", help="also IVF-Flat and IVF-PQ beside the graph's search"
    )
    ap.add_argument("--nlist", type=int, default=0, help="IVF lists (default 4 sqrt(items))")
    ap.add_argument("--target-recall", type=float, default=HnswParams().target_recall)
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
    if IVF_ROWS:
        print(
            f"\nindex search alone, batches of 64, fetch {args.k + 20}, 1 thread; each index "
            f"calibrated on catalog items to recall@{args.k} >= {args.target_recall}; ms per "
            f"user, median (min-max) of {args.repeats}; recall@{args.k} on the users"
        )
        print("\n| vectors | items | index | breadth | ms/user | vs HNSW | recall | build s |")
        print("|---|---|---|---|---|---|---|---|")
        for r in IVF_ROWS:
            print(r)
    return 0


if __name__ == "__main__":
    sys.exit(main())
