"""Shared test helpers: random (perturbed) models and random events."""

from __future__ import annotations

import random

import torch

from encoders.model import EncoderConfig, StreamRecModel


def random_model(cfg: EncoderConfig, seed: int = 0) -> StreamRecModel:
    """A model with every parameter perturbed, so zero-initialised parts (relative-position
    biases, biases, the unknown-id row aside) take part and indexing bugs show up."""
    torch.manual_seed(seed)
    model = StreamRecModel(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.add_(torch.randn_like(p) * 0.3)
            if name == "item_tower.id_emb.weight":
                p[0].zero_()
    return model.eval()


Event = tuple[int, int, float]  # (row, type, gap)


def random_event(rng: random.Random, n_rows: int, first: bool) -> Event:
    gap = -1.0 if first else rng.choice([0.0, 1.5, 30.0, 3600.0, 86400.0 * 3, 1e8])
    return rng.randrange(n_rows), rng.randrange(3), gap
