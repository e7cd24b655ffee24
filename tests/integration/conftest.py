from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from streamrec.eventlog import write_events, write_items
from streamrec.generate import GeneratorConfig, World, generate
from streamrec.train import train_from_files


@dataclass(frozen=True)
class TrainedWorld:
    world: World
    checkpoint: Path
    report: str


@pytest.fixture(scope="session")
def trained_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrainedWorld]:
    """A generated world and a model trained on it (once per session)."""
    tmp = tmp_path_factory.mktemp("trained")
    world = generate(GeneratorConfig(n_users=800, n_items=400, days=10, seed=11))
    write_items(tmp / "items.jsonl", world.items)
    write_events(tmp / "events.jsonl", world.events)
    report = train_from_files(
        tmp / "events.jsonl", tmp / "items.jsonl", tmp / "model", epochs=6, progress=False
    )
    yield TrainedWorld(world, tmp / "model", report)
