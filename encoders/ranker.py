"""The learned scorer over candidate features (``streamrec.recommend.candidates.FEATURES``).

A small MLP on standardised features, trained listwise: for each training case the candidates
of one user compete in one softmax and the item the user touched next is the label (cases
whose next item is not among the candidates teach nothing and are skipped). It sits after the
user tower, so the incremental encoder's exactness is untouched: the tower's output is one of
its inputs (``model_score``), next to the repeat, co-visitation and popularity signals a
two-tower inner product cannot express ("the item you carted ten minutes ago").

Trained by ``streamrec train`` / ``bench/quality.py`` on the validation cases of the leave-one-out
split (events the encoder was not trained on) and saved into the same checkpoint.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RankerConfig:
    n_features: int
    hidden: int = 32
    features: tuple[str, ...] = ()  # names, checked against the serving code at load

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["features"] = list(self.features)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RankerConfig:
        return cls(int(data["n_features"]), int(data["hidden"]), tuple(data["features"]))


@dataclass
class RankerTrainConfig:
    epochs: int = 60
    lr: float = 3e-3
    weight_decay: float = 1e-3
    batch_users: int = 128
    val_fraction: float = 0.2  # cases kept aside to pick the epoch
    seed: int = 0


class Ranker(nn.Module):
    mean: Tensor
    std: Tensor

    def __init__(self, cfg: RankerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.register_buffer("mean", torch.zeros(cfg.n_features))
        self.register_buffer("std", torch.ones(cfg.n_features))
        self.net = nn.Sequential(
            nn.Linear(cfg.n_features, cfg.hidden),
            nn.GELU(),
            nn.Linear(cfg.hidden, cfg.hidden),
            nn.GELU(),
            nn.Linear(cfg.hidden, 1),
        )

    def forward(self, features: Tensor) -> Tensor:
        """[M, n_features] -> [M] scores."""
        return self.net((features - self.mean) / self.std).squeeze(-1)

    def score(self, features: np.ndarray) -> np.ndarray:
        self.eval()
        with torch.no_grad():
            return self(torch.from_numpy(np.ascontiguousarray(features, np.float32))).numpy()


def _gather(
    x: Tensor, offsets: Sequence[int], labels: Sequence[int], cases: Sequence[int]
) -> tuple[Tensor, Tensor, Tensor]:
    """The rows of ``cases`` as one padded [C, n_max] block: features, valid mask, label."""
    n_max = max(offsets[c + 1] - offsets[c] for c in cases)
    index = torch.zeros((len(cases), n_max), dtype=torch.long)
    valid = torch.zeros((len(cases), n_max), dtype=torch.bool)
    for j, c in enumerate(cases):
        lo, hi = offsets[c], offsets[c + 1]
        index[j, : hi - lo] = torch.arange(lo, hi)
        valid[j, : hi - lo] = True
    label = torch.tensor([labels[c] - offsets[c] for c in cases], dtype=torch.long)
    return x[index], valid, label


def _scores(model: Ranker, block: Tensor, valid: Tensor) -> Tensor:
    return model(block).masked_fill(~valid, float("-inf"))


def _ndcg_at(scores: Tensor, label: Tensor, k: int = 10) -> float:
    target = scores.gather(1, label[:, None])
    rank = (scores > target).sum(1)
    gain = torch.where(rank < k, 1.0 / torch.log2(rank.double() + 2.0), 0.0)
    return float(gain.mean())


def fit_ranker(
    features: np.ndarray,
    offsets: Sequence[int],
    labels: Sequence[int],
    feature_names: Sequence[str],
    cfg: RankerTrainConfig | None = None,
    hidden: int = 32,
    weights: Sequence[float] | None = None,
) -> tuple[Ranker, dict[str, Any]]:
    """Train on candidate rows ``features`` [M, F], user b owning rows offsets[b]:offsets[b+1];
    ``labels[b]`` is the row of the item user b touched next, or -1 when it was no candidate;
    ``weights[b]`` is how much case b counts in the loss (default: all alike)."""
    cfg = cfg or RankerTrainConfig()
    usable = [b for b, lab in enumerate(labels) if lab >= 0]
    if len(usable) < 10:
        raise ValueError(f"only {len(usable)} cases have their next item among the candidates")
    rng = np.random.default_rng(cfg.seed)
    order = rng.permutation(len(usable))
    n_val = max(1, int(len(usable) * cfg.val_fraction))
    val = [usable[i] for i in order[:n_val]]
    train = [usable[i] for i in order[n_val:]]
    x = torch.from_numpy(np.ascontiguousarray(features, np.float32))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = Ranker(RankerConfig(x.shape[1], hidden, tuple(feature_names)))
        model.mean.copy_(x.mean(0))
        model.std.copy_(x.std(0).clamp(min=1e-3))
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        val_block = _gather(x, offsets, labels, val)
        best, best_epoch, best_state = -1.0, 0, None
        for epoch in range(1, cfg.epochs + 1):
            model.train()
            perm = rng.permutation(len(train))
            for s in range(0, len(train), cfg.batch_users):
                picked = [train[i] for i in perm[s : s + cfg.batch_users]]
                block, valid, label = _gather(x, offsets, labels, picked)
                loss = F.cross_entropy(_scores(model, block, valid), label, reduction="none")
                if weights is None:
                    loss = loss.mean()
                else:
                    w = torch.tensor([weights[c] for c in picked], dtype=loss.dtype)
                    loss = (loss * w).sum() / w.sum()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            model.eval()
            with torch.no_grad():
                metric = _ndcg_at(_scores(model, *val_block[:2]), val_block[2])
            if metric > best:
                best, best_epoch = metric, epoch
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        assert best_state is not None
        model.load_state_dict(best_state)
    model.eval()
    summary = {
        "cases": len(labels),
        "cases_with_target": len(usable),
        "best_epoch": best_epoch,
        "val_ndcg@10_among_candidates": best,
        "rows": int(x.shape[0]),
    }
    log.info(
        "ranker: %d of %d cases have their next item among the candidates; best epoch %d, "
        "validation NDCG@10 among candidates %.4f",
        len(usable),
        len(labels),
        best_epoch,
        best,
    )
    return model, summary
