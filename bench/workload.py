"""Synthetic load for the serving benchmarks: a catalog, a model over it, and user sessions.

Timing does not depend on trained weights, but a graph search's cost at a given recall depends on
the geometry of user and item vectors: trained item embeddings cluster (by category, by
co-occurrence) and trained user vectors point near the items a user engaged with; an untrained
model has neither, which is the worst case for a graph (the calibrated breadth climbs to 1,024).
The bench model is therefore shaped like a trained one without training (``make_model``); the
calibration on real trained vectors is measured by bench/retrieval.py on public datasets.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from encoders.checkpoint import TrainedModel, save_checkpoint
from encoders.item_features import ItemFeaturizer
from encoders.model import EncoderConfig, StreamRecModel
from encoders.ranker import Ranker, RankerConfig
from streamrec.recommend.candidates import FEATURES

ID_EMBEDDING_SCALE = 0.3  # item detail relative to the category signal (unit-variance init)
EVENT_MIX = (("browse", 0.80), ("click", 0.15), ("purchase", 0.05))


def make_items(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` items in about n/500 categories of Zipf-distributed sizes."""
    rng = np.random.default_rng(seed)
    n_cat = max(2, n // 500)
    sizes = np.arange(1, n_cat + 1, dtype=float) ** -0.8
    cats = rng.choice(n_cat, size=n, p=sizes / sizes.sum())
    prices = np.exp(rng.normal(3.3, 0.9, size=n)).round(2)
    return [
        {
            "item_id": f"i{i}",
            "category": f"c{int(cats[i])}",
            "price": float(prices[i]),
            "title": f"item {i} of c{int(cats[i])}",
            "available": True,
        }
        for i in range(n)
    ]


def make_model(
    items: list[dict[str, Any]], d_model: int = 64, seed: int = 0, ranker: bool = True
) -> TrainedModel:
    """The serving architecture (2 blocks, 2 heads, window 50) over ``items``, untrained, with the
    candidate ranker a trained checkpoint carries (``ranker=False``: retrieval alone), so a
    worker serving it pays for every candidate source and the ranker, as in production."""
    torch.manual_seed(seed)
    featurizer = ItemFeaturizer.fit(items)
    cfg = EncoderConfig(
        d_model=d_model, n_item_ids=len(items) + 1, n_categories=featurizer.n_categories
    )
    model = StreamRecModel(cfg).eval()
    tower = model.user_tower
    with torch.no_grad():
        model.item_tower.id_emb.weight.mul_(ID_EMBEDDING_SCALE)
        # A trained tower points a user near the items they engaged with; an untrained one points
        # nowhere in particular, which no graph search handles well. Quieter type/gap embeddings
        # and residual branches keep the newest items in charge of the user vector (the compute
        # is the same).
        tower.type_emb.weight.mul_(0.1)
        tower.gap_emb.weight.mul_(0.1)
        for block in tower.blocks:
            block.attn.c_proj.weight.mul_(0.2)
            block.mlp.c_proj.weight.mul_(0.2)
    ids = [it["item_id"] for it in items]
    vocab = featurizer.encode([{}, *items], range(len(items) + 1))
    return TrainedModel(
        model=model,
        config=cfg,
        item_ids=ids,
        featurizer=featurizer,
        vocab_features=vocab,
        model_version=f"bench-{len(items)}-d{d_model}-s{seed}",
        ranker=untrained_ranker() if ranker else None,
    )


def untrained_ranker() -> Ranker:
    """The candidate ranker's shape as `streamrec train` fits it (timing does not depend on its
    weights)."""
    return Ranker(RankerConfig(len(FEATURES), 32, FEATURES)).eval()


def write_model(
    items: list[dict[str, Any]], directory: Path, d_model: int = 64, ranker: bool = True
) -> Path:
    return save_checkpoint(directory, make_model(items, d_model, ranker=ranker))


@dataclass
class Sessions:
    """Users arrive in sessions (geometric length, mean ``session_mean``) and browse within one
    category, favouring its popular items. ``concurrent`` sessions are open at once and their
    events interleave, as on a real site. User activity is Zipf-distributed: a few users come back
    often (a warm encoder cache), most rarely (a rebuild from their stored history)."""

    items: list[dict[str, Any]]
    n_users: int
    seed: int = 0
    session_mean: float = 8.0
    concurrent: int = 200

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)
        by_cat: dict[str, list[int]] = {}
        for i, it in enumerate(self.items):
            by_cat.setdefault(it["category"], []).append(i)
        self.cats = [np.asarray(v) for v in by_cat.values()]
        self.cat_p = np.asarray([len(v) for v in self.cats], dtype=float)
        self.cat_p /= self.cat_p.sum()
        w = np.arange(1, self.n_users + 1, dtype=float) ** -0.7
        self.user_cdf = np.cumsum(w / w.sum())
        self.types = [t for t, _ in EVENT_MIX]
        self.type_p = np.asarray([p for _, p in EVENT_MIX])

    def _session(self) -> list[tuple[str, str, str]]:
        user = f"u{int(np.searchsorted(self.user_cdf, self.rng.random()))}"
        members = self.cats[self.rng.choice(len(self.cats), p=self.cat_p)]
        length = int(self.rng.geometric(1.0 / self.session_mean))
        ranks = np.minimum(self.rng.zipf(1.3, size=length) - 1, len(members) - 1)
        types = self.rng.choice(len(self.types), size=length, p=self.type_p)
        return [
            (self.types[t], user, self.items[members[r]]["item_id"])
            for r, t in zip(ranks, types, strict=True)
        ]

    def events(self, prefix: str) -> Iterator[tuple[str, str, str, str]]:
        """Endless (event id, type, user id, item id), ids ``{prefix}-{n}``."""
        open_ = [self._session()[::-1] for _ in range(self.concurrent)]
        n = 0
        while True:
            k = int(self.rng.integers(len(open_)))
            etype, user, item = open_[k].pop()
            if not open_[k]:
                open_[k] = self._session()[::-1]
            yield f"{prefix}-{n}", etype, user, item
            n += 1
