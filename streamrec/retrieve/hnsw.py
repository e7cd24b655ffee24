"""An HNSW graph (faiss) over a snapshot of item vectors: approximate inner-product top-K.

The graph is immutable once built: it answers "which snapshot rows score highest", and the
caller re-scores those candidates from the live matrix and patches in what changed since (see
``streamrec.retrieve.retriever``). faiss releases the GIL while it builds and searches, so a
build can run on a background thread beside the serving loop.
"""

from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np


@dataclass(frozen=True)
class HnswParams:
    m: int = 32  # graph degree: memory ~ 2*m*4 bytes per item on top of the vectors
    ef_construction: int = 200
    ef_search: int = 64  # starting breadth; calibration raises it to meet target_recall
    threads: int = 1
    target_recall: float = 0.95
    max_ef_search: int = 2048


class HnswGraph:
    def __init__(self, vectors: np.ndarray, rows: np.ndarray, params: HnswParams) -> None:
        """Index ``vectors`` [n, d] (float32), answering with ``rows`` [n] (int64) as ids."""
        base = faiss.IndexHNSWFlat(vectors.shape[1], params.m, faiss.METRIC_INNER_PRODUCT)
        base.hnsw.efConstruction = params.ef_construction
        faiss.omp_set_num_threads(params.threads)  # OpenMP: for this (building) thread only
        base.add(np.ascontiguousarray(vectors, dtype=np.float32))
        self._init(base, rows, params)

    def _init(self, base: faiss.IndexHNSWFlat, rows: np.ndarray, params: HnswParams) -> None:
        self.params = params
        self.ef_search = params.ef_search
        self.recall = float("nan")  # measured by calibrate(); nan until then
        self._base = base
        # graph position -> catalog row; -1 for a position whose item is gone (a reloaded graph)
        self.rows = np.ascontiguousarray(rows, dtype=np.int64)
        self.size = int(self.rows.shape[0])

    @classmethod
    def from_index(
        cls, base: faiss.IndexHNSWFlat, rows: np.ndarray, params: HnswParams
    ) -> HnswGraph:
        """A graph around an index built before (``streamrec.retrieve.graph_store``)."""
        graph = cls.__new__(cls)
        graph._init(base, rows, params)
        return graph

    @property
    def index(self) -> faiss.IndexHNSWFlat:
        return self._base

    @property
    def bytes(self) -> int:
        """Vectors plus level-0 links (the bulk of the graph)."""
        d = self._base.d
        return self.size * (4 * d + 8 * self.params.m + 8)

    def search(self, queries: np.ndarray, n: int, ef: int | None = None) -> np.ndarray:
        """The ``n`` best rows per query [B, n]; -1 pads when the graph has fewer."""
        ps = faiss.SearchParametersHNSW()  # type: ignore[attr-defined]  # missing from the stubs
        ps.efSearch = max(ef or self.ef_search, n)
        _, pos = self._base.search(np.ascontiguousarray(queries, dtype=np.float32), n, params=ps)
        return np.where(pos >= 0, self.rows[np.maximum(pos, 0)], -1)


def exact_top(
    vectors: np.ndarray, queries: np.ndarray, k: int, bias: np.ndarray | None = None
) -> np.ndarray:
    """Positions of the true top-``k`` vectors per query by inner product (+ bias) [B, k]."""
    import torch

    scores = torch.from_numpy(queries) @ torch.from_numpy(vectors).T
    if bias is not None:
        scores += torch.from_numpy(bias)
    return torch.topk(scores, min(k, vectors.shape[0]), dim=1).indices.numpy()


def calibrate(graph: HnswGraph, truth: np.ndarray, queries: np.ndarray, k: int) -> None:
    """Set the graph's search breadth to the smallest (doubling from the configured one) whose
    recall@k on ``queries`` against ``truth`` (their exact top-k rows) reaches the target. Recall
    depends on the geometry of the vectors, which no fixed setting suits: trained embeddings
    cluster and a breadth of 64 is plenty; near-uniform ones need several hundred."""
    params = graph.params
    ef = params.ef_search
    while True:
        found = graph.search(queries, k, ef)
        hits = [len(set(f) & set(t)) / max(1, len(t)) for f, t in zip(found, truth, strict=True)]
        recall = float(np.mean(hits)) if hits else 1.0
        if recall >= params.target_recall or ef >= params.max_ef_search:
            graph.ef_search, graph.recall = ef, recall
            return
        ef = min(2 * ef, params.max_ef_search)


def set_search_threads(threads: int) -> None:
    """OpenMP threads for searches issued from the calling thread (the serving loop)."""
    faiss.omp_set_num_threads(threads)
