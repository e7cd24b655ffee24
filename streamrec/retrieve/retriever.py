"""Top-K for a batch of users: exact scan below a catalog size, an HNSW graph above it.

The graph covers a snapshot of the catalog and is rebuilt on a background thread; rows that
changed since the snapshot (new items, new vectors, items made available again) are scanned
exactly, so an update is listed at once and never through a stale vector. Graph candidates are
re-scored from the live matrix, so unavailable and excluded items are filtered by the same bias
and masks as the exact path. Lists are over-fetched by a margin; a user left with fewer than ``k``
after filtering is searched again with room for all their exclusions, and then, if most of their
neighbourhood is unavailable, answered by a scan. ``ItemIndex.topk`` stays the reference the
approximate path is measured against.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch import Tensor

from streamrec.retrieve.graph_store import GraphStore
from streamrec.retrieve.hnsw import (
    HnswGraph,
    HnswParams,
    calibrate,
    exact_top,
    set_search_threads,
)
from streamrec.retrieve.index import NEG_INF, ItemIndex

log = logging.getLogger(__name__)
CALIBRATION_QUERIES = 256

Ranked = list[list[tuple[int, float]]]


@dataclass(frozen=True)
class RetrievalConfig:
    method: str = "auto"  # exact | hnsw | auto (hnsw from ann_min_items on)
    ann_min_items: int = 20000
    rebuild_fraction: float = 0.05
    k: int = 20  # list length the graph's recall is calibrated for
    max_unlisted_items: int = 100_000  # rows for items seen in events, absent from the catalog
    hnsw: HnswParams = field(default_factory=HnswParams)


@dataclass
class RetrievalStats:
    exact_queries: int = 0
    ann_queries: int = 0
    ann_retries: int = 0  # users searched again with room for all their exclusions
    ann_fallbacks: int = 0  # users answered exactly after filtering still left fewer than k
    graph_items: int = 0
    graph_builds: int = 0
    graph_build_s: float = 0.0
    stale_rows: int = 0
    graph_loaded: int = 0  # 1 while the graph serving was loaded from disk, not built here
    graph_load_s: float = 0.0
    graph_saves: int = 0
    ef_search: int = 0
    recall_estimate: float = 0.0  # graph recall@k vs the exact scan on calibration queries
    calibrated_on_live_users: int = 0  # 1 once calibrated on served user vectors, not proxies


@dataclass
class _Ready:
    """A graph to serve: built here (and then saved), or loaded from the store."""

    graph: HnswGraph
    seconds: float
    stale: set[int]  # rows the graph does not hold as they are now
    loaded: bool
    item_ids: list[str] | None = None  # per graph position, to save it (None: not to be saved)


class Retriever:
    def __init__(
        self,
        index: ItemIndex,
        config: RetrievalConfig | None = None,
        store: GraphStore | None = None,
    ) -> None:
        self.index = index
        self.config = config or RetrievalConfig()
        # Where built graphs are saved and the first one is loaded from (None: never on disk).
        self.store = store
        self._load_tried = False
        self._saving: Future[None] | None = None
        set_search_threads(self.config.hnsw.threads)
        self._graph: HnswGraph | None = None
        self._stale: set[int] = set()  # rows the live graph may hold outdated, in addition to
        # the index's change log (rows changed since the snapshot being built or served)
        self._pool: ThreadPoolExecutor | None = None
        self._building: Future[_Ready | None] | None = None
        self._calibrating: Future[None] | None = None
        # A sample of served user vectors: calibration queries that look like real traffic.
        self._recent: deque[np.ndarray] = deque(maxlen=CALIBRATION_QUERIES)
        self._on_live = False
        self.stats = RetrievalStats()

    def wants_graph(self) -> bool:
        c = self.config
        if c.method == "exact":
            return False
        return c.method == "hnsw" or len(self.index) >= c.ann_min_items

    @property
    def graph_ready(self) -> bool:
        return self._graph is not None

    # -- graph upkeep ---------------------------------------------------------------------------

    def _stale_rows(self) -> set[int]:
        return self._stale | self.index.changed

    def maintain(self, block: bool = False) -> None:
        """Swap in a finished graph; start a build when there is none or too much is stale (the
        first time, with a store, load the saved graph instead)."""
        if self._building is not None and (block or self._building.done()):
            try:
                ready = self._building.result()
            except Exception:
                # Serving goes on with the exact scan (slower, never wrong).
                log.exception("building the item graph failed; scanning exactly from now on")
                self._building = None
                self.config = replace(self.config, method="exact")
                return
            self._building = None
            if ready is not None:  # None: no saved graph fits; the build below starts
                self._install(ready)
        if self._calibrating is not None and self._calibrating.done():
            self._calibrating = None
            self._record_calibration()
        if (
            self._graph is not None
            and not self._on_live
            and self._calibrating is None
            and len(self._recent) == CALIBRATION_QUERIES
        ):
            self._start_calibration(self._graph)
        if not self.wants_graph() or self._building is not None:
            return
        limit = self.config.rebuild_fraction * len(self.index)
        if self._graph is None or len(self._stale_rows()) > limit:
            if self._graph is None and self.store is not None and not self._load_tried:
                self._start_load(self.store)
            else:
                self._start_build()
            if block:
                self.maintain(block=True)

    def _install(self, ready: _Ready) -> None:
        graph = ready.graph
        self._graph = graph
        self._stale = ready.stale
        loaded = ready.loaded
        self.stats.graph_loaded = int(loaded)
        if loaded:
            self.stats.graph_load_s = ready.seconds
        else:
            self.stats.graph_builds += 1
            self.stats.graph_build_s = ready.seconds
        self.stats.graph_items = graph.size
        self._record_calibration()
        log.info(
            "item graph ready: %d items, %s in %.1f s, ef_search %d, recall@%d %.3f",
            graph.size,
            "loaded" if loaded else "built",
            ready.seconds,
            graph.ef_search,
            self.config.k,
            graph.recall,
        )
        if self.store is not None and ready.item_ids is not None:
            assert self._pool is not None
            self._saving = self._pool.submit(self._save, self.store, graph, ready.item_ids)

    def _save(self, store: GraphStore, graph: HnswGraph, item_ids: list[str]) -> None:
        try:
            store.save(graph, item_ids)
            self.stats.graph_saves += 1
        except Exception:  # a restart then builds again: slower, never wrong
            log.exception("saving the item graph to %s failed", store.directory)

    def _record_calibration(self) -> None:
        if self._graph is not None:
            self.stats.ef_search = self._graph.ef_search
            self.stats.recall_estimate = self._graph.recall
            self.stats.calibrated_on_live_users = int(self._on_live)

    def _queries(self, vectors: np.ndarray) -> tuple[np.ndarray, bool]:
        """Calibration queries: served user vectors once there are enough, else catalog items
        (a proxy: users are trained to point at the items they engage with)."""
        if len(self._recent) == CALIBRATION_QUERIES:
            return np.stack(self._recent), True
        rng = np.random.default_rng(0)
        pick = rng.choice(vectors.shape[0], min(CALIBRATION_QUERIES, vectors.shape[0]), False)
        return vectors[pick], False

    def _start_calibration(self, graph: HnswGraph) -> None:
        """Re-measure the serving graph's recall on real traffic, off the serving thread."""
        queries = np.stack(self._recent)
        matrix = self.index.matrix.numpy()
        bias = self.index.bias.numpy()
        self._on_live = True
        k = self.config.k

        def run() -> None:
            truth = exact_top(matrix, queries, k, bias)
            calibrate(graph, truth, queries, k)
            log.info(
                "item graph recalibrated on served users: ef_search %d, recall@%d %.3f",
                graph.ef_search,
                k,
                graph.recall,
            )

        assert self._pool is not None
        self._calibrating = self._pool.submit(run)

    def _snapshot(self) -> tuple[np.ndarray, np.ndarray, list[str] | None]:
        """The available rows' vectors and row numbers, and with a store their item ids (what a
        saved graph is matched by)."""
        vectors, rows = self.index.snapshot()
        # Changes from here on are relative to the new snapshot; the graph still serving is also
        # stale for what changed before it.
        self._stale |= self.index.take_changes()
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="hnsw-build")
        ids = self.index.ids
        item_ids = [ids[r] for r in rows.tolist()] if self.store is not None else None
        return vectors, rows, item_ids

    def _start_load(self, store: GraphStore) -> None:
        self._load_tried = True
        vectors, rows, item_ids = self._snapshot()
        assert item_ids is not None
        self._on_live = False  # its recall is re-measured on served users
        params = self.config.hnsw

        def load() -> _Ready | None:
            t0 = time.perf_counter()
            try:
                loaded = store.load(vectors, rows, item_ids, params)
            except Exception:
                log.exception("loading the saved item graph failed; building one instead")
                return None
            if loaded is None:
                return None
            graph, stale = loaded
            return _Ready(graph, time.perf_counter() - t0, stale, loaded=True)

        assert self._pool is not None
        self._building = self._pool.submit(load)

    def _start_build(self) -> None:
        vectors, rows, item_ids = self._snapshot()
        queries, self._on_live = self._queries(vectors)
        params = self.config.hnsw
        if self._graph is None:
            # Nothing is served from a graph yet (the worker waits for it): build on every core.
            params = replace(params, threads=max(params.threads, os.cpu_count() or 1))

        k = self.config.k

        def build() -> _Ready:
            t0 = time.perf_counter()
            graph = HnswGraph(vectors, rows, params)
            calibrate(graph, rows[exact_top(vectors, queries, k)], queries, k)
            return _Ready(graph, time.perf_counter() - t0, set(), False, item_ids)

        assert self._pool is not None
        self._building = self._pool.submit(build)

    def close(self) -> None:
        """Stop the background work; a save under way or queued is finished first (seconds, where
        the rebuild it spares the next start takes minutes)."""
        if self._saving is not None:
            self._saving.result()
            self._saving = None
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    # -- search ---------------------------------------------------------------------------------

    def topk(
        self, user_vectors: Tensor, k: int, exclude_rows: Sequence[Sequence[int]] = ()
    ) -> Ranked:
        self.maintain()
        b = user_vectors.shape[0]
        if b and len(self._recent) < CALIBRATION_QUERIES:
            self._recent.append(user_vectors[0].numpy().copy())
        if self._graph is None or b == 0:
            self.stats.exact_queries += b
            return self.index.topk(user_vectors, k, exclude_rows)
        excl = list(exclude_rows) + [[] for _ in range(b - len(exclude_rows))]
        # Most of a user's exclusions (past purchases) are not among their best items, so the
        # first search fetches a small margin only; users whose filtered list comes up short are
        # searched again with room for all their exclusions, then scanned if still short.
        out = self._ann(user_vectors, k, excl, k + max(1, k // 2))
        short = self._short(out, k)
        if short:
            self.stats.ann_retries += len(short)
            fetch = 2 * k + max(len(excl[i]) for i in short)
            again = self._ann(user_vectors[short], k, [excl[i] for i in short], fetch)
            for i, row in zip(short, again, strict=True):
                out[i] = row
            short = self._short(out, k)
        if short:
            # Most of these users' neighbourhood is filtered out; only a scan is sure.
            self.stats.ann_fallbacks += len(short)
            exact = self.index.topk(user_vectors[short], k, [excl[i] for i in short])
            for i, row in zip(short, exact, strict=True):
                out[i] = row
        self.stats.ann_queries += b
        return out

    def _short(self, ranked: Ranked, k: int) -> list[int]:
        want = min(k, self.index.n_available)
        return [i for i, row in enumerate(ranked) if len(row) < want]

    def _ann(self, users: Tensor, k: int, excl: list[Sequence[int]], fetch: int) -> Ranked:
        assert self._graph is not None
        matrix, bias = self.index.matrix, self.index.bias
        fetch = min(fetch, self._graph.size)
        cand = torch.from_numpy(self._graph.search(users.numpy(), fetch))  # [B, fetch]
        missing = cand < 0
        cand = cand.clamp_min(0)
        scores = torch.einsum("bd,bfd->bf", users, matrix[cand]) + bias[cand]
        scores[missing] = NEG_INF
        stale = self._stale_rows()
        self.stats.stale_rows = len(stale)
        if stale:
            # Graph copies of stale rows are outdated: drop them, then scan those rows exactly.
            stale_t = torch.tensor(sorted(stale), dtype=torch.long)
            stale_t = stale_t[stale_t < matrix.shape[0]]
            scores[torch.isin(cand, stale_t)] = NEG_INF
            cand = torch.cat([cand, stale_t.expand(cand.shape[0], -1)], dim=1)
            scores = torch.cat([scores, users @ matrix[stale_t].t() + bias[stale_t]], dim=1)
        for i, rows in enumerate(excl):
            if rows:
                scores[i, torch.isin(cand[i], torch.as_tensor(rows, dtype=torch.long))] = NEG_INF
        kk = min(k, scores.shape[1])
        values, pos = torch.topk(scores, kk, dim=1)
        rows_out = torch.gather(cand, 1, pos)
        out: Ranked = []
        for vals, rows in zip(values.tolist(), rows_out.tolist(), strict=True):
            out.append([(r, v) for r, v in zip(rows, vals, strict=True) if v != NEG_INF])
        return out


def recall_at_k(approx: Ranked, exact: Ranked) -> float:
    """Mean share of each exact list found in the approximate one (1.0 when both are empty)."""
    shares = []
    for a, e in zip(approx, exact, strict=True):
        if e:
            shares.append(len({r for r, _ in a} & {r for r, _ in e}) / len(e))
    return float(np.mean(shares)) if shares else 1.0
