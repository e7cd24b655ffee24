"""The item graph saved by one retriever and loaded by the next: matched by item id and vector,
never trusted beyond that (changed items are scanned exactly; a graph of other vectors, another
shape or a damaged file is ignored and a new one built)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from streamrec.retrieve.graph_store import GraphStore
from streamrec.retrieve.hnsw import HnswParams
from streamrec.retrieve.index import ItemIndex
from streamrec.retrieve.retriever import RetrievalConfig, Retriever, recall_at_k
from tests.retrieve.test_retriever import D, clustered

N = 4000
CONFIG = RetrievalConfig(method="hnsw", ann_min_items=1, hnsw=HnswParams(threads=1))


def started(items: torch.Tensor, store: GraphStore, order: list[int] | None = None) -> Retriever:
    """A retriever over ``items`` (inserted in ``order``), its graph built or loaded."""
    index = ItemIndex(D)
    for i in order if order is not None else range(items.shape[0]):
        index.upsert(f"i{i}", items[i], available=True)
    retriever = Retriever(index, CONFIG, store)
    retriever.maintain(block=True)
    return retriever


def lists(retriever: Retriever, users: torch.Tensor, k: int = 20) -> list[list[str]]:
    ids = retriever.index.ids
    return [[ids[r] for r, _ in row] for row in retriever.topk(users, k)]


def exact(retriever: Retriever, users: torch.Tensor, k: int = 20) -> list[list[str]]:
    ids = retriever.index.ids
    return [[ids[r] for r, _ in row] for row in retriever.index.topk(users, k)]


def saved(tmp_path: Path) -> tuple[torch.Tensor, torch.Tensor, GraphStore, list[list[str]]]:
    items, users = clustered(N, seed=5)
    store = GraphStore(tmp_path / "item-graph")
    first = started(items, store)
    first.close()  # waits for the save
    assert first.stats.graph_builds == 1 and first.stats.graph_saves == 1
    assert (tmp_path / "item-graph" / "graph.json").exists()
    return items, users, store, lists(first, users)


def test_a_restart_loads_the_saved_graph_in_another_row_order_and_serves_the_same_lists(
    tmp_path: Path,
) -> None:
    items, users, store, before = saved(tmp_path)
    order = list(range(N))[::-1]  # the catalog read back in another order: other rows
    second = started(items, store, order)
    assert second.stats.graph_loaded == 1 and second.stats.graph_builds == 0
    assert second.stats.graph_items == N and second.stats.stale_rows == 0
    assert lists(second, users) == before
    assert second.stats.ann_queries == users.shape[0]
    second.close()


def test_items_changed_added_or_gone_since_the_save_are_served_exactly(tmp_path: Path) -> None:
    items, users, store, _ = saved(tmp_path)
    moved = items.clone()
    user = users[:1]
    # item 7 now points straight at the user; item 11 is gone; "new" joins the catalog
    moved[7] = 10 * user[0]
    index = ItemIndex(D)
    for i in range(N):
        if i != 11:
            index.upsert(f"i{i}", moved[i], available=True)
    index.upsert("new", 9 * user[0], available=True)
    retriever = Retriever(index, CONFIG, store)
    retriever.maintain(block=True)
    assert retriever.stats.graph_loaded == 1
    assert lists(retriever, user, 2) == [["i7", "new"]]
    got = lists(retriever, users)
    assert all("i11" not in row for row in got)
    approx = [[(retriever.index.row_of[i], 0.0) for i in row] for row in got]
    truth = [[(retriever.index.row_of[i], 0.0) for i in row] for row in exact(retriever, users)]
    assert recall_at_k(approx, truth) >= 0.95
    retriever.close()


def test_a_graph_of_other_vectors_is_ignored_and_a_new_one_built(tmp_path: Path) -> None:
    _, users, store, _ = saved(tmp_path)
    other, _ = clustered(N, seed=6)  # another model: every vector differs
    retriever = started(other, store)
    assert retriever.stats.graph_loaded == 0 and retriever.stats.graph_builds == 1
    approx = retriever.topk(users, 20)
    assert recall_at_k(approx, retriever.index.topk(users, 20)) >= 0.95
    retriever.close()


def test_a_damaged_or_mismatched_saved_graph_is_ignored(tmp_path: Path) -> None:
    items, _, store, _ = saved(tmp_path)
    graph_file = tmp_path / "item-graph" / "graph.faiss"
    data = bytearray(graph_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    graph_file.write_bytes(bytes(data))
    damaged = started(items, store)
    assert damaged.stats.graph_loaded == 0 and damaged.stats.graph_builds == 1
    damaged.close()  # saved afresh: whole again
    meta_file = tmp_path / "item-graph" / "graph.json"
    assert started(items, store).stats.graph_loaded == 1
    meta = json.loads(meta_file.read_text())
    meta["m"] = CONFIG.hnsw.m + 1  # built with another degree than configured
    meta_file.write_text(json.dumps(meta))
    mismatched = started(items, store)
    assert mismatched.stats.graph_loaded == 0 and mismatched.stats.graph_builds == 1
    mismatched.close()
