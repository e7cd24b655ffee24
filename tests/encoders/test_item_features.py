from __future__ import annotations

import json
import math
from typing import Any

import torch

from encoders.item_features import ItemFeaturizer

ITEMS = [
    {"category": "shoes", "price": 20.0, "title": "Red wool sweater"},
    {"category": "hats", "price": 1500.0, "title": "red RED red"},
    {"category": "socks", "price": 3.5, "title": ""},
]


def test_fit_and_encode() -> None:
    fz = ItemFeaturizer.fit(ITEMS, n_price_buckets=8, title_buckets=512)
    assert fz.categories == ["hats", "shoes", "socks"]
    assert fz.n_categories == 4 and fz.n_price_buckets == 8
    # log-spaced edges: constant ratio between consecutive edges
    ratios = [b / a for a, b in zip(fz.price_edges, fz.price_edges[1:], strict=False)]
    assert all(math.isclose(r, ratios[0], rel_tol=1e-9) for r in ratios)
    f = fz.encode(ITEMS, [3, 0, 1])
    assert f.id_index.tolist() == [3, 0, 1]
    assert f.category.tolist() == [2, 1, 3]
    buckets = f.price_bucket.tolist()
    assert buckets[2] < buckets[0] < buckets[1] and min(buckets) >= 1
    # stable crc32 hashing (never the per-process salted hash()): pinned values
    assert f.title_tokens.tolist() == [399, 319, 404, 399]
    assert f.title_offsets.tolist() == [0, 3, 4]


def test_unknown_and_malformed_values_are_tolerated() -> None:
    fz = ItemFeaturizer.fit(ITEMS, n_price_buckets=8)
    weird: list[dict[str, Any]] = [
        {},
        {"category": None, "price": None, "title": None},
        {"category": "unseen", "price": "abc", "title": 42},
        {"category": 3, "price": float("nan")},
        {"price": -5.0},
        {"price": "12.5", "title": "ünïcode wörds"},
    ]
    f = fz.encode(weird, [0] * len(weird))
    assert f.category.tolist() == [0] * 6
    assert f.price_bucket.tolist()[:5] == [0] * 5
    assert f.price_bucket.tolist()[5] == fz.price_bucket(12.5) > 0
    assert f.title_offsets.tolist() == [0, 0, 0, 0, 0, 0] and len(f.title_tokens) == 2
    f.validate(1, fz.n_categories, fz.n_price_buckets, fz.title_buckets)


def test_json_round_trip() -> None:
    fz = ItemFeaturizer.fit(ITEMS, n_price_buckets=16)
    back = ItemFeaturizer.from_dict(json.loads(json.dumps(fz.to_dict())))
    assert back == fz
    a, b = fz.encode(ITEMS, [1, 2, 3]), back.encode(ITEMS, [1, 2, 3])
    for name, t in a.tensors().items():
        assert torch.equal(t, b.tensors()[name])
