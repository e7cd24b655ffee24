"""Model files: ``model.safetensors`` (tensors only, never pickle: loading must not run code) and
``model.json`` (everything else, including the sha256 of the tensor file).

The tensor file holds the model's state dict plus the item features of the training vocabulary
(``vocab_features.*``), so a checkpoint alone can rebuild the item matrix it was trained on.
Loading checks everything it can before building a model, and turns every problem into a
``CheckpointError`` naming the file and the cause.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import Tensor

from encoders.item_features import ItemFeatures, ItemFeaturizer
from encoders.model import EncoderConfig, StreamRecModel
from encoders.ranker import Ranker, RankerConfig
from streamrec.atomic import write_atomic

FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
META_FILE = "model.json"
_FEATURES_PREFIX = "vocab_features."
_RANKER_PREFIX = "ranker."


class CheckpointError(ValueError):
    """A checkpoint that is missing, corrupt, truncated or incompatible with this code."""


@dataclass
class TrainedModel:
    model: StreamRecModel
    config: EncoderConfig
    item_ids: list[str]  # the id vocabulary: item_ids[r - 1] owns id-embedding row r (row 0=unseen)
    featurizer: ItemFeaturizer
    model_version: str
    metadata: dict[str, Any] = field(default_factory=dict)
    # Features of id rows 0..n_item_ids-1 (row 0: the unknown item), as seen in training. None
    # (a hand-built model) means "features unknown": vocabulary vectors are then id embeddings on
    # top of the unknown-feature vector.
    vocab_features: ItemFeatures | None = None
    # The learned scorer over candidate features (None: lists are the model's retrieval, ranked
    # by the heuristic blend of the other sources where they apply).
    ranker: Ranker | None = None

    def __post_init__(self) -> None:
        if self.vocab_features is None:
            n = self.config.n_item_ids
            self.vocab_features = self.featurizer.encode([{}] * n, range(n))
        if len(self.vocab_features) != self.config.n_item_ids:
            raise ValueError(
                f"vocab_features has {len(self.vocab_features)} rows, "
                f"expected n_item_ids={self.config.n_item_ids}"
            )
        if len(self.item_ids) != self.config.n_item_ids - 1:
            raise ValueError(
                f"{len(self.item_ids)} item ids for n_item_ids={self.config.n_item_ids} "
                "(the vocabulary plus the unknown row 0)"
            )

    @cached_property
    def row_of(self) -> dict[str, int]:
        """item id -> id-embedding row."""
        return {item_id: r + 1 for r, item_id in enumerate(self.item_ids)}

    def item_vectors(self, item_ids: Sequence[str], items: Sequence[Mapping[str, Any]]) -> Tensor:
        """Serving vectors [N, d] for a catalog: ids in the vocabulary add their id embedding,
        others are described by their features (``items[i]``: category, price, title) alone."""
        if len(item_ids) != len(items):
            raise ValueError(f"{len(item_ids)} item ids but {len(items)} item records")
        rows = [self.row_of.get(i, 0) for i in item_ids]
        features = self.featurizer.encode(items, rows)
        self.model.eval()
        with torch.no_grad():
            return self.model.item_tower(features)

    def vocab_item_vectors(self) -> Tensor:
        """Item vectors [n_item_ids, d] of the training vocabulary as trained (row r = vocab row)."""
        assert self.vocab_features is not None  # filled in by __post_init__
        self.model.eval()
        with torch.no_grad():
            return self.model.item_tower(self.vocab_features)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_checkpoint(directory: str | os.PathLike[str], trained: TrainedModel) -> Path:
    """Write ``model.safetensors`` and ``model.json`` into ``directory`` (created if needed) and
    return it. Each file is written to a temporary name and renamed, and the JSON (which carries
    the tensor file's hash) goes last, so a crash never leaves a pair that verifies."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous() for k, v in trained.model.state_dict().items()}
    assert trained.vocab_features is not None
    for name, t in trained.vocab_features.tensors().items():
        tensors[_FEATURES_PREFIX + name] = t.contiguous()
    if trained.ranker is not None:
        for name, t in trained.ranker.state_dict().items():
            tensors[_RANKER_PREFIX + name] = t.detach().contiguous()
    blob = save_safetensors(tensors, metadata={"model_version": trained.model_version})
    weights, meta = out / WEIGHTS_FILE, out / META_FILE
    write_atomic(weights, blob)
    metadata = {
        "format_version": FORMAT_VERSION,
        "model_version": trained.model_version,
        "created_at": datetime.now(UTC).isoformat(),
        "weights_file": WEIGHTS_FILE,
        "weights_sha256": hashlib.sha256(blob).hexdigest(),
        "config": trained.config.to_dict(),
        "featurizer": trained.featurizer.to_dict(),
        "training": trained.metadata.get("training", {}),
        "item_ids": list(trained.item_ids),
    }
    if trained.ranker is not None:
        metadata["ranker"] = trained.ranker.cfg.to_dict()
    write_atomic(meta, json.dumps(metadata, indent=1).encode("utf-8"))
    return out


def load_checkpoint(directory: str | os.PathLike[str]) -> TrainedModel:
    """Load and verify a checkpoint; any problem raises ``CheckpointError``."""
    root = Path(directory)
    meta_path, weights_path = root / META_FILE, root / WEIGHTS_FILE
    for p in (meta_path, weights_path):
        if not p.is_file():
            raise CheckpointError(f"checkpoint file missing: {p}")

    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{meta_path}: unreadable or not JSON ({e})") from e
    if not isinstance(meta, dict):
        raise CheckpointError(f"{meta_path}: expected a JSON object")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{meta_path}: format_version {meta.get('format_version')!r} is not supported "
            f"(this code reads {FORMAT_VERSION})"
        )
    missing = [
        k
        for k in ("model_version", "weights_sha256", "config", "featurizer", "item_ids")
        if k not in meta
    ]
    if missing:
        raise CheckpointError(f"{meta_path}: missing keys {missing}")

    config = meta["config"]
    absent = sorted({f.name for f in fields(EncoderConfig)} - set(config or {}))
    if not isinstance(config, dict) or absent:
        # no silent defaults: a field missing here may not be the default the model was trained with
        raise CheckpointError(f"{meta_path}: encoder config incomplete (missing {absent})")
    try:
        cfg = EncoderConfig.from_dict(config)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{meta_path}: incompatible encoder config ({e})") from e
    try:
        featurizer = ItemFeaturizer.from_dict(meta["featurizer"])
    except (TypeError, ValueError, AttributeError) as e:
        raise CheckpointError(f"{meta_path}: bad featurizer ({e})") from e
    if (featurizer.n_categories, featurizer.n_price_buckets, featurizer.title_buckets) != (
        cfg.n_categories,
        cfg.n_price_buckets,
        cfg.title_buckets,
    ):
        raise CheckpointError(f"{meta_path}: featurizer sizes do not match the encoder config")
    item_ids = meta["item_ids"]
    if not isinstance(item_ids, list) or not all(isinstance(i, str) for i in item_ids):
        raise CheckpointError(f"{meta_path}: item_ids must be a list of strings")
    if len(item_ids) != cfg.n_item_ids - 1 or len(set(item_ids)) != len(item_ids):
        raise CheckpointError(
            f"{meta_path}: {len(item_ids)} item ids (unique: {len(set(item_ids))}) do not match "
            f"n_item_ids={cfg.n_item_ids} (vocabulary + the unknown row)"
        )
    model_version = meta["model_version"]
    if not isinstance(model_version, str) or not model_version:
        raise CheckpointError(f"{meta_path}: model_version must be a non-empty string")

    try:
        blob = weights_path.read_bytes()  # hash and parse the same bytes
    except OSError as e:
        raise CheckpointError(f"{weights_path}: unreadable ({e})") from e
    digest = hashlib.sha256(blob).hexdigest()
    if digest != meta["weights_sha256"]:
        raise CheckpointError(
            f"{weights_path}: sha256 {digest} does not match model.json "
            f"({meta['weights_sha256']}); the file is corrupt, truncated or from another model"
        )
    try:
        tensors = load_safetensors(blob)
    except Exception as e:  # safetensors raises its own error types for malformed files
        raise CheckpointError(f"{weights_path}: not a valid safetensors file ({e})") from e

    try:
        # Shapes and dtypes only, on the meta device: a config that does not match the tensors
        # (a 2**40-wide model, say) must be refused here, not allocated.
        with torch.device("meta"):
            expected = StreamRecModel(cfg).state_dict()
    except (RuntimeError, ValueError, TypeError) as e:
        raise CheckpointError(f"{meta_path}: incompatible encoder config ({e})") from e
    feature_names = {n for n in tensors if n.startswith(_FEATURES_PREFIX)}
    ranker_names = {n for n in tensors if n.startswith(_RANKER_PREFIX)}
    ranker = _load_ranker(
        meta.get("ranker"),
        {n[len(_RANKER_PREFIX) :]: tensors[n] for n in ranker_names},
        meta_path,
        weights_path,
    )
    state = {n: t for n, t in tensors.items() if n not in feature_names | ranker_names}
    _check_tensors(state, expected, weights_path, "tensor")
    if bool(state["item_tower.id_emb.weight"][0].any()):
        # row 0 stands for every item unseen in training; it must add nothing to their features
        raise CheckpointError(f"{weights_path}: id embedding row 0 (unknown items) is not zero")
    try:
        vocab_features = ItemFeatures.from_tensors(
            {n[len(_FEATURES_PREFIX) :]: tensors[n] for n in feature_names}
        )
        if len(vocab_features) != cfg.n_item_ids:
            raise ValueError(f"{len(vocab_features)} rows, expected n_item_ids={cfg.n_item_ids}")
        vocab_features.validate(
            cfg.n_item_ids, cfg.n_categories, cfg.n_price_buckets, cfg.title_buckets
        )
    except (KeyError, ValueError) as e:
        raise CheckpointError(f"{weights_path}: bad vocabulary item features ({e})") from e
    model = StreamRecModel(cfg)  # as large as the tensors just checked, no larger
    model.load_state_dict(state, strict=True)
    model.eval()

    extra = {
        k: v for k, v in meta.items() if k not in ("item_ids", "config", "featurizer", "ranker")
    }
    return TrainedModel(
        model=model,
        config=cfg,
        item_ids=item_ids,
        featurizer=featurizer,
        vocab_features=vocab_features,
        model_version=model_version,
        metadata=extra,
        ranker=ranker,
    )


def _check_tensors(
    state: Mapping[str, Tensor], expected: Mapping[str, Tensor], weights_path: Path, what: str
) -> None:
    """The tensors a config needs, no more and no fewer, of its shapes and dtypes, finite."""
    if set(state) != set(expected):
        raise CheckpointError(
            f"{weights_path}: {what} names do not match the config "
            f"(missing {sorted(set(expected) - set(state))[:5]}, "
            f"unexpected {sorted(set(state) - set(expected))[:5]})"
        )
    for name, want in expected.items():
        got = state[name]
        if got.shape != want.shape or got.dtype != want.dtype:
            raise CheckpointError(
                f"{weights_path}: {what} {name!r} is {got.dtype}{list(got.shape)}, "
                f"the config needs {want.dtype}{list(want.shape)}"
            )
        if got.is_floating_point() and not bool(torch.isfinite(got).all()):
            raise CheckpointError(f"{weights_path}: {what} {name!r} has NaN/inf values")


def _load_ranker(
    config: Any, state: dict[str, Tensor], meta_path: Path, weights_path: Path
) -> Ranker | None:
    """The checkpoint's ranker, checked like the model: shapes from the config on the meta
    device first, finite values, and the feature names this code computes."""
    from streamrec.recommend.candidates import FEATURES  # the serving side's feature list

    if config is None and not state:
        return None
    if not isinstance(config, dict) or not state:
        raise CheckpointError(f"{meta_path}: ranker config and ranker tensors must come together")
    try:
        cfg = RankerConfig.from_dict(config)
        if not 0 < cfg.hidden <= 4096 or cfg.n_features != len(cfg.features):
            raise ValueError(f"hidden={cfg.hidden}, {cfg.n_features} features {cfg.features}")
        with torch.device("meta"):
            expected = Ranker(cfg).state_dict()
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{meta_path}: bad ranker config ({e})") from e
    if cfg.features != FEATURES:
        raise CheckpointError(
            f"{meta_path}: the ranker was trained on features {list(cfg.features)}; this code "
            f"computes {list(FEATURES)}"
        )
    _check_tensors(state, expected, weights_path, "ranker tensor")
    ranker = Ranker(cfg)
    ranker.load_state_dict(state, strict=True)
    return ranker.eval()
