"""The learned scorer over candidate features: it learns which feature marks the next item, and
case weights decide between cases that disagree."""

from __future__ import annotations

import numpy as np

from encoders.ranker import RankerTrainConfig, fit_ranker

N_CASES, N_CANDS = 400, 8


def _cases(seed: int) -> tuple[np.ndarray, list[int], list[int], np.ndarray]:
    """Cases of two kinds that look alike: in kind 0 the next item has the largest feature 0,
    in kind 1 the largest feature 1."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N_CASES * N_CANDS, 2)).astype(np.float32)
    kind = rng.integers(0, 2, N_CASES)
    offsets = [c * N_CANDS for c in range(N_CASES + 1)]
    labels = [
        offsets[c] + int(np.argmax(x[offsets[c] : offsets[c + 1], kind[c]])) for c in range(N_CASES)
    ]
    return x, offsets, labels, kind


def _top1(
    ranker, x: np.ndarray, offsets: list[int], labels: list[int], kind: np.ndarray
) -> list[float]:
    scores = ranker.score(x)
    hit = np.asarray(
        [
            int(np.argmax(scores[offsets[c] : offsets[c + 1]])) + offsets[c] == labels[c]
            for c in range(N_CASES)
        ]
    )
    return [float(hit[kind == k].mean()) for k in (0, 1)]


def test_case_weights_decide_between_cases_that_disagree() -> None:
    x, offsets, labels, kind = _cases(0)
    tx, to, tl, tk = _cases(1)
    cfg = RankerTrainConfig(epochs=30, seed=0)
    for favoured in (0, 1):
        weights = [1.0 if k == favoured else 0.01 for k in kind]
        ranker, summary = fit_ranker(
            x, offsets, labels, ("f0", "f1"), cfg, hidden=8, weights=weights
        )
        top1 = _top1(ranker, tx, to, tl, tk)
        assert summary["cases_with_target"] == N_CASES
        # the favoured kind's rule is learned (chance is 1/8), the other's is not
        assert top1[favoured] > 0.7 and top1[1 - favoured] < 0.5, top1
