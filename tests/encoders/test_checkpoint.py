from __future__ import annotations

import json
import pickle
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


# -- hostile files: refused with a CheckpointError, never executed, never allocated ---------------


class _Planted:
    """Unpickling this creates ``marker``: evidence that something ran pickle on the file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


def _planted_pickle(marker: Path) -> bytes:
    blob = pickle.dumps({"item_tower.id_emb.weight": _Planted(marker)})
    # the probe works: loading this pickle does create the marker ...
    pickle.loads(blob)
    assert marker.exists()
    marker.unlink()  # ... so its absence below means nobody unpickled it
    return blob


def test_planted_pickles_are_refused_and_never_unpickled(
    tmp_path: Path, saved: tuple[TrainedModel, Path]
) -> None:
    trained, path = saved
    marker = tmp_path / "unpickled"
    blob = _planted_pickle(marker)
    good_weights, good_meta = (path / WEIGHTS_FILE).read_bytes(), (path / META_FILE).read_text()

    # a pickle (plain, and torch.save's zip of pickles) in place of the tensor file, hash matching
    (path / WEIGHTS_FILE).write_bytes(blob)
    _rehash(path)
    _refused(path, "not a valid safetensors")
    torch.save({"w": _Planted(marker)}, path / WEIGHTS_FILE)
    _rehash(path)
    _refused(path, "not a valid safetensors")
    # a pickle in place of the metadata
    (path / WEIGHTS_FILE).write_bytes(good_weights)
    (path / META_FILE).write_bytes(blob)
    _refused(path, "not JSON")
    assert not marker.exists()

    # pickles lying next to a good checkpoint are not looked at
    (path / META_FILE).write_text(good_meta)
    for name in ("pytorch_model.bin", "model.pt", "model.pkl", "model.ckpt"):
        (path / name).write_bytes(blob)
    assert load_checkpoint(path).model_version == trained.model_version
    assert not marker.exists()


def test_a_header_claiming_a_huge_size_is_refused(saved: tuple[TrainedModel, Path]) -> None:
    _, path = saved
    (path / WEIGHTS_FILE).write_bytes(struct.pack("<Q", 2**62) + b"{}")
    _rehash(path)
    _refused(path, "not a valid safetensors")


def test_a_config_larger_than_its_tensors_is_refused_before_any_allocation(
    saved: tuple[TrainedModel, Path],
) -> None:
    # d_model 2**16 would ask for tens of GB if the model were built before the tensors are
    # checked, 2**40 overflows torch's size arithmetic: both are refused with the config named
    _, path = saved
    meta = json.loads((path / META_FILE).read_text())
    for d_model, match in ((2**16, "the config needs"), (2**40, "incompatible encoder config")):
        meta["config"]["d_model"] = d_model
        (path / META_FILE).write_text(json.dumps(meta))
        _refused(path, match)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda m: m["config"].__setitem__("d_model", "16"), "incompatible encoder config"),
        (lambda m: m["config"].__setitem__("d_model", 16.0), "incompatible encoder config"),
        (lambda m: m["config"].__setitem__("dropout", "x"), "incompatible encoder config"),
        (lambda m: m["config"].__setitem__("n_heads", 3), "not divisible"),
        (lambda m: m.__setitem__("config", None), "incomplete"),
        (lambda m: m.__setitem__("featurizer", None), "featurizer"),
        (lambda m: m.__setitem__("model_version", 5), "model_version"),
        (lambda m: m.__setitem__("item_ids", "i1"), "item_ids"),
        (lambda m: m.__setitem__("weights_sha256", None), "sha256"),
    ],
)
def test_badly_typed_metadata_is_refused(
    saved: tuple[TrainedModel, Path], edit: Callable[[dict[str, Any]], None], match: str
) -> None:
    _, path = saved
    meta = json.loads((path / META_FILE).read_text())
    edit(meta)
    (path / META_FILE).write_text(json.dumps(meta))
    _refused(path, match)


@pytest.mark.parametrize("raw", [b"", b"[1, 2]", b"\xff\xfe{}", b'{"format_version": 1'])
def test_metadata_that_is_not_a_json_object_is_refused(
    saved: tuple[TrainedModel, Path], raw: bytes
) -> None:
    _, path = saved
    (path / META_FILE).write_bytes(raw)
    _refused(path, "JSON")


def _edit_tensors(path: Path, edit: Callable[[dict[str, torch.Tensor]], object]) -> None:
    tensors = load_file(path / WEIGHTS_FILE)
    edit(tensors)
    save_file(tensors, path / WEIGHTS_FILE)
    _rehash(path)


def test_tensors_with_bad_values_are_refused(saved: tuple[TrainedModel, Path]) -> None:
    _, path = saved
    good = (path / WEIGHTS_FILE).read_bytes()
    emb = "item_tower.id_emb.weight"

    def restore() -> None:
        (path / WEIGHTS_FILE).write_bytes(good)

    _edit_tensors(path, lambda t: t[emb].__setitem__((1, 0), float("nan")))
    _refused(path, "NaN/inf")
    restore()
    _edit_tensors(path, lambda t: t.__setitem__(emb, t[emb].double()))
    _refused(path, "float64")
    restore()
    _edit_tensors(path, lambda t: t[emb].__setitem__((0, 0), 1.0))
    _refused(path, "row 0")
    restore()

    def drop_vocab_features(t: dict[str, torch.Tensor]) -> None:
        for k in [k for k in t if k.startswith("vocab_features.")]:
            del t[k]

    _edit_tensors(path, drop_vocab_features)
    _refused(path, "vocabulary item features")
    restore()
    _edit_tensors(
        path, lambda t: t.__setitem__("vocab_features.id_index", t["vocab_features.id_index"] + 99)
    )
    _refused(path, "out of range")


def _with_ranker(trained: TrainedModel) -> TrainedModel:
    from encoders.ranker import Ranker, RankerConfig
    from streamrec.recommend.candidates import FEATURES

    torch.manual_seed(0)
    trained.ranker = Ranker(RankerConfig(len(FEATURES), 8, FEATURES)).eval()
    trained.ranker.mean.uniform_()
    return trained


def test_the_ranker_travels_in_the_same_checkpoint(tmp_path: Path) -> None:
    trained = _with_ranker(make_trained())
    save_checkpoint(tmp_path, trained)
    loaded = load_checkpoint(tmp_path)
    assert loaded.ranker is not None and trained.ranker is not None
    x = torch.randn(5, trained.ranker.cfg.n_features).numpy()
    assert (loaded.ranker.score(x) == trained.ranker.score(x)).all()
    assert json.loads((tmp_path / META_FILE).read_text())["ranker"]["hidden"] == 8


def _rewrite(tmp_path: Path, edit_meta: Callable[[dict[str, Any]], None] | None = None,
             edit_tensors: Callable[[dict[str, torch.Tensor]], None] | None = None) -> None:  # fmt: skip
    tensors = load_file(tmp_path / WEIGHTS_FILE)
    if edit_tensors:
        edit_tensors(tensors)
        save_file(tensors, tmp_path / WEIGHTS_FILE)
    meta = json.loads((tmp_path / META_FILE).read_text())
    meta["weights_sha256"] = sha256_file(tmp_path / WEIGHTS_FILE)
    if edit_meta:
        edit_meta(meta)
    (tmp_path / META_FILE).write_text(json.dumps(meta))


@pytest.mark.parametrize(
    ("edit_meta", "edit_tensors", "message"),
    [
        (lambda m: m["ranker"].update(features=["x"] * m["ranker"]["n_features"]), None,
         "trained on features"),
        (lambda m: m.pop("ranker"), None, "must come together"),
        (None, lambda t: t["ranker.net.0.weight"].fill_(float("nan")), "NaN"),
        (lambda m: m["ranker"].update(hidden=16), None, "ranker tensor"),
    ],
)  # fmt: skip
def test_a_bad_ranker_is_refused(tmp_path: Path, edit_meta, edit_tensors, message) -> None:  # type: ignore[no-untyped-def]
    save_checkpoint(tmp_path, _with_ranker(make_trained()))
    _rewrite(tmp_path, edit_meta, edit_tensors)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(tmp_path)
