from __future__ import annotations

import random

import pytest
import torch

from encoders.item_features import ItemFeaturizer
from encoders.model import EncoderConfig, StreamRecModel, gap_bucket
from tests.encoders.helpers import random_event, random_model

CFG = EncoderConfig(d_model=32, n_layers=2, n_heads=2, window=6, n_item_ids=20, n_categories=4)


def test_config_round_trip_and_context() -> None:
    cfg = EncoderConfig(n_item_ids=10, n_categories=3)
    assert EncoderConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.context_events == 2 * 49 + 1
    assert EncoderConfig(n_layers=3, window=8).context_events == 22
    with pytest.raises(ValueError, match="unknown"):
        EncoderConfig.from_dict({**cfg.to_dict(), "extra": 1})
    with pytest.raises(ValueError, match="divisible"):
        EncoderConfig(d_model=30, n_heads=4)
    with pytest.raises(ValueError):
        EncoderConfig(window=0)


def test_gap_bucket() -> None:
    gaps = torch.tensor([-1.0, float("nan"), 0.0, 1.0, 10.0, 60.0, 3600.0, 86400.0, 1e7, 1e12])
    b = gap_bucket(gaps, 16)
    assert b.dtype == torch.long
    assert b[:2].tolist() == [0, 0]  # first event
    assert b[2] == 1
    assert bool((b[2:][1:] >= b[2:][:-1]).all())  # monotone in the gap
    assert b[-1] == 15 and b[-2] == 15  # saturates at ~30 days
    assert len(set(b[2:].tolist())) >= 6  # log scale actually separates seconds from days
    assert torch.equal(gap_bucket(gaps.float(), 16), b)  # same answer whatever the dtype


def test_item_tower_unseen_items_use_features() -> None:
    fz = ItemFeaturizer(["a", "b", "c"], [1.0, 10.0], title_buckets=CFG.title_buckets)
    cfg = EncoderConfig(**{**CFG.to_dict(), "n_price_buckets": fz.n_price_buckets})
    model = random_model(cfg)
    items = [{"category": "a", "price": 5.0, "title": "red wool"}] * 2 + [
        {"category": "c", "price": 50.0, "title": "blue"}
    ]
    feats = fz.encode(items, [0, 7, 0])
    vecs = model.item_tower(feats)
    assert vecs.shape == (3, cfg.d_model)
    assert not torch.allclose(vecs[0], vecs[2])  # features alone distinguish unseen items
    id_part = model.item_tower.id_emb.weight[7]
    torch.testing.assert_close(vecs[1] - vecs[0], id_part)  # the id adds its embedding only
    # row 0 stays fixed at zero through training
    vecs.sum().backward()
    grad = model.item_tower.id_emb.weight.grad
    assert grad is not None and not grad[0].any() and grad[7].any()


def _history(rng: random.Random, n: int) -> tuple[list[int], list[int], list[float]]:
    events = [random_event(rng, 30, i == 0) for i in range(n)]
    return [e[0] for e in events], [e[1] for e in events], [e[2] for e in events]


def test_causal_sliding_window_receptive_field() -> None:
    model = random_model(CFG)
    item_vecs = torch.randn(30, CFG.d_model)
    rng = random.Random(1)
    rows, types, gaps = _history(rng, 40)
    ctx = CFG.context_events
    ref = model.encode_full(rows, types, gaps, item_vecs)

    # the last context_events events determine the output exactly ...
    torch.testing.assert_close(
        model.encode_full(rows[-ctx:], types[-ctx:], gaps[-ctx:], item_vecs), ref
    )
    outside = rows.copy()
    outside[-ctx - 1] = (outside[-ctx - 1] + 1) % 30
    torch.testing.assert_close(model.encode_full(outside, types, gaps, item_vecs), ref)
    # ... and every one of them matters
    inside = rows.copy()
    inside[-ctx] = (inside[-ctx] + 1) % 30
    assert (model.encode_full(inside, types, gaps, item_vecs) - ref).abs().max() > 1e-4
    # the future never leaks into the past
    later = rows.copy()
    later[-1] = (later[-1] + 1) % 30
    assert torch.equal(
        model.encode_full(later[:-1], types[:-1], gaps[:-1], item_vecs),
        model.encode_full(rows[:-1], types[:-1], gaps[:-1], item_vecs),
    )


def test_left_padding_does_not_change_outputs() -> None:
    model = random_model(CFG)
    item_vecs = torch.randn(30, CFG.d_model)
    rng = random.Random(2)
    short, long_ = _history(rng, 5), _history(rng, 12)
    T = 12
    rows = torch.zeros((2, T), dtype=torch.long)
    types = torch.zeros((2, T), dtype=torch.long)
    gaps = torch.full((2, T), -1.0)
    valid = torch.zeros((2, T), dtype=torch.bool)
    for b, (r, t, g) in enumerate([short, long_]):
        rows[b, T - len(r) :] = torch.tensor(r)
        types[b, T - len(r) :] = torch.tensor(t)
        gaps[b, T - len(r) :] = torch.tensor(g)
        valid[b, T - len(r) :] = True
    with torch.no_grad():
        out = model.user_tower(item_vecs[rows], types, gap_bucket(gaps), valid)
    assert torch.isfinite(out).all()  # padding queries must not produce NaN
    for b, (r, t, g) in enumerate([short, long_]):
        with torch.no_grad():
            alone = model.user_tower(
                item_vecs[torch.tensor([r])],
                torch.tensor([t]),
                gap_bucket(torch.tensor([g])),
                torch.ones((1, len(r)), dtype=torch.bool),
            )
        torch.testing.assert_close(out[b, T - len(r) :], alone[0], atol=1e-5, rtol=1e-5)


def test_encode_full_restores_training_mode() -> None:
    model = StreamRecModel(EncoderConfig(d_model=16, window=4, n_item_ids=5, dropout=0.5))
    model.train()
    item_vecs = torch.randn(5, 16)
    a = model.encode_full([1, 2, 3], [0, 1, 2], [-1.0, 2.0, 3.0], item_vecs)
    b = model.encode_full([1, 2, 3], [0, 1, 2], [-1.0, 2.0, 3.0], item_vecs)
    assert torch.equal(a, b)  # dropout was off
    assert model.training


@pytest.mark.parametrize(("n_layers", "window"), [(1, 6), (2, 6), (3, 5), (4, 3)])
def test_prefill_computes_only_what_the_state_needs_and_equals_the_whole_pass(
    n_layers: int, window: int
) -> None:
    """``prefill`` skips outputs no ring or user vector reads; its vector and every layer's
    ring must still equal the whole forward pass's (``forward_kv``), for histories shorter than
    one window, between, and past the receptive field, left-padded in one batch."""
    cfg = EncoderConfig(
        d_model=32, n_layers=n_layers, n_heads=2, window=window, n_item_ids=20, n_categories=4
    )
    model = random_model(cfg, seed=n_layers)
    tower = model.user_tower
    ctx = cfg.context_events
    lengths = [1, 2, window - 1, window, window + 1, ctx - 1, ctx, ctx + 3]
    T = max(lengths)
    torch.manual_seed(window)
    item_vecs = torch.randn(len(lengths), T, cfg.d_model)
    types = torch.randint(0, cfg.n_event_types, (len(lengths), T))
    gaps = torch.randint(0, cfg.n_gap_buckets, (len(lengths), T))
    valid = torch.arange(T)[None, :] >= T - torch.tensor(lengths)[:, None]
    positions = (
        torch.tensor(lengths) - 1 + torch.tensor([0, 5, 0, 11, 3, 0, 7, 2])
    )  # positions in longer histories
    with torch.no_grad():
        vec, rings = tower.prefill(item_vecs, types, gaps, valid, positions)
        out, kvs = tower.forward_kv(item_vecs, types, gaps, valid)
    torch.testing.assert_close(vec, out[:, -1], rtol=1e-5, atol=1e-5)
    for b, n in enumerate(lengths):
        kept = min(n, window)
        for t in range(T - kept, T):  # the last `kept` events live in slot position % W
            slot = int(positions[b] - (T - 1 - t)) % window
            for layer, (k, v) in enumerate(kvs):
                torch.testing.assert_close(
                    rings[b, layer, 0, :, slot], k[b, :, t], atol=1e-5, rtol=1e-5
                )
                torch.testing.assert_close(
                    rings[b, layer, 1, :, slot], v[b, :, t], atol=1e-5, rtol=1e-5
                )
        empty = [(int(positions[b]) - j) % window for j in range(kept, window)]
        assert not rings[b, :, :, :, empty].any()  # slots with no event of the user's are zero
