"""DP-SGD (encoders/private.py): exact per-user gradients, clipping, accounting, and a training
run whose checkpoint records what it spent."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from encoders.checkpoint import load_checkpoint, save_checkpoint
from encoders.item_features import ItemFeaturizer
from encoders.model import EncoderConfig, StreamRecModel
from encoders.private import DPConfig, PrivateSteps, noise_multiplier
from encoders.train import TrainConfig, _sample_loss, train_model
from tests.encoders.test_train import ENC, synthetic

N_ITEMS = 40


def _setup():
    torch.manual_seed(0)
    items = [
        {"category": f"c{i % 4}", "price": float(i), "title": f"t{i} w{i % 3}"}
        for i in range(N_ITEMS)
    ]
    fz = ItemFeaturizer.fit(items, 8, 32)
    cfg = EncoderConfig(d_model=16, n_layers=2, n_heads=2, window=4, dropout=0.0,
                        n_item_ids=N_ITEMS + 1, n_categories=fz.n_categories, n_price_buckets=8,
                        title_buckets=32)  # fmt: skip
    model = StreamRecModel(cfg).eval()
    feats = fz.encode([{}, *items], range(N_ITEMS + 1))
    B, T = 3, 9
    rows = torch.randint(1, N_ITEMS + 1, (B, T))
    types = torch.randint(0, 3, (B, T))
    gapb = torch.randint(0, cfg.n_gap_buckets, (B, T))
    valid = torch.ones(B, T, dtype=torch.bool)
    valid[0, :4] = False  # left padding
    tgt = torch.randint(1, N_ITEMS + 1, (B, T))
    tgt[0, :5] = -1
    tgt[1, :2] = -1
    return model, feats, (rows, types, gapb, valid, tgt)


@pytest.mark.parametrize("full", [True, False])
def test_per_user_gradients_equal_one_backward_per_user(full):
    model, feats, batch = _setup()
    neg_idx = None if full else torch.tensor([3, 7, 11, 19, 23])
    private = PrivateSteps(model, DPConfig(1.0, 1e-5), 0.1, 100, seed=0)
    grads, losses = private.per_sample_grads(_sample_loss(model, feats, neg_idx), batch)
    for b in range(batch[0].shape[0]):
        model.zero_grad()
        rows, types, gapb, valid, tgt = (t[b : b + 1] for t in batch)
        iv = model.item_tower(feats)
        h = model.user_tower(iv[rows], types, gapb, valid)[0]
        if full:
            logits, t = (h @ iv.T)[:, 1:], torch.where(tgt[0] >= 0, tgt[0] - 1, -1)
        else:
            pos = (h * iv[tgt[0].clamp(min=0)]).sum(-1, keepdim=True)
            neg = (h @ iv[neg_idx].T).masked_fill(neg_idx[None] == tgt[0][:, None], -math.inf)
            logits, t = torch.cat([pos, neg], 1), torch.where(tgt[0] >= 0, 0, -1)
        loss = F.cross_entropy(logits, t, ignore_index=-1)
        loss.backward()
        assert torch.isclose(losses[b], loss.detach(), atol=1e-5)
        for name, p in model.named_parameters():
            want = p.grad if p.grad is not None else torch.zeros_like(p)
            assert torch.allclose(grads[name][b], want, atol=1e-5), name


def test_each_users_gradient_is_clipped_before_the_sum():
    model, feats, batch = _setup()
    private = PrivateSteps(model, DPConfig(1.0, 1e-5, clip_norm=0.01), 0.1, 100, seed=0)
    body = _sample_loss(model, feats, None)
    grads, _ = private.per_sample_grads(body, batch)
    one = {k: g[:1] for k, g in grads.items()}
    norm = torch.stack([g.norm() for g in private.clipped_sum(one).values()]).norm()
    assert abs(float(norm) - 0.01) < 1e-4  # the raw gradient is far larger: scaled down to C
    total = torch.stack([g.norm() for g in private.clipped_sum(grads).values()]).norm()
    assert float(total) <= 3 * 0.01 + 1e-4


def test_a_smaller_epsilon_needs_more_noise():
    sigmas = [noise_multiplier(DPConfig(e, 1e-5), 0.01, 1000) for e in (1.0, 8.0)]
    assert sigmas[0] > sigmas[1] > 0


def test_training_under_dp_records_what_it_spent(tmp_path):
    seqs, items = synthetic(n_users=120)
    tc = TrainConfig(epochs=2, batch_size=16, val_users=20, dp_epsilon=4.0, dp_clip=0.5)
    trained = train_model(seqs, items, ENC, tc, progress=False)
    dp = trained.metadata["training"]["dp"]
    assert dp["epsilon_target"] == 4.0 and dp["clip_norm"] == 0.5
    assert dp["delta"] == pytest.approx(min(1e-5, 0.1 / 120))
    assert dp["steps"] == 2 * round(120 / 16)  # Poisson-sampled steps over the planned epochs
    assert 0 < dp["epsilon_spent"] <= 4.0 + 1e-3
    assert dp["noise_multiplier"] > 0
    for name, p in trained.model.named_parameters():
        assert torch.isfinite(p).all(), name
    save_checkpoint(tmp_path, trained)  # a servable checkpoint: the unknown-item row stays zero
    assert load_checkpoint(tmp_path).metadata["training"]["dp"] == dp
