from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from encoders.checkpoint import (
    META_FILE,
    WEIGHTS_FILE,
    CheckpointError,
    TrainedModel,
    load_checkpoint,
    save_checkpoint,
    sha256_file,
)
from encoders.item_features import ItemFeaturizer
from encoders.model import EncoderConfig
from tests.encoders.helpers import random_model

CATALOG = {
    "i1": {"category": "books", "price": 12.0, "title": "a long story"},
    "i2": {"category": "games", "price": 60.0, "title": "space game"},
    "i3": {"category": "books", "price": 8.0, "title": "short story"},
}


def make_trained() -> TrainedModel:
    fz = ItemFeaturizer.fit(CATALOG.values(), n_price_buckets=8, title_buckets=64)
    vocab = ["i1", "i2", "i3"]
    cfg = EncoderConfig(
        d_model=16,
        n_layers=2,
        n_heads=2,
        window=4,
        n_item_ids=4,
        n_categories=fz.n_categories,
        n_price_buckets=8,
        title_buckets=64,
    )
    return TrainedModel(
        model=random_model(cfg, seed=3),
        config=cfg,
        item_ids=vocab,
        featurizer=fz,
        vocab_features=fz.encode([{}] + [CATALOG[i] for i in vocab], range(4)),
        model_version="test-v1",
        metadata={"training": {"epochs_run": 1}},
    )


@pytest.fixture
def saved(tmp_path: Path) -> tuple[TrainedModel, Path]:
    trained = make_trained()
    return trained, save_checkpoint(tmp_path / "ckpt", trained)


def test_round_trip_gives_identical_outputs(saved: tuple[TrainedModel, Path]) -> None:
    trained, path = saved
    assert (path / WEIGHTS_FILE).is_file() and (path / META_FILE).is_file()
    meta = json.loads((path / META_FILE).read_text())
    assert meta["weights_sha256"] == sha256_file(path / WEIGHTS_FILE)
    assert meta["item_ids"] == ["i1", "i2", "i3"] and meta["created_at"]
    loaded = load_checkpoint(path)
    assert loaded.config == trained.config
    assert loaded.item_ids == trained.item_ids and loaded.featurizer == trained.featurizer
    assert loaded.model_version == "test-v1"
    assert loaded.metadata["training"] == {"epochs_run": 1}
    assert not loaded.model.training
    for name, t in trained.model.state_dict().items():
        assert torch.equal(t, loaded.model.state_dict()[name]), name
    assert torch.equal(trained.vocab_item_vectors(), loaded.vocab_item_vectors())
    ids = ["i2", "new-item", "i1"]
    records = [CATALOG["i2"], {"category": "games", "price": 30.0}, CATALOG["i1"]]
    vecs = loaded.item_vectors(ids, records)
    assert torch.equal(vecs, trained.item_vectors(ids, records))
    history = (
        [1, 2, 0, 3, 1, 2, 3, 3, 1],
        [0, 1, 2, 0, 0, 1, 1, 2, 0],
        [-1.0, 5.0, 60.0, 1.0, 1e4, 2.0, 3.0, 0.0, 7.0],
    )
    vocab_vecs = loaded.vocab_item_vectors()  # rows 0..3
    assert torch.equal(
        trained.model.encode_full(*history, vocab_vecs),
        loaded.model.encode_full(*history, vocab_vecs),
    )


def test_item_vectors_use_id_embedding_only_for_the_vocabulary() -> None:
    trained = make_trained()
    vocab_vecs = trained.vocab_item_vectors()
    vecs = trained.item_vectors(["i2", "zz"], [CATALOG["i2"], CATALOG["i2"]])
    torch.testing.assert_close(vecs[0], vocab_vecs[2])
    id_row = trained.model.item_tower.id_emb.weight[2].detach()
    torch.testing.assert_close(vecs[0] - vecs[1], id_row)  # "zz" is features only


def _rehash(path: Path) -> None:
    """Make model.json agree with the current tensor file, to test the checks behind the hash."""
    meta = json.loads((path / META_FILE).read_text())
    meta["weights_sha256"] = sha256_file(path / WEIGHTS_FILE)
    (path / META_FILE).write_text(json.dumps(meta))


def _refused(path: Path, match: str) -> None:
    with pytest.raises(CheckpointError, match=match) as info:
        load_checkpoint(path)
    assert isinstance(info.value, ValueError)


def test_truncated_file_is_refused(saved: tuple[TrainedModel, Path]) -> None:
    _, path = saved
    data = (path / WEIGHTS_FILE).read_bytes()
    (path / WEIGHTS_FILE).write_bytes(data[: len(data) // 2])
    _refused(path, "sha256")
    _rehash(path)
    _refused(path, "not a valid safetensors")


def test_flipped_byte_is_refused(saved: tuple[TrainedModel, Path]) -> None:
    _, path = saved
    data = bytearray((path / WEIGHTS_FILE).read_bytes())
    data[-100] ^= 0xFF
    (path / WEIGHTS_FILE).write_bytes(bytes(data))
    _refused(path, "sha256")


def test_wrong_shape_is_refused(saved: tuple[TrainedModel, Path]) -> None:
    _, path = saved
    tensors = load_file(path / WEIGHTS_FILE)
    name = "user_tower.blocks.0.attn.rel_bias"
    tensors[name] = torch.zeros(2, 5)  # window 4 expected
    save_file(tensors, path / WEIGHTS_FILE)
    _rehash(path)
    _refused(path, "rel_bias")


def test_config_that_does_not_match_the_tensors_is_refused(
    saved: tuple[TrainedModel, Path],
) -> None:
    _, path = saved
    meta = json.loads((path / META_FILE).read_text())
    meta["config"]["n_layers"] = 3
    (path / META_FILE).write_text(json.dumps(meta))
    _refused(path, "tensor names")
    meta["config"]["n_layers"] = 2
    meta["config"]["unknown_knob"] = 1
    (path / META_FILE).write_text(json.dumps(meta))
    _refused(path, "config")
    del meta["config"]["unknown_knob"], meta["config"]["n_gap_buckets"]
    (path / META_FILE).write_text(json.dumps(meta))
    _refused(path, "incomplete")


def test_missing_files_are_refused(tmp_path: Path, saved: tuple[TrainedModel, Path]) -> None:
    _refused(tmp_path / "nowhere", "missing")
    _, path = saved
    (path / WEIGHTS_FILE).unlink()
    _refused(path, "missing")
    (path / META_FILE).unlink()
    _refused(path, "missing")


def test_pickle_is_refused(saved: tuple[TrainedModel, Path]) -> None:
    trained, path = saved
    with (path / WEIGHTS_FILE).open("wb") as f:
        pickle.dump(trained.model.state_dict(), f)
    _refused(path, "sha256")
    _rehash(path)  # even with a matching hash, pickle is never unpickled
    _refused(path, "not a valid safetensors")


def test_bad_metadata_is_refused(saved: tuple[TrainedModel, Path]) -> None:
    _, path = saved
    good = (path / META_FILE).read_text()
    (path / META_FILE).write_text(good[:-10])
    _refused(path, "not JSON")
    meta = json.loads(good)
    for key, value, match in [
        ("format_version", 99, "format_version"),
        ("item_ids", ["i1", "i2"], "item ids"),
        ("item_ids", ["i1", "i1", "i2"], "item ids"),
        ("featurizer", {"categories": "x"}, "featurizer"),
    ]:
        (path / META_FILE).write_text(json.dumps({**meta, key: value}))
        _refused(path, match)


def test_hand_built_model_without_vocab_features(tmp_path: Path) -> None:
    full = make_trained()
    bare = TrainedModel(
        model=full.model,
        config=full.config,
        item_ids=full.item_ids,
        featurizer=full.featurizer,
        model_version="bare",
    )
    unknown = full.item_vectors(["zz"], [{}])[0]
    vecs = bare.vocab_item_vectors()
    torch.testing.assert_close(vecs[0], unknown)
    torch.testing.assert_close(vecs[1] - vecs[0], full.model.item_tower.id_emb.weight[1].detach())
    loaded = load_checkpoint(save_checkpoint(tmp_path, bare))
    assert torch.equal(loaded.vocab_item_vectors(), vecs)
    with pytest.raises(ValueError, match="item ids"):
        TrainedModel(full.model, full.config, ["i1"], full.featurizer, "x")
