"""A real `streamrec worker` as a child process, configured by settings passed in its environment.

The online evaluation, the backfill command, the fault scenarios and the integration tests run
workers this way, so what they measure, rebuild or check is exactly what `streamrec worker` does
in production.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

import orjson

from streamrec.settings import Settings
from streamrec.wait import wait_until


def stop_process(proc: subprocess.Popen[Any], timeout_s: float = 60.0) -> int:
    """SIGTERM (a graceful stop: Faust commits what was processed), SIGKILL after ``timeout_s``;
    returns the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


class WorkerFailed(RuntimeError):
    """The worker exited, or did not get where it was awaited within its deadline."""


class WorkerProcess:
    """One ``python -m streamrec worker`` subprocess with its own log file.

    ``wait_s`` is the default deadline of the waits: a deadline, never a measurement."""

    def __init__(
        self,
        settings: Settings,
        log_path: Path,
        *,
        name: str = "worker",
        nice: int = 0,
        wait_s: float = 120.0,
        python: str | Path = sys.executable,
        cwd: Path | None = None,
        argv: Sequence[str] | None = None,
    ) -> None:
        self.settings = settings
        self.log_path = log_path
        self.name = name
        self.nice = nice
        self.wait_s = wait_s
        self.python = str(python)  # another environment's interpreter (an installed wheel)
        self.cwd = cwd
        # another program with the same settings and web port (bench/live.py's pass-through)
        self.argv = list(argv) if argv else [self.python, "-m", "streamrec", "worker"]
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self._log: IO[bytes] | None = None

    def start(self) -> WorkerProcess:
        env = {**os.environ, **self.settings.to_env()}
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        prefix = ["nice", "-n", str(self.nice)] if self.nice else []
        self.proc = subprocess.Popen(
            [*prefix, *self.argv],
            env=env,
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.started_at = time.monotonic()
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n: int = 40) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return f"--- {self.name} ({self.log_path}) ---\n" + "\n".join(lines[-n:])

    # -- its HTTP endpoints ---------------------------------------------------------------------

    def get_bytes(
        self, path: str, timeout_s: float = 5.0, headers: dict[str, str] | None = None
    ) -> tuple[int, bytes | None]:
        """(HTTP status, body); status 0 and None when nothing answers."""
        host = self.settings.app.web_host
        host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host  # bound to every address
        url = f"http://{host}:{self.settings.app.web_port}{path}"
        request = urllib.request.Request(url, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            return 0, None

    def get(
        self, path: str, timeout_s: float = 5.0, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        """(HTTP status, JSON body or None); status 0 when nothing answers."""
        status, body = self.get_bytes(path, timeout_s, headers)
        if body is None:
            return status, None
        try:
            return status, orjson.loads(body or b"null")
        except orjson.JSONDecodeError:
            return status, None

    def health(self) -> tuple[int, Any]:
        return self.get("/health/")

    def counters(self) -> dict[str, int]:
        # The body carries the counters while the worker is still starting (503) too.
        _, body = self.health()
        if isinstance(body, dict) and "metrics" in body:
            return dict(body["metrics"]["counters"])
        return {}

    # -- waiting on it --------------------------------------------------------------------------

    def check_alive(self) -> None:
        if not self.alive():
            code = self.proc.returncode if self.proc else None
            raise WorkerFailed(f"{self.name} exited with {code}:\n{self.log_tail()}")

    def wait_healthy(self, timeout_s: float | None = None) -> float:
        """Seconds from start() until /health/ answers 200 (catalog loaded, tables recovered)."""
        timeout_s = self.wait_s if timeout_s is None else timeout_s
        wait_until(
            lambda: self.health()[0] == 200,
            timeout_s=timeout_s,
            what=f"{self.name} healthy",
            abort=self.check_alive,
            on_timeout=lambda: WorkerFailed(
                f"{self.name} not healthy after {timeout_s:g} s:\n{self.log_tail()}"
            ),
        )
        return time.monotonic() - self.started_at

    def wait_counter(self, name: str, at_least: int, timeout_s: float | None = None) -> int:
        """Wait until the /metrics/ counter ``name`` reaches ``at_least``; returns its value."""

        def reached(body: dict[str, Any]) -> int | None:
            value = int(body["metrics"]["counters"].get(name, 0))
            return value if value >= at_least else None

        return self._wait_on_health(reached, f"{name} >= {at_least}", timeout_s)

    def wait_done(self, events: int, timeout_s: float | None = None) -> int:
        """Wait until the worker has read ``events`` events and finished every one it read
        (applied and listed, or dead-lettered): caught up, not just read up. Returns the count
        read."""

        def done(body: dict[str, Any]) -> int | None:
            read = int(body["metrics"]["counters"].get("events_in", 0))
            return read if read >= events and body.get("events_pending") == 0 else None

        return self._wait_on_health(done, f"{events} events read and done", timeout_s)

    def _wait_on_health(
        self, reached: Callable[[dict[str, Any]], int | None], what: str, timeout_s: float | None
    ) -> int:
        """Poll /health/ (its body carries the metrics while the worker is still starting, 503,
        too) until ``reached`` gives a value."""
        timeout_s = self.wait_s if timeout_s is None else timeout_s

        def probe() -> int | None:
            _, body = self.health()
            return reached(body) if isinstance(body, dict) and "metrics" in body else None

        return wait_until(
            probe,
            timeout_s=timeout_s,
            what=f"{self.name}: {what}",
            poll_s=0.1,
            abort=self.check_alive,
            on_timeout=lambda: WorkerFailed(
                f"{self.name}: not {what} after {timeout_s:g} s: {self.health()[1]}\n"
                f"{self.log_tail()}"
            ),
        )

    def wait_exit(self, timeout_s: float | None = None) -> int:
        """Wait for the process to end by itself; its exit code."""
        assert self.proc is not None
        timeout_s = self.wait_s if timeout_s is None else timeout_s
        try:
            code = self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            raise WorkerFailed(
                f"{self.name} still running after {timeout_s:g} s:\n{self.log_tail()}"
            ) from None
        self._close_log()
        return code

    # -- faults and stopping --------------------------------------------------------------------

    def send_signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def freeze(self) -> None:
        """SIGSTOP: the process stops dead (no heartbeats, no commits), as in a VM pause."""
        self.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self.send_signal(signal.SIGCONT)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self._close_log()

    def stop(self, timeout_s: float = 90.0) -> int | None:
        """Graceful stop (SIGTERM: Faust commits what was processed); killed after timeout_s."""
        code = stop_process(self.proc, timeout_s) if self.proc is not None else None
        self._close_log()
        return code

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None
