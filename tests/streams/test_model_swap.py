"""A new checkpoint is read, checked and embedded off the event loop; only the swap runs on it."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

import streams.worker as worker_module
from streamrec.events.schema import Item
from streamrec.settings import load_settings
from streams.worker import Worker
from tests.integration.worker_proc import TINY_CATALOG, write_tiny_checkpoint


def test_a_new_checkpoint_is_loaded_and_embedded_off_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checkpoint = tmp_path / "model"
    settings = load_settings(env={}).replace(
        app={"store": "memory://", "datadir": str(tmp_path / "w"), "web_enabled": False},
        model={"checkpoint": str(checkpoint)},
    )
    worker = Worker(settings)
    assert worker.recommender.model is None
    worker.recommender.upsert_items([Item(**it) for it in TINY_CATALOG])
    write_tiny_checkpoint(checkpoint, "v-new")

    threads: dict[str, int] = {}

    def recorded(name: str, fn: Any) -> Any:
        def call(*args: Any) -> Any:
            threads[name] = threading.get_ident()
            return fn(*args)

        return call

    monkeypatch.setattr(worker_module, "load_model", recorded("load", worker_module.load_model))
    monkeypatch.setattr(worker_module, "embed", recorded("embed", worker_module.embed))

    loop_thread: dict[str, int] = {}

    async def poll() -> None:
        loop_thread["id"] = threading.get_ident()
        await worker._poll_model()

    asyncio.run(poll())
    assert worker.recommender.model_version == "v-new"
    assert set(threads) == {"load", "embed"}
    assert loop_thread["id"] not in threads.values()
    # the swapped-in catalog vectors are the new model's, as a synchronous swap makes them
    index = worker.recommender.catalog.index
    want = worker.recommender.catalog._vectors(
        list(index.ids), [worker.recommender.catalog.items[i].to_dict() for i in index.ids]
    )
    assert want is not None and bool((index.matrix - want).abs().max() < 1e-6)
