"""The trainer's core: the bounded window, the gate, and a cycle that publishes or refuses."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import pytest
import torch

from encoders.checkpoint import load_checkpoint
from streamrec.continual.cycle import run_cycle
from streamrec.continual.gate import decide
from streamrec.continual.window import TrainingWindow
from streamrec.events.schema import EVENT_TYPE_CODE
from streamrec.generate import GeneratorConfig, generate
from streamrec.settings import load_settings
from streamrec.training import items_by_id


def test_window_bounds_users_events_and_time() -> None:
    w = TrainingWindow(window_s=100.0, max_users=2, max_user_events=3)
    for n in range(5):
        assert w.add("a", f"e{n}", f"i{n}", 0, float(n))
    assert not w.add("a", "e4", "i4", 0, 4.0)  # duplicate id
    assert [i for i, _, _ in w.sequences()["a"]] == ["i2", "i3", "i4"]
    w.add("b", "b0", "x", 1, 5.0)
    w.add("c", "c0", "y", 1, 6.0)  # a third user: the least recently active (a) goes
    assert set(w.sequences()) == {"b", "c"} and w.evicted_users == 1
    w.add("b", "b1", "z", 2, 200.0)  # c's only event is now older than window_s
    assert not w.add("c", "c1", "y", 1, 50.0)  # and so is this one
    assert w.sequences() == {"b": [("z", 2, 200.0)]}


def test_a_forget_drops_what_was_produced_up_to_it_in_any_read_order() -> None:
    w = TrainingWindow(window_s=1e9, max_users=10, max_user_events=10)
    assert w.add("a", "e0", "i0", 0, 1.0, produced_at=100.0)
    assert w.forget("a", requested_at=150.0)
    assert "a" not in w.sequences()
    # an older event of theirs read after the request (another topic, read later) stays out
    assert not w.add("a", "e1", "i1", 0, 2.0, produced_at=120.0)
    assert not w.add("a", "e2", "i2", 0, 3.0)  # record time unknown: refused
    # what they do after the request is a new history, as on the workers
    assert w.add("a", "e3", "i3", 0, 4.0, produced_at=151.0)
    assert w.sequences() == {"a": [("i3", 0, 4.0)]}
    # the retention sweep's conditional request is not carried out for an active user
    assert not w.forget("a", requested_at=200.0, idle_before=4.0)
    assert w.forget("a", requested_at=200.0, idle_before=4.5)
    assert w.sequences() == {}


def test_the_trainer_reads_forget_requests_as_the_workers_do() -> None:
    import orjson

    from streamrec.continual.trainer import Trainer

    tr = Trainer(load_settings(env={}))
    event = orjson.dumps({"event_id": "e1", "user_id": "u1", "item_id": "i1", "ts": 1.7e9})
    tr.on_event("click", b"u1", event, produced_at=10.0)
    tr.on_forget(b"u1", orjson.dumps({"idle_before": "soon"}), requested_at=20.0)  # dead letter
    assert tr.window.users == 1
    tr.on_forget(b"u1", orjson.dumps({"requested_at": 20}), requested_at=20.0)
    assert tr.window.users == 0
    later = orjson.dumps({"event_id": "e2", "user_id": "u1", "item_id": "i2", "ts": 1.7e9 + 1})
    tr.on_event("click", b"u1", event, produced_at=15.0)  # an old record read late
    tr.on_event("click", b"u1", later, produced_at=30.0)
    assert tr.window.sequences() == {"u1": [("i2", EVENT_TYPE_CODE["click"], 1.7e9 + 1)]}


def test_window_split_holds_out_the_newest_events() -> None:
    w = TrainingWindow(1e9, 100, 100)
    for n in range(10):
        w.add("u", f"e{n}", f"i{n}", 0, float(n))
        w.add("v", f"f{n}", f"j{n}", 0, float(n) + 0.5)
    split = w.split(0.25)
    assert split.cut_ts == 7.5
    assert [i for i, _, _ in split.train["u"]] == [f"i{n}" for n in range(8)]
    # every event from the cut on is a case, its history everything before it
    assert [t for _, t in split.holdout] == [
        ("i8", 0, 8.0), ("i9", 0, 9.0), ("j7", 0, 7.5), ("j8", 0, 8.5), ("j9", 0, 9.5)
    ]  # fmt: skip
    history, target = split.holdout[-1]
    assert target == ("j9", 0, 9.5) and history[-1] == ("j8", 0, 8.5) and len(history) == 9
    assert max(ts for seq in split.train.values() for _, _, ts in seq) < split.cut_ts


def test_decide_rejects_worse_and_unjudged_candidates() -> None:
    serving = {"ndcg@10": 0.20, "cases": 50.0}
    assert decide({"ndcg@10": 0.197, "cases": 50.0}, serving, 0.02).accepted
    assert not decide({"ndcg@10": 0.19, "cases": 50.0}, serving, 0.02).accepted
    assert not decide({"ndcg@10": 0.5, "cases": 0.0}, serving, 0.02).accepted


def _window(events: list[dict], **kw: int) -> TrainingWindow:
    w = TrainingWindow(1e12, kw.get("users", 10_000), kw.get("per_user", 200))
    for e in events:
        w.add(e["user_id"], e["event_id"], e["item_id"], EVENT_TYPE_CODE[e["type"]], e["ts"])
    return w


@pytest.fixture(scope="module")
def world() -> tuple[list[dict], dict]:
    w = generate(GeneratorConfig(n_users=200, n_items=150, n_categories=6, days=10, seed=3))
    return w.events, items_by_id(w.items)


def test_a_cycle_trains_from_nothing_then_fine_tunes_with_lineage(
    tmp_path: Path, world: tuple[list[dict], dict]
) -> None:
    events, items = world
    settings = load_settings(env={}).replace(
        model={"checkpoint": str(tmp_path / "model"), "threads": 1},
        trainer={"first_epochs": 6, "epochs": 2, "threads": 1, "tolerance": 1.0},
    )
    half = len(events) // 2
    first = run_cycle(_window(events[:half]).split(0.1), items, settings, tmp_path / "stage1")
    assert first.published and first.parent_version == "none", first.reason
    served = load_checkpoint(tmp_path / "model")
    assert served.model_version == first.candidate_version

    second = run_cycle(_window(events).split(0.1), items, settings, tmp_path / "stage2")
    assert second.published, second.reason
    child = load_checkpoint(tmp_path / "model")
    lineage = child.metadata["training"]["lineage"]
    assert lineage["parent_version"] == served.model_version
    assert lineage["window"]["cut_ts"] == second.window["cut_ts"] > first.window["cut_ts"]
    assert set(lineage["gate"]) == {"candidate", "serving", "tolerance"}
    # the parent's vocabulary keeps its rows; items first seen since are appended
    assert child.item_ids[: len(served.item_ids)] == served.item_ids
    # and its ranker is kept, not refit on the window's counts (the workers rank from theirs)
    assert served.ranker is not None and child.ranker is not None
    parent_w, child_w = served.ranker.state_dict(), child.ranker.state_dict()
    assert parent_w.keys() == child_w.keys()
    assert all(torch.equal(parent_w[k], child_w[k]) for k in parent_w)
    assert child.metadata["training"]["ranker"]["kept_from"] == served.model_version


def test_a_candidate_trained_on_corrupted_labels_is_never_served(
    tmp_path: Path, world: tuple[list[dict], dict]
) -> None:
    events, items = world
    settings = load_settings(env={}).replace(
        model={"checkpoint": str(tmp_path / "model"), "threads": 1},
        trainer={"first_epochs": 6, "epochs": 3, "threads": 1, "tolerance": 0.02, "lr": 0.003},
    )
    good = run_cycle(_window(events).split(0.1), items, settings, tmp_path / "stage1")
    assert good.published, good.reason
    before = (tmp_path / "model" / "model.json").read_bytes()

    split = _window(events).split(0.1)
    rng = random.Random(0)
    catalog = sorted(items)
    # every training label replaced by a random item; the held-out events stay true
    noisy = {
        u: [(rng.choice(catalog), c, ts) for _, c, ts in seq] for u, seq in split.train.items()
    }
    bad = run_cycle(dataclasses.replace(split, train=noisy), items, settings, tmp_path / "stage2")
    assert bad.decision is not None and not bad.decision.accepted and not bad.published
    assert bad.decision.candidate["ndcg@10"] < bad.decision.serving["ndcg@10"]
    assert (tmp_path / "model" / "model.json").read_bytes() == before
