"""Ranking metrics against hand-computed cases."""

from __future__ import annotations

import math

import pytest
import torch

from encoders.metrics import at_k, hit_rate, ndcg, ranks


def test_ranks_by_hand() -> None:
    # columns: 0 = unknown row (never a candidate), then items 1..4
    scores = torch.tensor(
        [
            [9.0, 0.1, 0.5, 0.3, 0.2],  # target 2 is best -> rank 0 (column 0's 9.0 is ignored)
            [0.0, 0.1, 0.5, 0.3, 0.2],  # target 4: beaten by 2 and 3 -> rank 2
            [0.0, 0.4, 0.4, 0.4, 0.1],  # target 2 ties with 1 and 3 -> pessimistic rank 2
            [0.0, 0.4, 0.4, 0.4, 0.1],  # target 0 (outside the vocabulary) -> miss, rank N
        ]
    )
    targets = torch.tensor([2, 4, 2, 0])
    assert ranks(scores, targets).tolist() == [0, 2, 2, 5]


def test_excluding_history() -> None:
    scores = torch.tensor([[0.0, 0.9, 0.8, 0.7, 0.6], [0.0, 0.9, 0.8, 0.7, 0.6]])
    targets = torch.tensor([4, 2])
    # row 0: items 1 and 2 were seen -> only item 3 beats the target
    # row 1: the target itself was seen -> a recommender that filters history misses it
    r = ranks(scores, targets, exclude=[[1, 2], [2, 3]])
    assert r.tolist() == [1, 5]
    assert ranks(scores, targets).tolist() == [3, 1]


def test_hr_and_ndcg_by_hand() -> None:
    r = torch.tensor([0, 1, 9, 10, 49, 50])
    assert hit_rate(r, 10) == pytest.approx(3 / 6)
    assert hit_rate(r, 50) == pytest.approx(5 / 6)
    expected10 = (1 / math.log2(2) + 1 / math.log2(3) + 1 / math.log2(11)) / 6
    assert ndcg(r, 10) == pytest.approx(expected10)
    expected50 = expected10 + (1 / math.log2(12) + 1 / math.log2(51)) / 6
    assert ndcg(r, 50) == pytest.approx(expected50)
    assert at_k(r, (10, 50)) == {
        "hr@10": pytest.approx(0.5),
        "ndcg@10": pytest.approx(expected10),
        "hr@50": pytest.approx(5 / 6),
        "ndcg@50": pytest.approx(expected50),
    }


def test_empty() -> None:
    empty = torch.zeros(0, dtype=torch.long)
    assert hit_rate(empty, 10) == 0.0 and ndcg(empty, 10) == 0.0
