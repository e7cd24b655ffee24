"""The item graph on disk, so a restarted worker serves within seconds instead of rebuilding.

A million-item graph takes minutes to build on two cores, and a worker waits for its graph
before it reports healthy. So each graph a worker builds is saved in its data directory, and at
start the saved one is matched against the catalog as it is now:

* by item id, not row: a restarted worker may read its catalog in another order;
* by vector: the graph keeps the vector each item had when it was built. An item whose vector
  is different now (another model, new features), and an item the graph does not hold, is a
  *stale row*: dropped from the graph's answers and scanned exactly, the same path a live graph
  uses for items changed since its build (``streamrec.retrieve.retriever``). Lists are therefore
  the same as after a fresh build; only their cost depends on how much is stale, and past
  ``rebuild_fraction`` a new graph is built in the background while the loaded one serves.

Files (one directory): ``graph.faiss`` (faiss's own index format), ``items.json`` (the item id
of each graph position) and ``graph.json`` (the metadata, with both files' sha256, written last:
a crash mid-save leaves the previous graph or none). The worker writes these files itself in its
own data directory; a file that fails its checksum or disagrees with the configuration is
ignored (logged), never half-used.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import faiss
import numpy as np
import orjson

from streamrec.atomic import replacing, write_atomic
from streamrec.retrieve.hnsw import HnswGraph, HnswParams

log = logging.getLogger(__name__)
FORMAT = 1
# A saved graph matching less than this share of the catalog is dropped rather than served
# (its exact scan of the rest would cost more than the graph saves).
MIN_MATCHED = 0.5
# Vectors within this of the saved ones count as unchanged: the tower run on another batch
# split may differ in the last bits, which moves no item in the graph's neighbourhoods.
ATOL, RTOL = 1e-5, 1e-4


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class GraphStore:
    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    @property
    def _meta(self) -> Path:
        return self.directory / "graph.json"

    def save(self, graph: HnswGraph, item_ids: Sequence[str]) -> None:
        """Save ``graph``; ``item_ids[i]`` is the item at graph position i."""
        if len(item_ids) != graph.size:
            raise ValueError(f"{len(item_ids)} item ids for a graph of {graph.size}")
        t0 = time.perf_counter()
        self.directory.mkdir(parents=True, exist_ok=True)
        with replacing(self.directory / "graph.faiss") as tmp:
            faiss.write_index(graph.index, str(tmp))
        write_atomic(self.directory / "items.json", orjson.dumps(list(item_ids)))
        meta = {
            "format": FORMAT,
            "size": graph.size,
            "dim": int(graph.index.d),
            "m": graph.params.m,
            "ef_construction": graph.params.ef_construction,
            "ef_search": graph.ef_search,
            "recall": None if np.isnan(graph.recall) else graph.recall,
            "saved_at": time.time(),
            "graph_sha256": _sha256(self.directory / "graph.faiss"),
            "items_sha256": _sha256(self.directory / "items.json"),
        }
        write_atomic(self._meta, json.dumps(meta, indent=2).encode() + b"\n")
        log.info(
            "item graph saved: %d items in %.1f s -> %s",
            graph.size,
            time.perf_counter() - t0,
            self.directory,
        )

    def load(
        self, vectors: np.ndarray, rows: np.ndarray, ids: Sequence[str], params: HnswParams
    ) -> tuple[HnswGraph, set[int]] | None:
        """The saved graph matched to the catalog's available items now: ``vectors`` [n, d]
        with their ``rows`` [n] and item ``ids`` [n] (``ItemIndex.snapshot``), and the catalog
        rows it does not hold as they are now (to scan exactly). None when there is none, or it
        does not fit (another dimension or degree, a bad file, too little of the catalog in
        it)."""
        try:
            meta = json.loads(self._meta.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("ignoring the saved item graph: %s unreadable (%s)", self._meta, exc)
            return None
        why = self._mismatch(meta, vectors.shape[1], params)
        if why:
            log.warning("ignoring the saved item graph in %s: %s", self.directory, why)
            return None
        # read_index returns the concrete class. Downcasting its result would leave a
        # temporary as the index's only owner, freed at once.
        base = faiss.read_index(str(self.directory / "graph.faiss"))
        saved_ids = orjson.loads((self.directory / "items.json").read_bytes())
        if (
            not isinstance(base, faiss.IndexHNSWFlat)
            or base.ntotal != meta["size"]
            or len(saved_ids) != meta["size"]
        ):
            log.warning("ignoring the saved item graph in %s: inconsistent files", self.directory)
            return None
        position = {item: p for p, item in enumerate(ids)}
        at = np.fromiter((position.get(i, -1) for i in saved_ids), np.int64, len(saved_ids))
        known = at >= 0
        saved = base.reconstruct_n(0, base.ntotal)
        same = np.zeros(len(saved_ids), bool)
        if known.any():
            mine, now = saved[known], vectors[at[known]]
            equal = (mine == now).all(axis=1)  # the usual case, and 10x cheaper than isclose
            near = ~equal
            equal[near] = np.isclose(mine[near], now[near], RTOL, ATOL).all(axis=1)
            same[known] = equal
        graph_rows = np.where(same, rows[np.maximum(at, 0)], -1)
        matched = np.zeros(len(ids), bool)
        matched[at[same]] = True
        share = float(matched.mean()) if len(ids) else 0.0
        if share < MIN_MATCHED:
            log.warning(
                "ignoring the saved item graph in %s: it holds %.0f%% of the catalog as it is "
                "now (another model or catalog)",
                self.directory,
                100 * share,
            )
            return None
        graph = HnswGraph.from_index(base, graph_rows, params)
        graph.ef_search = max(params.ef_search, int(meta["ef_search"]))
        graph.recall = float("nan") if meta.get("recall") is None else float(meta["recall"])
        stale = {int(r) for r in rows[~matched]}
        log.info(
            "item graph in %s matched: %d of %d catalog items as saved, %d to scan exactly",
            self.directory,
            int(matched.sum()),
            len(ids),
            len(stale),
        )
        return graph, stale

    def _mismatch(self, meta: dict, dim: int, params: HnswParams) -> str:
        if meta.get("format") != FORMAT:
            return f"format {meta.get('format')!r}, this code reads {FORMAT}"
        if meta.get("dim") != dim:
            return f"dimension {meta.get('dim')}, the catalog's is {dim}"
        if meta.get("m") != params.m:
            return f"built with hnsw_m {meta.get('m')}, configured {params.m}"
        for name in ("graph.faiss", "items.json"):
            path = self.directory / name
            key = "graph_sha256" if name == "graph.faiss" else "items_sha256"
            try:
                if _sha256(path) != meta.get(key):
                    return f"{name} does not match its checksum"
            except OSError as exc:
                return f"{name} unreadable ({exc})"
        return ""
