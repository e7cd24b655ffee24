"""Start-up of the item graph: built from the catalog vs loaded from the graph the last run saved
(``retrieval.save_graph``), side by side on the same vectors, with the recall@K of each against
the exact scan. The reload reads the catalog back in another row order and with a share of
items re-embedded since the save (``--changed``), as a restarted worker would.

Run:  .venv/bin/python bench/graph_reload.py --sizes 100000,1000000 --loads 3
Prints seconds (median (min-max) of the loads; one build per size) and the ratio load / build.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from tqdm import tqdm

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from retrieval import bench_users  # noqa: E402
from workload import make_items, make_model  # noqa: E402

from streamrec.retrieve.graph_store import GraphStore  # noqa: E402
from streamrec.retrieve.hnsw import HnswParams  # noqa: E402
from streamrec.retrieve.index import ItemIndex  # noqa: E402
from streamrec.retrieve.retriever import RetrievalConfig, Retriever, recall_at_k  # noqa: E402


def start(
    vectors: torch.Tensor, order: list[int], store: GraphStore, config: RetrievalConfig
) -> tuple[Retriever, float]:
    """A retriever over ``vectors`` inserted in ``order``, ready to serve: seconds from the
    catalog in memory to the graph serving (built, or loaded and matched)."""
    index = ItemIndex(vectors.shape[1], capacity=vectors.shape[0])
    for i in order:
        index.upsert(f"i{i}", vectors[i], True)
    retriever = Retriever(index, config, store)
    t0 = time.perf_counter()
    retriever.maintain(block=True)
    return retriever, time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument("--loads", type=int, default=3)
    ap.add_argument("--changed", type=float, default=0.01, help="share re-embedded since the save")
    ap.add_argument("--users", type=int, default=256)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--dir", default=None, help="where graphs are saved (default: a temp dir)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    config = RetrievalConfig(method="hnsw", k=args.k, hnsw=HnswParams(threads=1))
    rows = []
    root = Path(args.dir or tempfile.mkdtemp(prefix="graph-reload-"))
    for n in tqdm([int(s) for s in args.sizes.split(",") if s], desc="catalogs", file=sys.stderr):
        items = make_items(n)
        model = make_model(items)
        vectors = model.vocab_item_vectors()[1:].contiguous()
        users = bench_users(model, items, args.users)
        store = GraphStore(root / f"{n}")
        built, build_s = start(vectors, list(range(n)), store, config)
        t0 = time.perf_counter()
        built.close()  # waits for the save
        save_s = time.perf_counter() - t0
        exact = built.index.topk(users, args.k)
        recall_built = recall_at_k(built.topk(users, args.k), exact)
        # the restart: another row order, a share of the items re-embedded since the save
        g = torch.Generator().manual_seed(1)
        order = torch.randperm(n, generator=g).tolist()
        moved = vectors.clone()
        changed = torch.randperm(n, generator=g)[: int(args.changed * n)]
        moved[changed] = moved[changed.roll(1)]  # other items' vectors: surely different
        loads, recalls, stale = [], [], 0
        for _ in tqdm(range(args.loads), desc=f"loads of {n:,}", leave=False, file=sys.stderr):
            loaded, load_s = start(moved, order, store, config)
            assert loaded.stats.graph_loaded == 1, "the saved graph was not loaded"
            loads.append(load_s)
            truth = loaded.index.topk(users, args.k)
            recalls.append(recall_at_k(loaded.topk(users, args.k), truth))
            stale = loaded.stats.stale_rows
            loaded.close()
        med = statistics.median(loads)
        rows.append(
            f"| {n:,} | {build_s:.1f} | {save_s:.1f} | {med:.2f} ({min(loads):.2f}–"
            f"{max(loads):.2f}) | {med / build_s:.3f}× | {recall_built:.4f} | "
            f"{statistics.median(recalls):.4f} | {stale:,} |"
        )
    print(
        f"\nitem graph at start: built vs loaded (bench item vectors, d=64, m=32, 1 search "
        f"thread, build on every core); the reload has the rows in another order and "
        f"{args.changed:.0%} of the items re-embedded; recall@{args.k} against the exact scan "
        f"over {args.users} users\n"
    )
    print(
        "| items | build s | save s | load s | load / build | recall built | recall loaded "
        "| rows scanned exactly after the load |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(r)
    return 0


if __name__ == "__main__":
    sys.exit(main())
