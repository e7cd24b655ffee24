"""The approximate path against the exact one it must agree with (``ItemIndex.topk``)."""

from __future__ import annotations

import torch

from streamrec.retrieve.hnsw import HnswParams
from streamrec.retrieve.index import ItemIndex
from streamrec.retrieve.retriever import RetrievalConfig, Retriever, recall_at_k

D = 32


def clustered(n: int, seed: int, clusters: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Item vectors around cluster centres (as trained embeddings are) and users near them."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(clusters, D, generator=g)
    items = centres[torch.randint(0, clusters, (n,), generator=g)]
    items = items + 0.6 * torch.randn(n, D, generator=g)
    users = centres[torch.randint(0, clusters, (300,), generator=g)]
    users = users + 0.6 * torch.randn(300, D, generator=g)
    return items, users


def build(items: torch.Tensor, method: str = "hnsw") -> tuple[ItemIndex, Retriever]:
    index = ItemIndex(D)
    for i in range(items.shape[0]):
        index.upsert(f"i{i}", items[i], available=True)
    config = RetrievalConfig(method=method, ann_min_items=1, hnsw=HnswParams(threads=1))
    retriever = Retriever(index, config)
    retriever.maintain(block=True)
    return index, retriever


def rows(ranked):
    return [[r for r, _ in row] for row in ranked]


def test_hnsw_recall_against_the_exact_scan_is_at_least_095():
    items, users = clustered(20000, seed=1)
    index, retriever = build(items)
    assert retriever.graph_ready and retriever.stats.graph_items == 20000
    exclude = [list(range(u, u + 30)) for u in range(users.shape[0])]
    approx = retriever.topk(users, 20, exclude)
    exact = index.topk(users, 20, exclude)
    assert recall_at_k(approx, exact) >= 0.95
    assert retriever.stats.ann_queries == users.shape[0]
    for got, banned in zip(rows(approx), exclude, strict=True):
        assert len(got) == 20 and not set(got) & set(banned)


def test_changes_after_the_build_are_served_at_once_and_exactly():
    items, users = clustered(3000, seed=2)
    index, retriever = build(items)
    user = users[:1]
    best = rows(index.topk(user, 5))[0]
    # A new item and a re-embedded one that point straight at the user outrank everything.
    new_row = index.upsert("new", 10 * user[0], available=True)
    moved = best[-1]
    index.upsert(index.ids[moved], 9 * user[0], available=True)
    # The former best item leaves the catalog.
    index.set_available(index.ids[best[0]], False)
    got = rows(retriever.topk(user, 5))[0]
    assert got[:2] == [new_row, moved]
    assert best[0] not in got
    assert got == rows(index.topk(user, 5))[0]
    # Available again: it is back, though the graph was built while it was listed.
    index.set_available(index.ids[best[0]], True)
    assert best[0] in rows(retriever.topk(user, 5))[0]


def test_graph_is_rebuilt_when_too_much_changed_and_then_covers_the_changes():
    items, users = clustered(2000, seed=3)
    index, retriever = build(items)
    g = torch.Generator().manual_seed(9)
    for r in range(0, 400):  # 20% of the catalog re-embedded, over the 5% rebuild threshold
        index.upsert(index.ids[r], torch.randn(D, generator=g), available=True)
    retriever.maintain(block=True)
    assert retriever.stats.graph_builds == 2
    assert retriever.stats.graph_items == 2000
    retriever.topk(users[:1], 5)
    assert retriever.stats.stale_rows == 0
    assert recall_at_k(retriever.topk(users, 10), index.topk(users, 10)) >= 0.95


def test_users_whose_neighbourhood_is_unavailable_fall_back_to_the_exact_scan():
    items, users = clustered(2000, seed=4, clusters=4)
    index, retriever = build(items)
    for r in range(1900):
        index.set_available(index.ids[r], False)
    got = retriever.topk(users[:8], 20)
    assert rows(got) == rows(index.topk(users[:8], 20))
    assert all(len(row) == 20 for row in got)
    assert retriever.stats.ann_fallbacks > 0


def test_exact_method_and_small_catalogs_never_build_a_graph():
    items, users = clustered(500, seed=5)
    index, exact = build(items, method="exact")
    auto = Retriever(index, RetrievalConfig(method="auto", ann_min_items=501))
    auto.maintain(block=True)
    assert not exact.graph_ready and not auto.graph_ready
    index.upsert("one-more", items[0], available=True)
    auto.maintain(block=True)
    assert auto.graph_ready
    assert exact.topk(users[:3], 5) == index.topk(users[:3], 5)
    assert exact.stats.exact_queries == 3


def test_search_breadth_is_calibrated_until_the_target_recall_is_met():
    # Near-uniform vectors: the hardest geometry for a graph, where a fixed small breadth fails.
    g = torch.Generator().manual_seed(6)
    items = torch.randn(20000, D, generator=g)
    users = torch.randn(200, D, generator=g)
    index = ItemIndex(D)
    for i in range(items.shape[0]):
        index.upsert(f"i{i}", items[i], available=True)
    fixed = HnswParams(m=8, ef_search=16, threads=1, target_recall=0.0)
    tuned = HnswParams(m=8, ef_search=16, threads=1, target_recall=0.95)
    got = {}
    for name, params in (("fixed", fixed), ("tuned", tuned)):
        r = Retriever(index, RetrievalConfig(method="hnsw", k=20, hnsw=params))
        r.maintain(block=True)
        got[name] = (recall_at_k(r.topk(users, 20), index.topk(users, 20)), r.stats)
    assert got["fixed"][0] < 0.95 and got["fixed"][1].ef_search == 16
    assert got["tuned"][0] >= 0.95 and got["tuned"][1].ef_search > 16
    assert got["tuned"][1].recall_estimate >= 0.95


def test_recall_is_remeasured_on_served_users_once_enough_were_seen():
    items, users = clustered(3000, seed=7)
    _, retriever = build(items)
    assert retriever.stats.calibrated_on_live_users == 0
    for u in range(256):
        retriever.topk(users[u % 300 : u % 300 + 1], 10)
    retriever.maintain()  # starts the re-measurement
    assert retriever._calibrating is not None
    retriever._calibrating.result()
    retriever.maintain()
    assert retriever.stats.calibrated_on_live_users == 1
    assert retriever.stats.recall_estimate >= 0.95


def test_users_whose_best_items_are_excluded_are_searched_again_with_room_for_them():
    items, users = clustered(5000, seed=8)
    index, retriever = build(items)
    exclude = [r for r in rows(index.topk(users, 15))]  # each user's own 15 best items
    approx = retriever.topk(users, 20, exclude)
    assert retriever.stats.ann_retries == users.shape[0]
    assert recall_at_k(approx, index.topk(users, 20, exclude)) >= 0.95
    for got, banned in zip(rows(approx), exclude, strict=True):
        assert len(got) == 20 and not set(got) & set(banned)
