"""`streamrec dashboard` as a child process (the demo and the browser test run it this way)."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Any

import orjson

from streamrec.settings import Settings
from streamrec.wait import wait_until
from streamrec.worker_process import stop_process


class DashboardProcess:
    def __init__(self, settings: Settings, log_path: Path) -> None:
        self.settings = settings
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        d = self.settings.dashboard
        host = "127.0.0.1" if d.host in ("0.0.0.0", "::", "") else d.host
        return f"http://{host}:{d.port}/"

    def start(self) -> DashboardProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamrec", "dashboard"],
            env={**os.environ, **self.settings.to_env()},
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        return self

    def health(self) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(self.url + "health", timeout=5) as r:
                body: dict[str, Any] = orjson.loads(r.read())
                return body
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError, ValueError):
            return None

    def wait_ready(self, workers_up: int = 1, timeout_s: float = 60.0) -> None:
        """Until it has read ``workers_up`` workers (found through the group or configured)."""

        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(
                    f"the dashboard exited ({self.proc.returncode}); see {self.log_path}"
                )
            h = self.health()
            return h is not None and h["workers_up"] >= workers_up

        wait_until(ready, timeout_s=timeout_s, what=f"the dashboard to read {workers_up} worker(s)")

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, 15.0)
        if self._log is not None:
            self._log.close()
            self._log = None
