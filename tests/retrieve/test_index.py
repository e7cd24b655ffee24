import pytest
import torch

from streamrec.retrieve import index as index_module
from streamrec.retrieve.index import ItemIndex


def brute(users, items, k, banned):
    scores = users @ items.T
    out = []
    for b in range(users.shape[0]):
        row = scores[b].clone()
        if banned[b]:
            row[list(banned[b])] = float("-inf")
        idx = torch.argsort(row, descending=True)[:k]
        out.append([int(i) for i in idx if torch.isfinite(row[i])])
    return out


def test_topk_matches_brute_force_with_exclusions_and_unavailable():
    g = torch.Generator().manual_seed(0)
    n, d = 3000, 16
    index = ItemIndex(d, capacity=8)  # forces growth
    vecs = torch.randn(n, d, generator=g)
    unavailable = set(range(0, n, 7))
    for i in range(n):
        index.upsert(f"i{i}", vecs[i], available=i not in unavailable)
    users = torch.randn(5, d, generator=g)
    exclude = [[1, 2, 3], [], [10, 20], list(range(100)), []]
    got = index.topk(users, 20, exclude)
    banned = [set(e) | unavailable for e in exclude]
    assert [[r for r, _ in row] for row in got] == brute(users, vecs, 20, banned)
    for row in got:
        assert all(r not in unavailable for r, _ in row)


def test_rows_are_stable_and_updates_apply():
    index = ItemIndex(2)
    r = index.upsert("a", torch.tensor([1.0, 0.0]), True)
    index.upsert("b", torch.tensor([0.0, 1.0]), True)
    assert index.upsert("a", torch.tensor([0.0, 5.0]), True) == r
    assert index.topk(torch.tensor([[0.0, 1.0]]), 1)[0][0][0] == r
    index.set_available("a", False)
    assert [x for x, _ in index.topk(torch.tensor([[0.0, 1.0]]), 5)[0]] == [1]


def test_fewer_candidates_than_k():
    index = ItemIndex(2)
    index.upsert("a", torch.tensor([1.0, 0.0]), True)
    index.upsert("b", torch.tensor([1.0, 0.0]), False)
    assert len(index.topk(torch.ones(1, 2), 10)[0]) == 1


@pytest.mark.parametrize("buffer", [5 * 3000, 5 * 997, 5 * 20, 5 * 7, 1])
def test_a_catalog_scanned_in_slices_gives_the_same_lists(monkeypatch, buffer):
    g = torch.Generator().manual_seed(1)
    n, d = 3000, 16
    index = ItemIndex(d)
    vecs = torch.randn(n, d, generator=g)
    unavailable = set(range(3, n, 11))
    for i in range(n):
        index.upsert(f"i{i}", vecs[i], available=i not in unavailable)
    users = torch.randn(5, d, generator=g)
    exclude = [[1, 2, 3], [], [10, 2990, 2999], list(range(0, n, 2)), [5]]
    whole = index.topk(users, 20, exclude)
    monkeypatch.setattr(index_module, "SCORE_BUFFER", buffer)
    sliced = ItemIndex(d)
    for i in range(n):
        sliced.upsert(f"i{i}", vecs[i], available=i not in unavailable)
    got = sliced.topk(users, 20, exclude)
    assert [[r for r, _ in row] for row in got] == [[r for r, _ in row] for row in whole]
    assert sliced._scores.numel() <= max(buffer, 5)  # the buffer never outgrew its bound
