"""The worker on the real broker: lists out, dead letters, and state that survives restarts."""

from __future__ import annotations

import time
import urllib.request
from collections import Counter

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from streamrec.features.user_state import UserState
from streamrec.wait import wait_until
from streams.topics import create_topics
from tests.integration.worker_proc import (
    WorkerProcess,
    console_consume,
    latest_by_key,
    make_settings,
    read_topic,
    send_events,
    send_items,
)

pytestmark = pytest.mark.broker


def _events(user, specs, t0, prefix):
    return [
        {
            "event_id": f"{prefix}-{n}",
            "user_id": user,
            "item_id": item,
            "type": etype,
            "ts": t0 + 30 * n,
        }
        for n, (etype, item) in enumerate(specs)
    ]


def _list_after(s, events, worker: WorkerProcess) -> dict:
    """Send one user's ``events``; the list published for the last of them."""
    send_events(s, events)
    last_id, user = events[-1]["event_id"], events[-1]["user_id"].encode()
    records = read_topic(
        s,
        s.topics.recommendations,
        until=lambda rs: any(orjson.loads(r.value)["event_id"] == last_id for r in rs),
        timeout_s=60,
    )
    lists = [orjson.loads(r.value) for r in records if r.key == user]
    assert lists and lists[-1]["event_id"] == last_id, worker.log_tail()
    return lists[-1]


def test_category_shopper_gets_a_list_of_that_category_without_purchases(
    kafka_bootstrap, unique_name, tmp_path, trained_world
):
    world = trained_world.world
    s = make_settings(
        kafka_bootstrap, unique_name("cat"), tmp_path, checkpoint=str(trained_world.checkpoint)
    )
    create_topics(s)
    send_items(s, world.items)
    category_of = {it["item_id"]: it["category"] for it in world.items}
    by_cat: dict[str, list[str]] = {}
    for it in world.items:
        if it["available"]:
            by_cat.setdefault(it["category"], []).append(it["item_id"])
    cat = max(by_cat, key=lambda c: len(by_cat[c]))
    chosen = by_cat[cat][:8]
    specs = [("browse", i) for i in chosen] + [("click", chosen[0]), ("click", chosen[1])]
    specs += [("purchase", chosen[0]), ("purchase", chosen[1])]
    events = _events("shopper-1", specs, time.time() - 600, unique_name("e"))
    purchased = {chosen[0], chosen[1]}

    worker = WorkerProcess(s, tmp_path / "worker.log").start()
    try:
        worker.wait_healthy()
        final = _list_after(s, events, worker)
        ids = [x["item_id"] for x in final["items"]]
        assert final["source"] == "model" and final["model_version"] != "popularity"
        assert len(ids) == s.recs.k
        assert not purchased & set(ids)
        share = Counter(category_of.get(i) for i in ids)[cat] / len(ids)
        assert share >= 0.6, (cat, [category_of.get(i) for i in ids], trained_world.report)
        _assert_reasons_as_an_independent_client_reads_them(s, final, events)
        unavailable = {it["item_id"] for it in world.items if not it["available"]}
        assert not unavailable & set(ids)
        # /metrics/: Prometheus text with types; live latency as a histogram that aggregates
        url = f"http://{s.app.web_host}:{s.app.web_port}/metrics/"
        with urllib.request.urlopen(url, timeout=5) as r:
            assert r.headers["Content-Type"].startswith("text/plain")
            families = {f.name: f for f in text_string_to_metric_families(r.read().decode())}
        assert families["streamrec_event_to_list_seconds"].type == "histogram"
        count = [
            x
            for x in families["streamrec_event_to_list_seconds"].samples
            if x.name.endswith("_count")
        ]
        # these events are minutes old: backlog, counted apart, not reported as list latency
        assert count and count[0].value == 0
        assert families["streamrec_lists_for_backlog_events"].samples[0].value >= 1
        assert families["streamrec_events_in"].type == "counter"
        lag = families["streamrec_consumer_lag_records"].samples
        assert {x.labels["topic"] for x in lag} == set(s.topics.event_topics().values())
        assert families["streamrec_processing_lag_seconds"].samples[0].value >= 0
    finally:
        worker.stop()


def _assert_reasons_as_an_independent_client_reads_them(s, final: dict, events: list) -> None:
    """The list on the topic, read by Kafka's own Java console consumer: schema 1 revision 1,
    valid under docs/schemas, and each item's reason rests on the user's own items."""
    from tests.core.test_schemas import REC

    records = console_consume(s, s.topics.recommendations, max_records=1000)
    mine = [orjson.loads(v) for k, v in records if k == final["user_id"] and v is not None]
    assert mine and mine[-1] == final
    REC.validate(final)
    assert final["schema"] == 1 and final["schema_minor"] == 1
    touched = {e["item_id"] for e in events}
    kinds = Counter()
    for entry in final["items"]:
        why = entry["why"]
        kinds[why["kind"]] += 1
        assert set(why["because"]) <= touched, (entry, touched)
        assert why["text"]
        if why["kind"] == "repeat":
            assert why["because"] == [entry["item_id"]]
            assert why["text"].startswith("You viewed it") or why["text"].startswith("You clicked")
    # the shopper browsed eight items of the category and bought two: the six left are repeats
    assert kinds["repeat"] >= 1, final["items"]


def test_malformed_events_are_dead_lettered_while_good_ones_are_processed(
    kafka_bootstrap, unique_name, tmp_path
):
    from kafka import KafkaProducer

    s = make_settings(kafka_bootstrap, unique_name("dlq"), tmp_path)
    create_topics(s)
    now = time.time()
    good = [
        {
            "event_id": f"g{n}",
            "user_id": f"u{n % 5}",
            "item_id": f"i{n % 7}",
            "type": "click",
            "ts": now - 100 + n,
        }
        for n in range(30)
    ]
    bad = [
        (s.topics.click, b"u1", b"{broken json"),
        (s.topics.click, b"u1", b'{"event_id": "b2", "user_id": "u1", "item_id": "i1"}'),
        (
            s.topics.browse,
            b"u2",
            b'{"event_id": "b3", "user_id": "u2", "item_id": "i1", "ts": "soon"}',
        ),
        (
            s.topics.purchase,
            b"u3",
            b'{"event_id": "b4", "user_id": "u3", "item_id": "i1", "ts": 1e13}',
        ),
        (s.topics.browse, b"u4", b"\xff\xfe\xfd"),
        (
            s.topics.click,
            b"other",
            b'{"event_id": "b6", "user_id": "u4", "item_id": "i1", "ts": 1.7e9}',
        ),
        (
            s.topics.click,
            None,
            b'{"event_id": "b7", "user_id": "u4", "item_id": "i1", "ts": 1.7e9}',
        ),
        (s.topics.click, b"u1", b"x" * (s.validation.max_event_bytes + 1)),
    ]
    worker = WorkerProcess(s, tmp_path / "worker.log").start()
    try:
        worker.wait_healthy()
        p = KafkaProducer(**s.kafka_client_config())
        for n, e in enumerate(good):
            body = {k: v for k, v in e.items() if k != "type"}
            p.send(s.topics.click, key=e["user_id"].encode(), value=orjson.dumps(body))
            if n % 4 == 0 and bad:
                topic, key, value = bad.pop()
                p.send(topic, key=key, value=value)
        bad_sent = 8
        p.flush()
        p.close()
        worker.wait_done(len(good) + bad_sent)
        # done means every event read is applied and listed or dead-lettered, so the counters
        # are final here without waiting on them
        done = worker.counters()
        assert done["events_accepted"] + done["events_rejected"] == len(good) + bad_sent
        assert done["lists_out"] >= 1
        dlq = read_topic(s, s.topics.dlq, until=lambda rs: len(rs) >= bad_sent, timeout_s=30)
        assert len(dlq) == bad_sent
        codes = Counter()
        for r in dlq:
            headers = {k: v.decode() for k, v in r.headers}
            assert headers["dlq.reason"] and headers["dlq.topic"].startswith(s.app.id)
            assert int(headers["dlq.offset"]) >= 0
            codes[headers["dlq.error"]] += 1
        assert codes == Counter(
            {
                "invalid_json": 1,
                "missing_field": 1,
                "wrong_type": 1,
                "bad_timestamp": 1,
                "invalid_utf8": 1,
                "key_mismatch": 1,
                "missing_key": 1,
                "too_large": 1,
            }
        )
        assert b"{broken json" in {r.value for r in dlq}  # original bytes, untouched
        c = worker.counters()
        assert c["events_accepted"] == len(good)
        assert c["events_rejected"] == bad_sent
        assert worker.proc is not None and worker.proc.poll() is None  # still running
    finally:
        worker.stop()


def test_restarted_worker_recovers_its_tables_and_counts_nothing_twice(
    kafka_bootstrap, unique_name, tmp_path
):
    s = make_settings(kafka_bootstrap, unique_name("rec"), tmp_path)
    create_topics(s)
    t0 = time.time() - 3000
    users = [f"r{u}" for u in range(6)]
    first = [
        {
            "event_id": f"a{u}-{n}",
            "user_id": user,
            "item_id": f"i{(u * 3 + n) % 11}",
            "type": ("browse", "click", "purchase")[n % 3],
            "ts": t0 + n,
        }
        for u, user in enumerate(users)
        for n in range(7)
    ]
    second = [
        {
            "event_id": f"b{u}-{n}",
            "user_id": user,
            "item_id": f"i{n}",
            "type": "click",
            "ts": t0 + 100 + n,
        }
        for u, user in enumerate(users)
        for n in range(3)
    ]
    expected = {user: Counter() for user in users}
    for e in first + second:
        expected[e["user_id"]][e["type"]] += 1

    def check(worker):
        for user in users:
            status, body = worker.get(f"/users/{user}/")
            assert status == 200, (user, body, worker.log_tail())
            got = {k: v for k, v in body["counts"].items() if v}
            assert got == dict(expected[user]), (user, got)
            assert body["events"] == sum(expected[user].values())

    a = WorkerProcess(s, tmp_path / "a.log").start()
    try:
        a.wait_healthy()
        send_events(s, first + first[:10])  # a redelivered burst inside the first run
        a.wait_counter("events_in", len(first) + 10)
        a.wait_counter("events_duplicate", 10)
    finally:
        assert a.stop() == 0
    # same local state, the whole first log redelivered, plus new events
    b = WorkerProcess(s, tmp_path / "b.log").start()
    try:
        b.wait_healthy()
        send_events(s, first + second)
        b.wait_counter("events_in", len(first) + len(second))
        check(b)
    finally:
        b.stop()
    # local RocksDB gone: the tables come back from the changelog topic
    fresh = s.replace(app={"datadir": str(tmp_path / "fresh")})
    c = WorkerProcess(fresh, tmp_path / "c.log").start()
    try:
        c.wait_healthy()
        check(c)
        # the in-memory popularity fallback is seeded from the recovered sequences
        items_seen = {e["item_id"] for e in first + second}
        deadline = time.monotonic() + 20
        while (
            c.get("/health/")[1]["popularity_items"] < len(items_seen)
            and time.monotonic() < deadline
        ):
            time.sleep(0.2)
        assert c.get("/health/")[1]["popularity_items"] == len(items_seen)
    finally:
        c.stop()
    changelog = read_topic(
        s,
        f"{s.app.id}-users-changelog",
        until=lambda rs: len(latest_by_key(rs)) >= len(users),
        timeout_s=30,
    )
    states = {k.decode(): UserState.from_bytes(v) for k, v in latest_by_key(changelog).items()}
    assert {u: sum(st.counts) for u, st in states.items()} == {
        u: sum(c.values()) for u, c in expected.items()
    }


def test_worker_on_a_bare_cluster_creates_its_topics_with_their_configs(
    kafka_bootstrap, unique_name, tmp_path
):
    from kafka import KafkaAdminClient
    from kafka.admin import ConfigResource

    s = make_settings(kafka_bootstrap, unique_name("bare"), tmp_path, partitions=3)
    worker = WorkerProcess(s, tmp_path / "worker.log").start()  # no `topics create` first
    try:
        worker.wait_healthy()
        admin = KafkaAdminClient(**s.kafka_client_config())
        try:
            described = admin.describe_configs(
                [
                    ConfigResource("TOPIC", s.topics.recommendations),
                    ConfigResource("TOPIC", s.topics.items),
                ]
            )
            partitions = {
                t: len(admin.describe_topics([t])[0]["partitions"])
                for t in s.topics.event_topics().values()
            }
        finally:
            admin.close()
        for topic in (s.topics.recommendations, s.topics.items):
            assert described["topic"][topic]["cleanup.policy"]["value"] == "compact"
        assert set(partitions.values()) == {3}
    finally:
        worker.stop()


def _gauges(worker: WorkerProcess, s) -> dict[str, float]:
    url = f"http://{s.app.web_host}:{s.app.web_port}/metrics/"
    with urllib.request.urlopen(url, timeout=5) as r:
        text = r.read().decode()
    return {
        x.name: x.value
        for f in text_string_to_metric_families(text)
        for x in f.samples
        if not x.labels
    }


def test_restarted_worker_loads_its_item_graph_instead_of_building_it(
    kafka_bootstrap, unique_name, tmp_path, trained_world
):
    world = trained_world.world
    s = make_settings(
        kafka_bootstrap, unique_name("graph"), tmp_path, checkpoint=str(trained_world.checkpoint)
    ).replace(retrieval={"method": "hnsw"})
    create_topics(s)
    send_items(s, world.items)
    available = sum(1 for it in world.items if it["available"])
    a = WorkerProcess(s, tmp_path / "a.log").start()
    try:
        a.wait_healthy()
        g = _gauges(a, s)
        assert g["streamrec_retrieval_graph_builds"] == 1, a.log_tail()
        assert g["streamrec_retrieval_graph_loaded"] == 0
        assert g["streamrec_retrieval_graph_items"] == available
        wait_until(
            lambda: _gauges(a, s)["streamrec_retrieval_graph_saves"] == 1,
            timeout_s=30,
            what="the item graph saved",
        )
    finally:
        assert a.stop() == 0
    assert (tmp_path / "worker" / "item-graph" / "graph.json").exists()
    b = WorkerProcess(s, tmp_path / "b.log").start()
    try:
        b.wait_healthy()
        g = _gauges(b, s)
        assert g["streamrec_retrieval_graph_loaded"] == 1, b.log_tail()
        assert g["streamrec_retrieval_graph_builds"] == 0
        assert g["streamrec_retrieval_graph_items"] == available
        assert g["streamrec_retrieval_stale_rows"] == 0
        # and it serves from it: a list from the model, for an event after the restart
        chosen = [it["item_id"] for it in world.items if it["available"]][:3]
        events = _events("g-user", [("browse", i) for i in chosen], time.time(), unique_name("e"))
        final = _list_after(s, events, b)
        assert final["source"] == "model" and len(final["items"]) == s.recs.k
        assert _gauges(b, s)["streamrec_retrieval_ann_queries"] >= 1
    finally:
        b.stop()
