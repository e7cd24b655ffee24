"""CI smoke run of the quality benchmark: a tiny SASRec-format dataset, a few epochs, both
presets, then `streamrec evaluate` on the saved checkpoint reproduces the benchmark's numbers."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from encoders.checkpoint import load_checkpoint
from streamrec.cli import main as cli_main
from streamrec.datasets import load_dataset
from streamrec.quality import format_table, run_quality

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def chain_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Users walk item chains (i -> i+1 mostly): the next item is predictable from the last."""
    rng = random.Random(0)
    lines = []
    for u in range(1, 151):
        i = rng.randrange(1, 61)
        for _ in range(rng.randint(8, 25)):
            lines.append(f"{u} {i}")
            i = i % 60 + 1 if rng.random() < 0.85 else rng.randrange(1, 61)
    path = tmp_path_factory.mktemp("data") / "chains.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_quality_smoke(
    chain_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ds = load_dataset(str(chain_file), "sasrec", min_events=3)
    rows = run_quality(ds, ["sasrec", "streamrec"], tmp_path, minutes=5, epochs=3, progress=False)
    by = {r.name: r for r in rows}
    simple = ["popularity", "recent items", "co-visitation", "recent+covisit+popular"]
    ceil = " candidates, next item first (ceiling)"
    models = ["sasrec", "sasrec + ranker", "sasrec" + ceil]
    models += ["streamrec", "streamrec + ranker", "streamrec" + ceil]
    assert list(by) == simple + models
    for name in ("sasrec", "streamrec"):
        r = by[name]
        assert 1 <= r.best_epoch <= r.epochs <= 3
        assert r.serving_diff is not None and r.serving_diff < 1e-4
    # chains are learnable: the sequence models beat popularity by a wide margin
    assert by["streamrec"].metrics["hr@10"] > by["popularity"].metrics["hr@10"] + 0.1
    saved = json.loads((tmp_path / "results.json").read_text())
    assert [r["name"] for r in saved] == simple + models
    table = format_table(ds, rows)
    assert "| streamrec |" in table and "| sasrec |" in table and "| recent items |" in table
    # the ranker sees the model's score: on chains it keeps most of the model's hits
    ranked = by["streamrec + ranker"].metrics
    assert ranked["hr@10"] > 0.5 * by["streamrec"].metrics["hr@10"]
    assert ranked["hr@10"] > by["popularity"].metrics["hr@10"] + 0.1
    # no order of the candidates beats putting the next item first whenever it is one
    ceiling = by["streamrec" + ceil].metrics
    assert ceiling["hr@10"] == ceiling["ndcg@10"] == ceiling["hr@50"]
    assert ranked["hr@10"] <= ceiling["hr@10"] and ranked["ndcg@10"] <= ceiling["ndcg@10"]
    # beyond accuracy, for every row that has lists: the served one in the model's item space
    beyond = by["streamrec + ranker"].beyond
    assert 0 < beyond["ild"] <= 2 and 0 < beyond["coverage"] <= 1 and beyond["novelty"] > 0
    assert "ild" not in by["recent items"].beyond  # no model before training: no item space
    assert by["co-visitation"].beyond["coverage"] > 0
    assert "ild@10" in table and "novelty@10" in table

    # the worker-loadable checkpoint carries its test numbers, and `streamrec evaluate` on it
    # reproduces them
    meta = load_checkpoint(tmp_path / "streamrec").metadata["training"]
    assert meta["test"] == pytest.approx(by["streamrec"].metrics)
    assert meta["test_ranked"] == pytest.approx(ranked)
    assert load_checkpoint(tmp_path / "streamrec").ranker is not None
    rc = cli_main(
        [
            "evaluate",
            str(chain_file),
            "--format",
            "sasrec",
            "--checkpoint",
            str(tmp_path / "streamrec"),
        ]
    )
    assert rc == 0
    out = capsys.readouterr().out
    ndcg = f"{by['streamrec'].metrics['ndcg@10']:.4f}"
    assert ndcg in out and "history removed" in out
    assert f"| streamrec + ranker | {ranked['hr@10']:.4f} | {ranked['ndcg@10']:.4f} |" in out
    # with a checkpoint, the simple lists' diversity is measured in its item space too
    lines = out.splitlines()
    head = next(line for line in lines if line.startswith("| model |"))
    row = next(line for line in lines if line.startswith("| co-visitation |"))
    cells = dict(zip(head.split("|"), row.split("|"), strict=True))
    assert float(cells[" ild@10 "]) > 0, row


def test_bench_quality_command(chain_file: Path, tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "quality.py"),
            str(chain_file),
            "--format",
            "sasrec",
            "--presets",
            "streamrec",
            "--epochs",
            "1",
            "--seeds",
            "0,1",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    assert "| popularity |" in proc.stdout and "| streamrec |" in proc.stdout
    assert "median (min–max) over 2 seeds" in proc.stdout
    for seed in (0, 1):
        assert (tmp_path / f"seed{seed}" / "streamrec" / "model.safetensors").exists()


def test_overrides_and_saved_reports(tmp_path: Path) -> None:
    from encoders.presets import PRESETS
    from streamrec.quality import Row, load_rows, with_overrides

    p = with_overrides(PRESETS["sasrec"], ["dropout=0.3", "batch_size=32", "last_chunk_only=no"])
    assert p.encoder.dropout == 0.3 and p.train.batch_size == 32 and not p.train.last_chunk_only
    assert PRESETS["sasrec"].encoder.dropout == 0.2  # presets themselves are untouched
    with pytest.raises(ValueError, match="FIELD=VALUE"):
        with_overrides(PRESETS["sasrec"], ["no_such_field=1"])

    pop = {"hr@10": 0.1, "ndcg@10": 0.05, "hr@50": 0.3, "ndcg@50": 0.09}
    runs = []
    for n, name in enumerate(("sasrec", "streamrec")):
        rows = [
            Row("popularity", pop),
            Row(name, {k: v * (2 + n) for k, v in pop.items()}, epochs=3),
        ]
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps([r.__dict__ for r in rows]))
        runs.append(path)
    merged = load_rows(runs)
    assert [r.name for r in merged] == ["popularity", "sasrec", "streamrec"]
    from streamrec.datasets import Dataset

    table = format_table(Dataset("x", {"u": [("a", 0, 0.0)]}), merged)
    assert "| streamrec | 0.3000 | 0.1500 |" in table and "1.50×" in table


def test_same_seed_same_model(chain_file: Path, tmp_path: Path) -> None:
    # one thread: with two, parallel float sums (embedding gradients) vary in the last bits
    ds = load_dataset(str(chain_file), "sasrec", min_events=3)
    kw: dict = dict(minutes=5, epochs=2, progress=False, overrides=["num_threads=1"])
    a = run_quality(ds, ["streamrec"], tmp_path / "a", **kw)
    b = run_quality(ds, ["streamrec"], tmp_path / "b", **kw)
    assert a[1].metrics == b[1].metrics
    ma = load_checkpoint(tmp_path / "a" / "streamrec").model_version
    assert ma == load_checkpoint(tmp_path / "b" / "streamrec").model_version  # weight digest
