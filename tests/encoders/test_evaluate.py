"""Leave-one-out protocol, popularity baseline and the serving-path agreement check."""

from __future__ import annotations

import pytest
import torch

from encoders.evaluate import (
    evaluate_model,
    evaluate_popularity,
    leave_one_out,
    serving_agreement,
)
from encoders.model import EncoderConfig
from encoders.train import TrainConfig, train_model
from tests.encoders.test_train import synthetic


def test_leave_one_out_split() -> None:
    seqs = {
        "a": [("x", 0, 1.0), ("y", 1, 2.0), ("z", 2, 3.0), ("w", 0, 4.0)],
        "b": [("x", 0, 1.0), ("y", 0, 2.0)],
    }
    sp = leave_one_out(seqs)
    assert sp.train == {"a": [("x", 0, 1.0), ("y", 1, 2.0)], "b": seqs["b"]}
    assert sp.valid == {"a": ([("x", 0, 1.0), ("y", 1, 2.0)], ("z", 2, 3.0))}
    assert sp.test == {"a": ([("x", 0, 1.0), ("y", 1, 2.0), ("z", 2, 3.0)], ("w", 0, 4.0))}


def test_popularity_by_hand() -> None:
    train = {"u1": [("a", 0, 0.0), ("a", 0, 1.0), ("b", 0, 2.0)], "u2": [("a", 0, 0.0)]}
    row_of = {"a": 1, "b": 2, "c": 3}
    cases = {
        "u1": (train["u1"], ("b", 0, 3.0)),  # popularity order a, b, c -> rank 1
        "u2": (train["u2"], ("c", 0, 1.0)),  # c never seen in training -> rank 2
    }
    got = evaluate_popularity(train, cases, row_of, ks=(1, 2, 3), exclude_history=False)
    assert (got["hr@1"], got["hr@2"], got["hr@3"]) == (0.0, 0.5, 1.0)
    # history removed: u1's target b was seen, so it can never be recommended (a miss);
    # u2 has only b and c left, b first -> c at rank 1
    got = evaluate_popularity(train, cases, row_of, ks=(1, 2, 3), exclude_history=True)
    assert (got["hr@1"], got["hr@2"], got["hr@3"]) == (0.0, 0.5, 0.5)


@pytest.fixture(scope="module")
def trained_loo():  # type: ignore[no-untyped-def]
    seqs, items = synthetic(seed=3, n_users=200)
    sp = leave_one_out(seqs)
    enc = EncoderConfig(d_model=32, n_layers=2, n_heads=2, window=8)
    tc = TrainConfig(epochs=4, seed=0, exclude_history=False, patience=0)
    best: list[int] = []
    tm = train_model(
        sp.train,
        items,
        enc,
        tc,
        progress=False,
        validation={u: v[1] for u, v in sp.valid.items()},
        on_best=lambda m: best.append(m.metadata["training"]["best_epoch"]),
    )
    return sp, tm, best


def test_trained_model_beats_popularity_under_loo(trained_loo) -> None:  # type: ignore[no-untyped-def]
    sp, tm, best = trained_loo
    assert best and best == sorted(best)  # a checkpoint per improving epoch, in order
    assert tm.metadata["training"]["best_epoch"] == best[-1]
    model = evaluate_model(tm, sp.test, ks=(10,), exclude_history=False)
    pop = evaluate_popularity(sp.train, sp.test, tm.row_of, ks=(10,), exclude_history=False)
    assert model["hr@10"] > 2 * pop["hr@10"] + 0.05


def test_serving_path_equals_evaluated_vectors(trained_loo) -> None:  # type: ignore[no-untyped-def]
    sp, tm, _ = trained_loo
    got = serving_agreement(tm, sp.test, users=20)
    assert got["users"] == 20 and got["events"] > 20 * 10
    assert got["hits"] > got["misses"]  # it really stepped incrementally
    assert got["max_abs_diff"] < 1e-4


def test_sampled_softmax_learns() -> None:
    seqs, items = synthetic(seed=4, n_users=200)
    sp = leave_one_out(seqs)
    enc = EncoderConfig(d_model=32, n_layers=2, n_heads=2, window=8)
    tc = TrainConfig(epochs=4, seed=0, loss="sampled", negatives=40, patience=0)
    tm = train_model(sp.train, items, enc, tc, progress=False)
    model = evaluate_model(tm, sp.test, ks=(10,), exclude_history=False)
    pop = evaluate_popularity(sp.train, sp.test, tm.row_of, ks=(10,), exclude_history=False)
    assert model["hr@10"] > 2 * pop["hr@10"] + 0.05
    with pytest.raises(ValueError, match="loss"):
        train_model(sp.train, items, enc, TrainConfig(loss="bpr"), progress=False)


def test_windowed_attention_equals_reference() -> None:
    from encoders.model import StreamRecModel

    torch.manual_seed(0)
    cfg = EncoderConfig(d_model=16, n_layers=1, n_heads=2, window=5, n_item_ids=10)
    attn = StreamRecModel(cfg).user_tower.blocks[0].attn.eval()
    with torch.no_grad():
        attn.rel_bias.normal_()
    for T in (1, 4, 5, 12, 23):
        q, k, v = (torch.randn(3, 2, T, 8) for _ in range(3))
        valid = torch.ones(3, T, dtype=torch.bool)
        valid[1, : T // 2] = False  # left padding
        valid[2, : T - 1] = False
        got = attn.windowed_attention(q, k, v, valid)
        want = attn.reference_attention(q, k, v, valid)
        assert torch.isfinite(got).all()
        assert (got - want)[valid[:, None, :, None].expand_as(got)].abs().max() < 1e-5
