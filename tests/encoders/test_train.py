from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
import torch

from encoders.checkpoint import load_checkpoint, save_checkpoint
from encoders.evaluate import evaluate_model, evaluate_popularity, leave_one_out
from encoders.incremental import IncrementalEncoder, StepRequest
from encoders.model import EncoderConfig
from encoders.train import TrainConfig, train_model

Seqs = dict[str, list[tuple[str, int, float]]]

ENC = EncoderConfig(d_model=32, n_layers=2, n_heads=2, window=8, dropout=0.1)


def synthetic(
    seed: int = 0, n_users: int = 300, n_cats: int = 12, per_cat: int = 12
) -> tuple[Seqs, dict[str, dict[str, Any]]]:
    """Users like two categories; within a category they mostly move to the NEXT item (a chain),
    sometimes jump to a random item of a liked category. Item popularity is nearly flat, so only
    a model of the sequence can predict the next item."""
    rng = random.Random(seed)
    items = {
        f"c{c}i{j}": {
            "category": f"cat{c}",
            "price": 10.0 * (1 + c) * (1 + j % 3),
            "title": f"item {j} of cat{c}",
            "available": True,
        }
        for c in range(n_cats)
        for j in range(per_cat)
    }
    seqs: Seqs = {}
    for u in range(n_users):
        liked = rng.sample(range(n_cats), 2)
        c, j = rng.choice(liked), rng.randrange(per_cat)
        ts = 1.7e9 + rng.random() * 1e5
        seq = []
        for _ in range(rng.randint(12, 40)):
            seq.append((f"c{c}i{j}", rng.randrange(3), ts))
            ts += rng.expovariate(1 / 300)
            if rng.random() < 0.8:
                j = (j + 1) % per_cat
            else:
                c, j = rng.choice(liked), rng.randrange(per_cat)
        if u % 10 == 0:  # items seen in events but absent from the catalog must work
            seq.insert(len(seq) // 2, ("not-in-catalog", 0, seq[len(seq) // 2][2]))
        seqs[f"u{u}"] = seq
    return seqs, items


def test_trained_model_beats_popularity(tmp_path: Path) -> None:
    seqs, items = synthetic()
    split = leave_one_out(seqs)
    train_seqs = {u: s[:-1] for u, s in seqs.items()}  # the validation event trains too
    tc = TrainConfig(
        epochs=12, batch_size=32, lr=3e-3, max_seq_len=50, val_users=100, patience=3, num_threads=2
    )
    trained = train_model(train_seqs, items, ENC, tc, progress=False)
    assert trained.config.n_item_ids == len(trained.item_ids) + 1
    assert "not-in-catalog" in trained.item_ids
    summary = trained.metadata["training"]
    assert summary["epochs_run"] >= 1 and summary["val_users"] == 100

    model = evaluate_model(trained, split.test, (10,), exclude_history=False)
    pop = evaluate_popularity(train_seqs, split.test, trained.row_of, (10,), False)
    assert len(split.test) == 300
    assert model["hr@10"] > pop["hr@10"] + 0.3, (model, pop)
    assert model["ndcg@10"] > pop["ndcg@10"] + 0.2, (model, pop)

    # the checkpoint reproduces the evaluation exactly
    loaded = load_checkpoint(save_checkpoint(tmp_path / "m", trained))
    assert evaluate_model(loaded, split.test, (10,), exclude_history=False) == model

    # and the serving path agrees with the offline vectors for a trained model
    item_vecs = loaded.vocab_item_vectors()
    enc = IncrementalEncoder(loaded.model, 2**20)
    enc.set_item_vectors(item_vecs)
    ctx = loaded.config.context_events
    seq = train_seqs["u1"]
    rows = [loaded.row_of[i] for i, _, _ in seq]
    types = [t for _, t, _ in seq]
    gaps = [-1.0] + [seq[i][2] - seq[i - 1][2] for i in range(1, len(seq))]
    for p in range(len(seq)):
        lo = max(0, p + 1 - ctx)
        out = enc.step(
            [StepRequest("u1", p, rows[lo : p + 1], types[lo : p + 1], gaps[lo : p + 1])]
        )[0]
        ref = loaded.model.encode_full(rows[: p + 1], types[: p + 1], gaps[: p + 1], item_vecs)
        assert float((out - ref).abs().max()) <= 1e-4


def test_training_is_deterministic_and_keeps_the_global_rng() -> None:
    seqs, items = synthetic(seed=1, n_users=40)
    tc = TrainConfig(epochs=2, batch_size=16, max_seq_len=20, val_users=10, seed=5)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = train_model(seqs, items, ENC, tc, progress=False)
    assert torch.equal(torch.get_rng_state(), before)
    b = train_model(seqs, items, ENC, tc, progress=False)
    assert a.model_version == b.model_version
    for name, t in a.model.state_dict().items():
        assert torch.equal(t, b.model.state_dict()[name]), name
    c = train_model(seqs, items, ENC, TrainConfig(**{**tc.__dict__, "seed": 6}), progress=False)
    assert c.model_version != a.model_version


def test_popularity_baseline_and_unknown_targets() -> None:
    seqs, items = synthetic(seed=2, n_users=30)
    trained = train_model(seqs, items, ENC, TrainConfig(epochs=1, val_users=0), progress=False)
    counts: dict[str, int] = {}
    for seq in seqs.values():
        for item, _, _ in seq:
            counts[item] = counts.get(item, 0) + 1
    top = max(sorted(counts), key=lambda i: counts[i])
    users = list(seqs)[:4]
    cases = {u: (seqs[u], (top, 0, 2e9)) for u in users[:2]}
    cases |= {u: (seqs[u], ("never-seen", 0, 2e9)) for u in users[2:]}
    pop = evaluate_popularity(seqs, cases, trained.row_of, (1,), exclude_history=False)
    assert pop == {"hr@1": 0.5, "ndcg@1": 0.5}  # the top item ranks first; unknown: a miss
    model = evaluate_model(trained, cases, (1,), exclude_history=False)
    assert model["hr@1"] <= 0.5  # an item outside the vocabulary can never be hit


def test_rejects_bad_event_types() -> None:
    with pytest.raises(ValueError, match="event type"):
        train_model(
            {"u": [("a", 7, 1.0), ("b", 0, 2.0)]}, {}, ENC, TrainConfig(epochs=1), progress=False
        )


def test_chunks_whole_history_vs_sasrec_last_chunk() -> None:
    from encoders.train import _chunks

    encoded = [(list(range(1, 12)), [0] * 11, [1.0] * 11)]  # one user, 11 events
    # whole history: scored positions 0..9 in chunks of 4, each reaching back ctx-1 = 2 events
    assert _chunks(encoded, 4, 3) == [(0, 0, 0, 4), (0, 2, 4, 8), (0, 6, 8, 10)]
    # SASRec: only the last 4 scored positions, no earlier context
    assert _chunks(encoded, 4, 3, last_only=True) == [(0, 6, 6, 10)]


def test_cosine_schedule() -> None:
    from encoders.train import _Trainer

    seqs, items = synthetic(seed=1, n_users=20)
    tc = TrainConfig(epochs=5, lr_schedule="cosine", val_users=0)
    t = _Trainer(seqs, items, ENC, tc, None)
    per_epoch = 10
    f = [t._lr_factor(s, per_epoch) for s in range(5 * per_epoch)]
    assert f[0] == pytest.approx(0.1) and f[per_epoch - 1] == pytest.approx(1.0)  # warm-up
    assert f[per_epoch] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(f[per_epoch:], f[per_epoch + 1 :], strict=False))
    assert f[-1] < 0.01
    const = _Trainer(seqs, items, ENC, TrainConfig(val_users=0), None)
    assert {const._lr_factor(s, per_epoch) for s in range(30)} == {1.0}
