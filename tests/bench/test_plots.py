"""bench/plots.py draws each chart from the results its bench saves."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib.image

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import plots


def _png(path: Path) -> tuple[int, int]:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    h, w = matplotlib.image.imread(path).shape[:2]
    return h, w


def test_live_charts_from_saved_results(tmp_path: Path) -> None:
    rep = {
        "drain": {"pass-through": 2000.0, "streamrec": 700.0, "streamrec, merge off": 600.0},
        "latency": {"pass-through": [0.01, 0.02, 0.2], "streamrec": [0.02, 0.05, 0.5]},
    }
    results = {"args": {"items": 1000, "users": 10, "dim": 8, "rate": 100.0}, "repeats": [rep]}
    (tmp_path / "results.json").write_text(json.dumps(results))
    assert plots.main(["live", str(tmp_path / "results.json"), "--out", str(tmp_path)]) == 0
    for name in ("live-throughput.png", "live-latency.png"):
        h, w = _png(tmp_path / name)
        assert h > 100 and w > 100
    # the older file format, a bare list of repeats
    (tmp_path / "old.json").write_text(json.dumps([rep]))
    assert plots.load_live(tmp_path / "old.json")["repeats"] == [rep]


def test_quality_and_online_charts(tmp_path: Path) -> None:
    rows = [
        {"name": "recent items", "metrics": {"hr@10": 0.17, "ndcg@10": 0.088}},
        {"name": "streamrec", "metrics": {"hr@10": 0.2, "ndcg@10": 0.10}},
        {"name": "streamrec", "metrics": {"hr@10": 0.21, "ndcg@10": 0.11}},
    ]
    (tmp_path / "results.json").write_text(json.dumps(rows))
    plots.main(
        ["quality", str(tmp_path / "results.json"), "--out", str(tmp_path), "--dataset", "x"]
    )
    _png(tmp_path / "quality-x.png")
    kinds = {"click/view": {"n": 100, "hr@20": 0.2}, "purchase": {"n": 10, "hr@20": 0.5}}
    online = {"dataset": "taobao", "policy": "p", "metrics": {"live": kinds, "frozen": kinds}}
    (tmp_path / "online.json").write_text(json.dumps(online))
    plots.main(["online", str(tmp_path / "online.json"), "--out", str(tmp_path)])
    h, w = _png(tmp_path / "online-taobao.png")
    assert w > h  # one panel per target kind, side by side
