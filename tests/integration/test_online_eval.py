"""`streamrec evaluate --online` end to end on the real broker, on a small generated log: fit,
replay through the real workers (and, with --continual, a real trainer beside them), score. The figures are the command's; here only that every
system is judged on the same events and that the lists really come from the workers."""

from __future__ import annotations

import os
import subprocess
import sys

import orjson
import pytest

from streamrec.eventlog import write_events
from streamrec.generate import GeneratorConfig, generate
from tests.integration.worker_proc import REPO, make_settings

pytestmark = pytest.mark.broker


def test_online_evaluation_runs_the_live_pipeline(kafka_bootstrap, unique_name, tmp_path):
    world = generate(GeneratorConfig(n_users=60, n_items=80, days=2, seed=5))
    write_events(tmp_path / "events.jsonl", world.events)
    s = make_settings(kafka_bootstrap, unique_name("online"), tmp_path)
    # a gate that passes any candidate, so each cycle's publish and load are exercised
    s = s.replace(trainer={"epochs": 1, "nice": 0, "tolerance": 1.0})
    out = tmp_path / "online"
    cmd = [
        sys.executable, "-m", "streamrec", "evaluate", str(tmp_path / "events.jsonl"),
        "--format", "events", "--online", "--out", str(out),
        "--train-minutes", "0.01", "--rate", "1000", "--continual", "--trainer-slices", "3",
    ]  # fmt: skip
    run = subprocess.run(
        cmd,
        cwd=REPO,
        env={**os.environ, **s.to_env()},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "real-time lift" in run.stdout
    result = orjson.loads((out / "online.json").read_bytes())
    assert result["events"] == len(world.events)
    # Each app's changelog gave the order it processed every event in (the scoring needs it).
    apps = ("typed", "untyped", "popularity", "recent", "covisit", "heuristic", "continual")
    assert result["applied"] == dict.fromkeys(apps, len(world.events))
    metrics = result["metrics"]
    simple = {"popularity", "recent items", "co-visitation", "recent+covisit+popular"}
    assert set(metrics) == {"live", "live, continual", "frozen", "live, untyped", *simple}
    for kind in ("purchase", "click/view"):
        counts = {name: m[kind]["n"] for name, m in metrics.items()}
        assert len(set(counts.values())) == 1, counts  # the same events for every system
    assert metrics["live"]["click/view"]["n"] > 0
    # The generated shop has popular items: lists that came from the workers find some targets.
    assert metrics["popularity"]["click/view"]["hr@20"] > 0
    assert metrics["live"]["click/view"]["hr@20"] > 0
    assert metrics["recent items"]["click/view"]["hr@20"] > 0
    # one trainer cycle at each of the window's two inner slice boundaries, each reported, and
    # the continual app served what they published (the start-of-window model before)
    trainer = result["trainer"]
    cycles = trainer["cycles"]
    assert [c["slice"] for c in cycles] == [1, 2], trainer
    assert all(c["reason"] and c["cpu_s"] > 0 for c in cycles), cycles
    assert cycles[0]["after_ts"] < cycles[1]["after_ts"]
    assert all(c["published"] for c in cycles), cycles
    assert {c["candidate_version"] for c in cycles} <= set(trainer["versions_served"]), trainer
    assert sum(trainer["versions_served"].values()) == result["lists"]["continual"]
    assert "trainer:" in run.stdout
    assert (out / "typed" / "model.json").exists() and (out / "untyped" / "model.json").exists()
    # the served model carries its ranker; the untyped ablation is the encoder alone
    assert result["fits"]["typed"]["ranker"] and "ranker" not in result["fits"]["untyped"]
    assert result["fits"]["typed"]["epochs_run"] >= 1
