"""The local single-node Apache Kafka broker for development and tests.

A thin wrapper around ``deploy/kafka/broker.sh`` (which fetches the broker jars from Maven Central,
formats a fresh KRaft run directory and starts ``java ... kafka.Kafka`` in the background), plus a
pure-Python readiness probe. Used by ``streamrec kafka start|stop|status`` and by the pytest
session fixture ``kafka_bootstrap`` (tests/conftest.py). Also runnable as
``python -m streamrec.kafka.broker {start,stop,status}``.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from streamrec.wait import wait_until

__all__ = [
    "BrokerError",
    "broker_script",
    "free_port",
    "main",
    "repo_root",
    "start",
    "status",
    "stop",
    "wait_ready",
]

DEFAULT_WAIT_S = 90.0


class BrokerError(RuntimeError):
    """The broker script failed or the broker did not become ready."""


def repo_root() -> Path:
    """The repository root (the directory holding ``deploy/`` and ``streamrec/``)."""
    return Path(__file__).resolve().parents[2]


def broker_script() -> Path:
    """Path of ``deploy/kafka/broker.sh``."""
    return repo_root() / "deploy" / "kafka" / "broker.sh"


def _script_env(
    port: int | None = None,
    controller_port: int | None = None,
    run_dir: Path | None = None,
    wait_s: float | None = None,
) -> dict[str, str]:
    env = dict(os.environ)
    if port is not None:
        env["STREAMREC_BROKER_PORT"] = str(port)
    if controller_port is not None:
        env["STREAMREC_BROKER_CONTROLLER_PORT"] = str(controller_port)
    if run_dir is not None:
        env["STREAMREC_BROKER_DIR"] = str(Path(run_dir).resolve())
    if wait_s is not None:
        env["STREAMREC_BROKER_WAIT_S"] = f"{float(wait_s):g}"
    return env


def _run_script(command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    if not broker_script().is_file():
        raise BrokerError(
            f"the local development broker needs a source checkout of streamrec: "
            f"{broker_script()} is not there (an installed package runs against your own Kafka: "
            "set kafka.bootstrap_servers)"
        )
    return subprocess.run(
        ["bash", str(broker_script()), command],
        env=env,
        cwd=repo_root(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )


def _failure(command: str, proc: subprocess.CompletedProcess[str]) -> BrokerError:
    return BrokerError(
        f"{broker_script()} {command} failed with exit code {proc.returncode}:\n"
        f"{proc.stderr.rstrip()}\n{proc.stdout.rstrip()}".rstrip()
    )


def start(
    port: int | None = None,
    controller_port: int | None = None,
    run_dir: Path | None = None,
    wait_s: float = DEFAULT_WAIT_S,
) -> str:
    """Start a fresh broker and wait until it answers metadata requests.

    ``None`` arguments fall back to the script's environment/defaults: ports
    ``STREAMREC_BROKER_PORT``/``STREAMREC_BROKER_CONTROLLER_PORT`` (19092/19093) and run directory
    ``STREAMREC_BROKER_DIR`` (``<repo>/var/kafka``). The run directory is wiped first. The first
    call may download the broker jars with Maven.

    Returns the bootstrap address ``127.0.0.1:PORT``. Raises :class:`BrokerError` (with the
    script's output, including the tail of the broker log) when the broker does not come up.
    """
    proc = _run_script("start", _script_env(port, controller_port, run_dir, wait_s))
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise _failure("start", proc)
    return lines[-1].strip()


def stop(run_dir: Path | None = None) -> None:
    """Stop the broker of ``run_dir`` (SIGTERM, then SIGKILL after 30 s). No-op when stopped."""
    proc = _run_script("stop", _script_env(run_dir=run_dir))
    if proc.returncode != 0:
        raise _failure("stop", proc)


def status(run_dir: Path | None = None) -> tuple[bool, str]:
    """``(True, "running <pid> 127.0.0.1:PORT")`` or ``(False, "stopped")``."""
    proc = _run_script("status", _script_env(run_dir=run_dir))
    if proc.returncode not in (0, 3):
        raise _failure("status", proc)
    return proc.returncode == 0, proc.stdout.strip()


class BrokerExited(BrokerError):
    """The broker process being waited for exited."""


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie still answers kill(0)
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return True


def wait_ready(
    bootstrap: str, timeout_s: float, pid: int | None = None, cluster_id: str | None = None
) -> None:
    """Block until the broker at ``bootstrap`` answers a Kafka metadata request listing a broker
    (and, given ``cluster_id``, is that cluster: not another broker on the same port). The one
    readiness probe: ``broker.sh`` runs it too (``python -m streamrec.kafka.broker probe``).

    Raises :class:`BrokerExited` when process ``pid`` exits meanwhile, :class:`BrokerError`
    after ``timeout_s`` seconds."""
    from kafka import KafkaAdminClient  # local import: kafka-python is only needed here

    deadline = time.monotonic() + timeout_s
    last = ["no attempt"]

    def answers() -> bool | None:
        attempt_ms = int(min(5.0, max(1.0, deadline - time.monotonic())) * 1000)
        try:
            admin = KafkaAdminClient(
                bootstrap_servers=bootstrap,
                client_id="streamrec-broker-probe",
                request_timeout_ms=attempt_ms,
                bootstrap_timeout_ms=attempt_ms,
            )
            try:
                meta = admin.describe_cluster()
                admin.list_topics()
            finally:
                admin.close()
        except Exception as exc:  # not reachable / not ready yet: retry until the deadline
            last[0] = f"{type(exc).__name__}: {exc}"
            return None
        if not meta["brokers"]:
            last[0] = "metadata lists no broker yet"
        elif cluster_id and meta.get("cluster_id") != cluster_id:
            last[0] = (
                f"cluster id {meta.get('cluster_id')!r}, expected {cluster_id!r} "
                "(another broker on this port?)"
            )
        else:
            return True
        return None

    def exited() -> None:
        if pid is not None and not _process_alive(pid):
            raise BrokerExited(f"the broker process {pid} exited")

    wait_until(
        answers,
        timeout_s=timeout_s,
        what=f"Kafka at {bootstrap}",
        poll_s=0.5,
        abort=exited,
        on_timeout=lambda: BrokerError(
            f"Kafka at {bootstrap} not ready after {timeout_s:g}s (last: {last[0]})"
        ),
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m streamrec.kafka.broker {start,stop,status}``; returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="streamrec kafka", description="The local single-node Kafka broker."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_start = sub.add_parser("start", help="start a fresh broker; prints the bootstrap address")
    p_start.add_argument("--port", type=int, default=None, help="broker port (default 19092)")
    p_start.add_argument(
        "--controller-port", type=int, default=None, help="controller port (default 19093)"
    )
    p_start.add_argument("--wait-s", type=float, default=DEFAULT_WAIT_S, help="readiness timeout")
    for name, help_text in (("stop", "stop the broker"), ("status", "running or stopped")):
        sub.add_parser(name, help=help_text)
    p_probe = sub.add_parser("probe", help="wait until BOOTSTRAP answers (used by broker.sh)")
    p_probe.add_argument("bootstrap")
    p_probe.add_argument("--timeout-s", type=float, default=DEFAULT_WAIT_S)
    p_probe.add_argument("--pid", type=int, default=None, help="give up if this process exits")
    p_probe.add_argument("--cluster-id", default=None, help="expect this cluster")
    for name, p in sub.choices.items():
        if name != "probe":
            p.add_argument("--run-dir", type=Path, default=None, help="default <repo>/var/kafka")
    args = parser.parse_args(argv)
    try:
        if args.command == "start":
            running, line = status(args.run_dir)
            if running:
                # Not an error: say where it is (the address last, as after a start).
                print(f"already {line}; 'streamrec kafka stop' stops it", file=sys.stderr)
                print(line.split()[-1])
            else:
                print(start(args.port, args.controller_port, args.run_dir, args.wait_s))
        elif args.command == "probe":
            logging.getLogger("kafka").setLevel(logging.CRITICAL)  # refusals while it starts
            try:
                wait_ready(args.bootstrap, args.timeout_s, args.pid, args.cluster_id or None)
            except BrokerExited as exc:
                print(exc, file=sys.stderr)
                return 2
        elif args.command == "stop":
            stop(args.run_dir)
            print("stopped")
        else:
            running, line = status(args.run_dir)
            print(line)
            return 0 if running else 3
    except BrokerError as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
