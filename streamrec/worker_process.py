"""A real `streamrec worker` as a child process, configured by settings passed in its environment.

The online evaluation and the backfill command run workers this way, so what they measure or
rebuild is exactly what `streamrec worker` does in production.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Any

import orjson

from streamrec.settings import Settings


class WorkerProcess:
    def __init__(self, settings: Settings, log_path: Path, nice: int = 0) -> None:
        self.settings = settings
        self.log_path = log_path
        self.nice = nice
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> WorkerProcess:
        env = {**os.environ, **self.settings.to_env()}
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        prefix = ["nice", "-n", str(self.nice)] if self.nice else []
        self.proc = subprocess.Popen(
            [*prefix, sys.executable, "-m", "streamrec", "worker"],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def health(self) -> tuple[int, Any]:
        url = f"http://{self.settings.app.web_host}:{self.settings.app.web_port}/health/"
        try:
            with urllib.request.urlopen(url, timeout=3) as r:
                return r.status, orjson.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, None
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            return 0, None

    def wait_healthy(self, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"worker exited:\n{self.log_tail()}")
            if self.health()[0] == 200:
                return
            time.sleep(0.3)
        raise TimeoutError(f"worker not healthy after {timeout_s} s:\n{self.log_tail()}")

    def stop(self, timeout_s: float = 60.0) -> int | None:
        """Graceful stop (SIGTERM: Faust commits what was processed); killed after timeout_s."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        return self.proc.returncode if self.proc is not None else None
