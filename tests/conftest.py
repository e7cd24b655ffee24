"""Shared pytest fixtures.

Broker tests (marker ``broker``) use ``kafka_bootstrap``: the address of ONE real Kafka broker for
the whole session. With ``STREAMREC_TEST_BOOTSTRAP=host:port`` an existing broker is used;
otherwise a fresh one is started on free ports in a temporary run directory
(``deploy/kafka/broker.sh`` via :mod:`streamrec.kafka.broker`) and stopped at session end. Select
or skip them with ``-m broker`` / ``-m "not broker"``.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from uuid import uuid4

import pytest

from streamrec.kafka import broker

BROKER_RUN_DIR = pytest.StashKey[Path]()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that uses ``kafka_bootstrap`` carries the ``broker`` marker."""
    for item in items:
        names = getattr(item, "fixturenames", ())
        if ("kafka_bootstrap" in names or "kafka_run_dir" in names) and not item.get_closest_marker(
            "broker"
        ):
            item.add_marker(pytest.mark.broker)


def _report(config: pytest.Config, message: str) -> None:
    """Write a line to the terminal, past output capturing."""
    capture = config.pluginmanager.get_plugin("capturemanager")
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        if reporter is not None:
            reporter.write_line(message)
        else:
            print(message, file=sys.stderr)


@pytest.fixture(scope="session")
def kafka_bootstrap(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """Bootstrap address (``127.0.0.1:PORT``) of the session's Kafka broker."""
    existing = os.environ.get("STREAMREC_TEST_BOOTSTRAP", "").strip()
    if existing:
        broker.wait_ready(existing, timeout_s=30)
        _report(request.config, f"kafka: using the existing broker at {existing}")
        yield existing
        return

    run_dir = tmp_path_factory.mktemp("kafka")
    port = broker.free_port()
    controller_port = broker.free_port()
    while controller_port == port:
        controller_port = broker.free_port()
    log = run_dir / "logs" / "kafka.out"
    _report(request.config, f"kafka: starting a broker on 127.0.0.1:{port}, log {log}")
    try:
        bootstrap = broker.start(port=port, controller_port=controller_port, run_dir=run_dir)
    except BaseException:
        with contextlib.suppress(broker.BrokerError):
            broker.stop(run_dir)  # start() already stops a broker that never got ready
        raise
    request.config.stash[BROKER_RUN_DIR] = run_dir
    try:
        yield bootstrap
    finally:
        broker.stop(run_dir)  # the run dir (and its log) stays, like every pytest tmp dir


@pytest.fixture
def kafka_run_dir(kafka_bootstrap: str, request: pytest.FixtureRequest) -> Path:
    """Run directory of the session's broker (started here, not STREAMREC_TEST_BOOTSTRAP's)."""
    run_dir = request.config.stash.get(BROKER_RUN_DIR, None)
    if run_dir is None:
        pytest.skip("the broker was started elsewhere (STREAMREC_TEST_BOOTSTRAP): no run dir here")
    return run_dir


@pytest.fixture
def unique_name() -> Callable[..., str]:
    """Factory of unique topic / group / app names: ``unique_name()`` -> ``"t-1a2b3c4d"``."""

    def make(prefix: str = "t") -> str:
        return f"{prefix}-{uuid4().hex[:8]}"

    return make
