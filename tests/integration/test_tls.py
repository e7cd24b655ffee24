"""Client security settings, end to end over TLS.

The module starts its own broker through the project's script (``deploy/kafka/broker.sh`` with
``STREAMREC_BROKER_SSL_*``: a TLS listener next to the plaintext one) with certificates made here
by ``openssl``: a test CA, a broker certificate for 127.0.0.1 signed by it in a PKCS12 keystore,
and an unrelated CA. Then the settings' ``kafka.security_protocol=SSL`` and ``kafka.ssl_cafile``
carry every client the project has over TLS: kafka-python (topic creation, producer, consumer),
the Faust worker (aiokafka, via ``streamrec.kafka.security.faust_credentials``) and its catalog
follower (``aiokafka_config``). The worker is given only the TLS address, so an event → list round
trip proves that all of its Kafka traffic went over TLS. Clients that trust another CA, or speak
plaintext to the TLS port, are refused.
"""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import subprocess
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
from streamrec.kafka.security import aiokafka_config, faust_credentials, ssl_context
from streamrec.settings import Settings, load_settings
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

KEYSTORE_PASSWORD = "streamrec-test"


@dataclass(frozen=True)
class TlsBroker:
    plaintext: str  # host:port of the PLAINTEXT listener
    tls: str  # host:port of the SSL listener
    ca: Path  # the CA that signed the broker's certificate (PEM)
    other_ca: Path  # a CA that did not


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _make_ca(d: Path, name: str) -> None:
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-keyout", f"{name}.key", "-out", f"{name}.pem", "-subj", f"/CN=streamrec {name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=d,
    )  # fmt: skip


def make_certificates(d: Path) -> None:
    """ca.pem + other-ca.pem, and broker.p12: the broker's key and a certificate for 127.0.0.1
    (subjectAltName, which clients that verify the host name check) signed by ca.pem."""
    if shutil.which("openssl") is None:
        pytest.fail("openssl is needed to make the test certificates and is not on the PATH")
    _make_ca(d, "ca")
    _make_ca(d, "other-ca")
    (d / "broker.ext").write_text(
        "basicConstraints=CA:FALSE\n"
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid,issuer\n"
    )
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "broker.key", "-out", "broker.csr",
        "-subj", "/CN=127.0.0.1",
        cwd=d,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", "broker.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "2", "-extfile", "broker.ext", "-out", "broker.pem",
        cwd=d,
    )  # fmt: skip
    _openssl(
        "pkcs12", "-export", "-in", "broker.pem", "-inkey", "broker.key", "-certfile", "ca.pem",
        "-name", "broker", "-out", "broker.p12", "-passout", f"pass:{KEYSTORE_PASSWORD}",
        cwd=d,
    )  # fmt: skip


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsBroker]:
    """A broker of its own (the session's has no TLS listener), on free ports."""
    certs = tmp_path_factory.mktemp("certs")
    make_certificates(certs)
    run_dir = tmp_path_factory.mktemp("kafka-tls")
    env = {
        "STREAMREC_BROKER_SSL_PORT": "{0}",
        "STREAMREC_BROKER_SSL_KEYSTORE": str(certs / "broker.p12"),
        "STREAMREC_BROKER_SSL_KEYSTORE_PASSWORD": KEYSTORE_PASSWORD,
    }
    plaintext, (tls_port,) = own_broker(run_dir, env)
    try:
        tls = (run_dir / "bootstrap.ssl").read_text().strip()
        assert tls == f"127.0.0.1:{tls_port}"
        yield TlsBroker(plaintext, tls, certs / "ca.pem", certs / "other-ca.pem")
    finally:
        broker.stop(run_dir)


def _tls_settings(b: TlsBroker, name: str, tmp: Path, cafile: Path) -> Settings:
    s = make_settings(b.tls, name, tmp)
    return s.replace(kafka={"security_protocol": "SSL", "ssl_cafile": str(cafile)})


@pytest.mark.broker
def test_event_to_list_round_trip_over_tls(
    tls_broker: TlsBroker, unique_name: Any, tmp_path: Path
) -> None:
    s = _tls_settings(tls_broker, unique_name("tls"), tmp_path, tls_broker.ca)
    create_topics(s)  # kafka-python admin, over TLS
    send_items(s, TINY_CATALOG)  # kafka-python producer, over TLS
    worker = WorkerProcess(s, tmp_path / "worker.log").start()  # faust + aiokafka, over TLS
    try:
        worker.wait_healthy()
        assert worker.counters().get("items_in", 0) == len(TINY_CATALOG)  # catalog follower
        event = {
            "event_id": "tls-1",
            "user_id": "tls-user",
            "item_id": "i3",
            "type": "click",
            "ts": time.time() - 5,
        }
        send_events(s, [event])
        records = read_topic(  # kafka-python consumer, over TLS
            s,
            s.topics.recommendations,
            until=lambda rs: any(r.key == b"tls-user" for r in rs),
            timeout_s=60,
        )
        lists = [orjson.loads(r.value) for r in records if r.key == b"tls-user"]
        assert lists and lists[-1]["event_id"] == "tls-1", worker.log_tail()
        assert lists[-1]["items"], lists[-1]  # popularity knows i3 now
        # the output went through the broker the worker reached over TLS only
        assert worker.counters()["lists_out"] >= 1
    finally:
        rc = worker.stop()
    assert rc == 0, worker.log_tail()


@pytest.mark.broker
def test_clients_that_do_not_trust_the_broker_are_refused(
    tls_broker: TlsBroker, unique_name: Any, tmp_path: Path
) -> None:
    good = _tls_settings(tls_broker, unique_name("ok"), tmp_path, tls_broker.ca)
    create_topics(good)
    # the same calls with the right CA work (so the failures below come from trust alone)
    assert good.topics.dlq in admin_topics(good)
    asyncio.run(aio_produce(good))

    wrong = _tls_settings(tls_broker, good.app.id, tmp_path, tls_broker.other_ca)
    with pytest.raises(KafkaError):
        admin_topics(wrong)  # kafka-python
    with pytest.raises(KafkaConnectionError):
        asyncio.run(aio_produce(wrong))  # aiokafka, as the worker connects
    plain = good.replace(kafka={"security_protocol": "PLAINTEXT"})
    with pytest.raises(KafkaError):
        admin_topics(plain)  # plaintext spoken to the TLS port


def test_security_settings_reach_both_client_libraries() -> None:
    import faust

    sasl = load_settings(
        env={
            "STREAMREC_KAFKA_BOOTSTRAP_SERVERS": "b1:9094, b2:9094",
            "STREAMREC_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "STREAMREC_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "STREAMREC_KAFKA_SASL_USERNAME": "svc",
            "STREAMREC_KAFKA_SASL_PASSWORD": "pw",
        }
    ).kafka
    cfg = aiokafka_config(sasl)
    assert cfg["bootstrap_servers"] == ["b1:9094", "b2:9094"]
    assert cfg["security_protocol"] == "SASL_SSL"
    assert (cfg["sasl_mechanism"], cfg["sasl_plain_username"], cfg["sasl_plain_password"]) == (
        "SCRAM-SHA-512",
        "svc",
        "pw",
    )
    assert cfg["ssl_context"].verify_mode.name == "CERT_REQUIRED"
    assert cfg["ssl_context"].check_hostname
    creds = faust_credentials(sasl)
    assert isinstance(creds, faust.SASLCredentials)
    assert (creds.protocol.value, creds.mechanism.value) == ("SASL_SSL", "SCRAM-SHA-512")
    assert (creds.username, creds.password) == ("svc", "pw")
    assert creds.ssl_context is not None

    plain_sasl = dataclasses.replace(sasl, security_protocol="SASL_PLAINTEXT")
    assert ssl_context(plain_sasl) is None
    creds = faust_credentials(plain_sasl)
    assert isinstance(creds, faust.SASLCredentials)
    assert creds.protocol.value == "SASL_PLAINTEXT"

    tls = dataclasses.replace(sasl, security_protocol="SSL")
    creds = faust_credentials(tls)
    assert isinstance(creds, faust.SSLCredentials) and creds.protocol.value == "SSL"
    assert "sasl_mechanism" not in aiokafka_config(tls)

    plain = dataclasses.replace(sasl, security_protocol="PLAINTEXT")
    assert faust_credentials(plain) is None
    assert aiokafka_config(plain) == {
        "bootstrap_servers": ["b1:9094", "b2:9094"],
        "security_protocol": "PLAINTEXT",
    }
