"""The package as an operator installs it: a wheel, in a fresh virtual environment outside the
source tree. Its defaults must travel inside it (config/default.toml), and a worker started from
it must serve."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import time
import zipfile
from pathlib import Path

import orjson
import pytest

from tests.integration.worker_proc import (
    REPO,
    WorkerProcess,
    make_settings,
    read_topic,
    send_events,
)

pytestmark = pytest.mark.broker

SOURCES = ("pyproject.toml", "README.md", "streamrec", "streams", "encoders", "config")


def run(cmd: list[str | Path], cwd: Path, env: dict[str, str] | None = None) -> str:
    out = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, f"{cmd} exited {out.returncode}:\n{out.stdout}\n{out.stderr}"
    return out.stdout


def build_wheel(tmp: Path) -> Path:
    """Build from a copy of the sources, so nothing is written into the checkout."""
    src = tmp / "src"
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            src.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, src / name)
    dist = tmp / "dist"
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            dist,
            src,
        ],
        cwd=tmp,
    )
    (wheel,) = dist.glob("streamrec-*.whl")
    return wheel


def test_the_wheel_installed_outside_the_source_tree_runs_a_worker_that_serves(
    kafka_bootstrap: str, unique_name, tmp_path: Path
) -> None:
    wheel = build_wheel(tmp_path)
    assert "config/default.toml" in zipfile.ZipFile(wheel).namelist()

    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", venv], cwd=tmp_path)
    bin_ = venv / "bin"
    # The dependencies come from this environment (not a second multi-GB install), as one plain
    # path line: the .pth files there (this checkout's editable hook among them) are not run.
    site = Path(
        run(
            [bin_ / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            cwd=tmp_path,
        ).strip()
    )
    (site / "streamrec-test-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run(
        [bin_ / "python", "-m", "pip", "install", "-q", "--no-deps", "--no-index", wheel],
        cwd=tmp_path,
    )

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    where = run(
        [
            bin_ / "python",
            "-c",
            "import config, streamrec, streams, encoders; "
            "print(*(m.__file__ for m in (config, streamrec, streams, encoders)))",
        ],
        cwd=elsewhere,
        env=env,
    )
    for path in where.split():
        assert path.startswith(str(site)), f"imported from outside the wheel: {path}"
    assert "usage" in run([bin_ / "streamrec", "--help"], cwd=elsewhere, env=env)

    s = make_settings(kafka_bootstrap, unique_name("whl"), tmp_path)
    # bound beyond localhost, as in deploy/k8s: user data only with the token
    s = s.replace(app={"web_host": "0.0.0.0", "web_token": "s3cret"})
    w = WorkerProcess(s, tmp_path / "worker.log", python=bin_ / "python", cwd=elsewhere).start()
    try:
        w.wait_healthy()
        assert w.get("/live/") == (200, {"alive": True, "fault": None})
        event = {
            "event_id": "w1",
            "user_id": "wheel-user",
            "item_id": "i1",
            "type": "click",
            "ts": time.time(),
        }
        send_events(s, [event])
        lists = read_topic(s, s.topics.recommendations, until=lambda rs: len(rs) >= 1)
        assert [orjson.loads(r.value)["event_id"] for r in lists] == ["w1"]
        assert w.get("/users/wheel-user/")[0] == 401
        status, body = w.get("/users/wheel-user/", headers={"Authorization": "Bearer s3cret"})
        assert status == 200 and body["found"] is True
    finally:
        code = w.stop()
    assert code == 0, w.log_tail()
