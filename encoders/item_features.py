"""Item metadata -> the integer features the item tower embeds.

Everything here must give the same answer in the trainer, in every worker process and after a
restart, so titles are hashed with zlib.crc32 (Python's ``hash()`` is salted per process) and the
featurizer's vocabularies travel in the checkpoint's JSON metadata.
"""

from __future__ import annotations

import bisect
import math
import re
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

_WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class ItemFeatures:
    """Features of N items. Titles are bags in EmbeddingBag layout: item i's title tokens are
    ``title_tokens[title_offsets[i]:title_offsets[i+1]]`` (possibly empty)."""

    id_index: Tensor  # [N] long, id-embedding row (0 = unseen in training)
    category: Tensor  # [N] long (0 = unknown)
    price_bucket: Tensor  # [N] long (0 = unknown)
    title_tokens: Tensor  # [M] long in [0, title_buckets)
    title_offsets: Tensor  # [N] long, non-decreasing, starting at 0

    def __len__(self) -> int:
        return int(self.id_index.shape[0])

    def with_id_index(self, id_index: Tensor) -> ItemFeatures:
        return replace(self, id_index=id_index)

    def select(self, rows: Tensor) -> ItemFeatures:
        """The features of ``rows`` [R] only, in that order (a training step's items)."""
        ends = torch.cat(
            [self.title_offsets[1:], self.title_offsets.new_tensor([len(self.title_tokens)])]
        )
        starts = self.title_offsets[rows]
        lens = (ends - self.title_offsets)[rows]
        offsets = torch.cat([lens.new_zeros(1), lens.cumsum(0)[:-1]])
        total = int(lens.sum())
        take = torch.repeat_interleave(starts - offsets, lens) + torch.arange(total)
        return ItemFeatures(
            id_index=self.id_index[rows],
            category=self.category[rows],
            price_bucket=self.price_bucket[rows],
            title_tokens=self.title_tokens[take],
            title_offsets=offsets,
        )

    def tensors(self) -> dict[str, Tensor]:
        return {
            "id_index": self.id_index,
            "category": self.category,
            "price_bucket": self.price_bucket,
            "title_tokens": self.title_tokens,
            "title_offsets": self.title_offsets,
        }

    @classmethod
    def from_tensors(cls, t: Mapping[str, Tensor]) -> ItemFeatures:
        return cls(
            id_index=t["id_index"],
            category=t["category"],
            price_bucket=t["price_bucket"],
            title_tokens=t["title_tokens"],
            title_offsets=t["title_offsets"],
        )

    def validate(
        self, n_item_ids: int, n_categories: int, n_price_buckets: int, title_buckets: int
    ) -> None:
        """Raise ValueError unless every index is in range for a model with these sizes."""
        n = len(self)
        for name, t in self.tensors().items():
            if t.dtype != torch.long or t.dim() != 1:
                raise ValueError(f"item feature {name!r} must be a 1-D int64 tensor")
        for name, t, hi in (
            ("id_index", self.id_index, n_item_ids),
            ("category", self.category, n_categories),
            ("price_bucket", self.price_bucket, n_price_buckets),
            ("title_tokens", self.title_tokens, title_buckets),
        ):
            if name != "title_tokens" and t.shape[0] != n:
                raise ValueError(f"item feature {name!r} has {t.shape[0]} rows, expected {n}")
            if t.numel() and (int(t.min()) < 0 or int(t.max()) >= hi):
                raise ValueError(f"item feature {name!r} out of range [0, {hi})")
        off = self.title_offsets
        if off.shape[0] != n:
            raise ValueError(f"title_offsets has {off.shape[0]} rows, expected {n}")
        if n and (
            int(off[0]) != 0
            or bool((off[1:] < off[:-1]).any())
            or int(off[-1]) > self.title_tokens.shape[0]
        ):
            raise ValueError("title_offsets must start at 0, be non-decreasing and fit the tokens")


@dataclass
class ItemFeaturizer:
    """Category vocabulary (index = position + 1; 0 = unknown), log-spaced price bucket edges
    (bucket 0 = unknown price, then 1 + number of edges <= price) and hashed title words."""

    categories: list[str]
    price_edges: list[float]
    title_buckets: int = 512
    max_title_words: int = 32

    def __post_init__(self) -> None:
        self._category_index = {c: i + 1 for i, c in enumerate(self.categories)}
        if len(self._category_index) != len(self.categories):
            raise ValueError("duplicate categories in the featurizer vocabulary")
        if any(not math.isfinite(e) for e in self.price_edges) or sorted(self.price_edges) != list(
            self.price_edges
        ):
            raise ValueError("price_edges must be finite and sorted")
        if self.title_buckets < 1 or self.max_title_words < 0:
            raise ValueError("title_buckets must be >= 1 and max_title_words >= 0")

    @property
    def n_categories(self) -> int:
        return len(self.categories) + 1

    @property
    def n_price_buckets(self) -> int:
        return len(self.price_edges) + 2

    @classmethod
    def fit(
        cls, items: Iterable[Mapping[str, Any]], n_price_buckets: int = 16, title_buckets: int = 512
    ) -> ItemFeaturizer:
        """Vocabulary from the categories seen; price edges spaced geometrically over the observed
        positive prices (prices span orders of magnitude, so equal ratios beat equal widths)."""
        if n_price_buckets < 2:
            raise ValueError("n_price_buckets must be >= 2")
        cats: set[str] = set()
        prices: list[float] = []
        for item in items:
            cat = _category(item)
            if cat:
                cats.add(cat)
            p = _price(item)
            if p is not None and p > 0:
                prices.append(p)
        lo, hi = (min(prices), max(prices)) if prices else (1.0, 1000.0)
        if hi <= lo:
            lo, hi = lo / 10.0, hi * 10.0
        n_edges = n_price_buckets - 2
        edges = [float(e) for e in np.geomspace(lo, hi, n_edges)] if n_edges else []
        return cls(sorted(cats), edges, title_buckets)

    # -- single values -------------------------------------------------------------------------

    def category_index(self, category: Any) -> int:
        return self._category_index.get(category, 0) if isinstance(category, str) else 0

    def price_bucket(self, price: Any) -> int:
        p = _price({"price": price})
        if p is None or p < 0:
            return 0
        return 1 + bisect.bisect_right(self.price_edges, p)

    def title_tokens(self, title: Any) -> list[int]:
        if not isinstance(title, str):
            return []
        words = dict.fromkeys(_WORD.findall(title.casefold()))  # dedupe, keep order
        return [
            zlib.crc32(w.encode("utf-8")) % self.title_buckets
            for w in list(words)[: self.max_title_words]
        ]

    # -- batches -------------------------------------------------------------------------------

    def encode(self, items: Sequence[Mapping[str, Any]], id_index: Sequence[int]) -> ItemFeatures:
        """Features of ``items``; ``id_index[i]`` is item i's id-embedding row (0 = unknown).
        Missing or malformed category/price/title fall back to the "unknown" feature."""
        if len(items) != len(id_index):
            raise ValueError(f"{len(items)} items but {len(id_index)} id indices")
        cats: list[int] = []
        buckets: list[int] = []
        tokens: list[int] = []
        offsets: list[int] = []
        for item in items:
            item = item if isinstance(item, Mapping) else {}
            cats.append(self.category_index(_category(item)))
            buckets.append(self.price_bucket(item.get("price")))
            offsets.append(len(tokens))
            tokens.extend(self.title_tokens(item.get("title")))
        return ItemFeatures(
            id_index=torch.as_tensor(list(id_index), dtype=torch.long).view(-1),
            category=torch.tensor(cats, dtype=torch.long),
            price_bucket=torch.tensor(buckets, dtype=torch.long),
            title_tokens=torch.tensor(tokens, dtype=torch.long),
            title_offsets=torch.tensor(offsets, dtype=torch.long),
        )

    # -- JSON ----------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "categories": list(self.categories),
            "price_edges": list(self.price_edges),
            "title_buckets": self.title_buckets,
            "max_title_words": self.max_title_words,
            "title_hash": "crc32",
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ItemFeaturizer:
        if data.get("title_hash", "crc32") != "crc32":
            raise ValueError(f"unsupported title hash {data.get('title_hash')!r}")
        cats, edges = data.get("categories"), data.get("price_edges")
        if not isinstance(cats, list) or not all(isinstance(c, str) for c in cats):
            raise ValueError("featurizer 'categories' must be a list of strings")
        if not isinstance(edges, list) or not all(
            isinstance(e, (int, float)) and not isinstance(e, bool) for e in edges
        ):
            raise ValueError("featurizer 'price_edges' must be a list of numbers")
        buckets, words = data.get("title_buckets"), data.get("max_title_words", 32)
        if not isinstance(buckets, int) or not isinstance(words, int):
            raise ValueError("featurizer 'title_buckets'/'max_title_words' must be ints")
        return cls(cats, [float(e) for e in edges], buckets, words)


def _category(item: Mapping[str, Any]) -> str:
    cat = item.get("category")
    return cat if isinstance(cat, str) else ""


def _price(item: Mapping[str, Any]) -> float | None:
    p = item.get("price")
    if isinstance(p, bool) or not isinstance(p, (int, float, str)):
        return None
    try:
        value = float(p)
    except ValueError:
        return None
    return value if math.isfinite(value) else None
