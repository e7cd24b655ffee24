"""Client security over SASL/SCRAM, end to end.

The module starts its own broker through the project's script (``deploy/kafka/broker.sh`` with
``STREAMREC_BROKER_SASL_*``: a SASL_PLAINTEXT listener with SCRAM-SHA-256 users formatted into
the KRaft storage). The worker is given only the SASL address, so an event → list round trip
proves that every client it has (Faust's consumer, producer and changelogs, the catalog
follower's aiokafka consumer) authenticated, beside kafka-python for topics, producing and
reading. A wrong password is refused by each library, and a worker holding one never serves.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka.errors import KafkaConnectionError
from kafka.errors import KafkaError

from streamrec.kafka import broker
from streamrec.settings import Settings
from streamrec.wait import wait_until
from streams.topics import create_topics
from tests.integration.worker_proc import (
    TINY_CATALOG,
    WorkerProcess,
    admin_topics,
    aio_produce,
    make_settings,
    own_broker,
    read_topic,
    send_events,
    send_items,
)

pytestmark = pytest.mark.broker

USER, PASSWORD = "streamrec-svc", "scram-secret-1"


@dataclass(frozen=True)
class SaslBroker:
    plaintext: str
    sasl: str


@pytest.fixture(scope="module")
def sasl_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SaslBroker]:
    run_dir = tmp_path_factory.mktemp("kafka-sasl")
    env = {"STREAMREC_BROKER_SASL_PORT": "{0}", "STREAMREC_BROKER_SASL_USERS": f"{USER}:{PASSWORD}"}
    plaintext, (sasl_port,) = own_broker(run_dir, env)
    try:
        sasl = (run_dir / "bootstrap.sasl").read_text().strip()
        assert sasl == f"127.0.0.1:{sasl_port}"
        yield SaslBroker(plaintext, sasl)
    finally:
        broker.stop(run_dir)


def _sasl_settings(b: SaslBroker, name: str, tmp: Path, password: str) -> Settings:
    s = make_settings(b.sasl, name, tmp)
    return s.replace(
        kafka={
            "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": "SCRAM-SHA-256",
            "sasl_username": USER,
            "sasl_password": password,
        }
    )


def test_event_to_list_round_trip_over_sasl_scram(
    sasl_broker: SaslBroker, unique_name: Any, tmp_path: Path
) -> None:
    s = _sasl_settings(sasl_broker, unique_name("sasl"), tmp_path, PASSWORD)
    create_topics(s)  # kafka-python admin
    send_items(s, TINY_CATALOG)  # kafka-python producer
    worker = WorkerProcess(s, tmp_path / "worker.log").start()  # faust + aiokafka
    try:
        worker.wait_healthy()
        assert worker.counters().get("items_in", 0) == len(TINY_CATALOG)  # catalog follower
        event = {"event_id": "sasl-1", "user_id": "sasl-user", "item_id": "i2", "type": "click",
                 "ts": time.time() - 5}  # fmt: skip
        send_events(s, [event])
        records = read_topic(  # kafka-python consumer
            s, s.topics.recommendations, until=lambda rs: any(r.key == b"sasl-user" for r in rs)
        )
        lists = [orjson.loads(r.value) for r in records if r.key == b"sasl-user"]
        assert lists and lists[-1]["event_id"] == "sasl-1", worker.log_tail()
    finally:
        rc = worker.stop()
    assert rc == 0, worker.log_tail()


def test_a_wrong_password_is_refused_by_every_client(
    sasl_broker: SaslBroker, unique_name: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    good = _sasl_settings(sasl_broker, unique_name("ok"), tmp_path, PASSWORD)
    create_topics(good)
    assert good.topics.dlq in admin_topics(good)  # the same calls authenticate with the right one
    asyncio.run(aio_produce(good))

    wrong = _sasl_settings(sasl_broker, good.app.id, tmp_path / "wrong", "not-the-password")
    with pytest.raises(KafkaError):
        admin_topics(wrong)  # kafka-python
    caplog.clear()
    with pytest.raises(KafkaConnectionError):
        asyncio.run(aio_produce(wrong))  # aiokafka, as the worker connects
    assert "SaslAuthenticationFailed" in caplog.text  # refused for its credentials
    worker = WorkerProcess(wrong, tmp_path / "wrong-worker.log").start()
    try:
        # the worker's clients say why, and it never reports healthy meanwhile
        def refused() -> bool:
            assert worker.health()[0] != 200, "a worker with a wrong password reported healthy"
            return "Authentication failed" in worker.log_path.read_text(errors="replace")

        wait_until(refused, timeout_s=120, what="the worker's authentication failure", poll_s=0.5)
    finally:
        worker.stop()
