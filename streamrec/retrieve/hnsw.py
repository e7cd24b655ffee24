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
    ef_construction: int = 100
    ef_search: int = 64  # raised per search to at least the number of candidates asked for
    threads: int = 1


class HnswGraph:
    def __init__(self, vectors: np.ndarray, rows: np.ndarray, params: HnswParams) -> None:
        """Index ``vectors`` [n, d] (float32), answering with ``rows`` [n] (int64) as ids."""
        self.params = params
        self.size = int(rows.shape[0])
        base = faiss.IndexHNSWFlat(vectors.shape[1], params.m, faiss.METRIC_INNER_PRODUCT)
        base.hnsw.efConstruction = params.ef_construction
        self._base = base
        self._index = faiss.IndexIDMap(base)
        faiss.omp_set_num_threads(params.threads)
        self._index.add_with_ids(
            np.ascontiguousarray(vectors, dtype=np.float32), rows.astype(np.int64)
        )

    @property
    def bytes(self) -> int:
        """Vectors plus level-0 links (the bulk of the graph)."""
        d = self._base.d
        return self.size * (4 * d + 8 * self.params.m + 8)

    def search(self, queries: np.ndarray, n: int) -> np.ndarray:
        """The ``n`` best rows per query [B, n]; -1 pads when the graph has fewer."""
        ps = faiss.SearchParametersHNSW()  # type: ignore[attr-defined]  # missing from the stubs
        ps.efSearch = max(self.params.ef_search, n)
        _, rows = self._index.search(np.ascontiguousarray(queries, dtype=np.float32), n, params=ps)
        return rows
