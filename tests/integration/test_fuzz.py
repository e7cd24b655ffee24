"""Hostile input against a running worker: every message is accounted for exactly once.

Hypothesis strategies (derandomized, no example database: the same payloads on every run and every
machine) generate ``STREAMREC_FUZZ_PAYLOADS`` (default 10 000) event messages: valid events, each
field replaced by junk or removed, invalid UTF-8, non-JSON, JSON that is not an object, NaN/inf/
negative/millisecond/far-future timestamps, huge strings and contexts, deeply nested contexts,
unknown or mismatched event types, empty ids, missing or foreign keys, null values, events for
items the catalog does not know, and duplicates (plus 5 % exact re-sends of earlier messages, as a
producer retry or a replay would make). They are drawn first, then produced in
bulk to one real worker process on the real broker (with a small model loaded, so good events go
through the user tower too).

The oracle is ``streamrec.events.validate.validate_message`` (the worker's own judgement, run here) plus
per-user event-id de-duplication. The test checks that

* every bad message is in the dead-letter topic exactly once, found by its original topic,
  partition and offset, with its original key and bytes, a reason and the oracle's error code;
* every good message was processed: the worker's accepted and duplicate counters equal the
  oracle's, nothing else reached the DLQ, and every user with a good event got a list for one of
  their events;
* the worker is still alive and healthy afterwards; its resident memory before and after is
  printed (and must stay within a generous bound: the process keeps no per-message payload).
"""

from __future__ import annotations

import itertools
import json
import math
import os
import random
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from streamrec.events.validate import MIN_TS, Limits, Message, Rejection, validate_message
from streams.topics import create_topics
from tests.integration.worker_proc import (
    TINY_CATALOG,
    WorkerProcess,
    make_settings,
    read_topic,
    rss_bytes,
    send_items,
    write_tiny_checkpoint,
)

pytestmark = [pytest.mark.broker, pytest.mark.slow]

N_PAYLOADS = int(os.environ.get("STREAMREC_FUZZ_PAYLOADS", "10000"))
EVENT_TYPES = ("browse", "click", "purchase")
# Resident memory may grow by this much while the payloads go through: allocator arenas, RocksDB
# memtables and the encoder cache (16 MB in the test settings) fill up; a leak that keeps payloads
# (10 000 of them, up to 16 KB each when accepted) or per-message state would not fit in it.
RSS_GROWTH_LIMIT = 192 * 2**20


@dataclass(frozen=True)
class Payload:
    event_type: str
    key: bytes | None
    value: bytes | None


# -- strategies -------------------------------------------------------------------------------------
#
# Hypothesis chooses each payload's kind and draws every piece of junk; the plain parts of an event
# (ids, valid timestamps) come from a ``random.Random`` that hypothesis seeds per example: ten
# thousand payloads in seconds rather than minutes, still fully determined by the derandomized run,
# and ids spread over many users instead of hypothesis' favourite small values.

# Keys that are not the event's user: none, arbitrary bytes (often invalid UTF-8), other ids.
foreign_keys = st.one_of(
    st.none(),
    st.binary(max_size=12),
    st.text(max_size=12).map(lambda t: t.encode("utf-8", "surrogatepass")),
)
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),  # beyond 64 bits too
    st.floats(),  # NaN and inf: json.dumps writes them as non-JSON literals
    st.text(max_size=20),
)
junk = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=8,
)
ID_FIELDS = ("event_id", "user_id", "item_id")


def _nested(depth: int, leaf: Any) -> Any:
    for n in range(depth):
        leaf = {f"k{n}": leaf} if n % 2 else [leaf]
    return leaf


# Timestamps do not depend on the clock, so the payloads are the same on every run: valid ones lie
# between 2000 and PAST_END, far-future ones after FUTURE_START; the worker's clock (and the
# oracle's) is between the two, far from both. (The skew limit's edge is tested in
# tests/events/test_validate.py.)
PAST_END = 1.6e9  # 2020-09
FUTURE_START = 1e11  # year 5138
invalid_timestamps = st.one_of(
    st.sampled_from([math.nan, math.inf, -math.inf, -1.0, 0, 1e13, 2**70]),
    st.floats(-1e15, MIN_TS - 1),  # negative, or before 2000
    st.floats(MIN_TS * 1000, PAST_END * 1000),  # milliseconds
    st.floats(FUTURE_START, 1e300),  # far future
    junk,  # strings, lists, objects, null, booleans
)


def _encode(value: Any, ascii_only: bool) -> bytes:
    # stdlib json: writes NaN/Infinity literals and huge integers, and (ascii_only off) lone
    # surrogates raw, which "surrogatepass" turns into invalid UTF-8.
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


KINDS = (
    "good",
    "good",
    "good",
    "good",
    "good",
    "field_junk",
    "field_missing",
    "bad_ts",
    "deep_context",
    "huge_context",
    "huge_string",
    "type_field",
    "empty_id",
    "foreign_key",
    "surrogate",
    "raw_bytes",
    "non_object",
    "null_value",
)
CATALOG_IDS = [it["item_id"] for it in TINY_CATALOG]


def _plain_event(r: random.Random) -> dict[str, Any]:
    """A valid event (its ``user_id`` a string or, sometimes, a JSON integer)."""
    user: str | int = f"u{r.randrange(2500)}" if r.random() < 0.9 else r.randrange(300)
    roll = r.random()
    ev: dict[str, Any] = {
        # a few ids per user repeat: redeliveries of the same event
        "event_id": f"e{r.randrange(3)}" if roll < 0.05 else f"{r.getrandbits(64):016x}",
        "user_id": user,
        # catalog items (known to the model), unknown items, odd but valid ids
        "item_id": r.choice(
            [r.choice(CATALOG_IDS), f"x{r.randrange(10**4)}", "\u00e9t\u00e9 \U0001f600", "0"]
        ),
        "ts": r.uniform(MIN_TS + 1, PAST_END)
        if r.random() < 0.5
        else r.randint(int(MIN_TS) + 1, int(PAST_END)),
    }
    if r.random() < 0.3:
        ev["context"] = {"page": r.choice(["home", "search", "", "\u00fc"]), "pos": r.randrange(50)}
    return ev


def payloads() -> st.SearchStrategy[Payload]:
    drawn = itertools.count()

    @st.composite
    def one(draw: st.DrawFn) -> Payload:
        # Hypothesis often hands out the same seed (it likes small values); the running count of
        # payloads drawn makes every payload's Random distinct, and is as reproducible.
        r = random.Random(f"{draw(st.integers(0, 2**32))}:{next(drawn)}")
        etype = r.choice(EVENT_TYPES)
        ev = _plain_event(r)
        if r.random() < 0.2:
            ev["type"] = etype  # the optional field, matching its topic
        own_key: bytes | None = str(ev["user_id"]).encode()
        kind = draw(st.sampled_from(KINDS))
        if kind == "field_junk":
            ev[draw(st.sampled_from([*ID_FIELDS, "ts", "context"]))] = draw(junk)
        elif kind == "field_missing":
            del ev[draw(st.sampled_from([*ID_FIELDS, "ts"]))]
        elif kind == "bad_ts":
            ev["ts"] = draw(invalid_timestamps)
        elif kind == "deep_context":
            ev["context"] = {"c": _nested(draw(st.integers(1, 1500)), draw(json_scalars))}
        elif kind == "huge_context":
            # from a few fields to far over max_event_bytes
            filler = draw(st.sampled_from(["v", 1, [1, 2], {"a": None}]))
            ev["context"] = {f"f{i}": filler for i in range(draw(st.integers(1, 3000)))}
        elif kind == "huge_string":
            # an id over max_id_length, or a whole event over max_event_bytes
            field = draw(st.sampled_from([*ID_FIELDS, "title"]))
            ev[field] = draw(st.text(min_size=1, max_size=3)) * draw(st.integers(1, 12_000))
        elif kind == "type_field":
            # another type, an unknown one, or not a string at all
            ev["type"] = draw(st.one_of(st.sampled_from(EVENT_TYPES), st.text(max_size=10), junk))
        elif kind == "empty_id":
            ev[draw(st.sampled_from(ID_FIELDS))] = draw(
                st.sampled_from(["", " ", "\t\n", "\u3000"])
            )
        elif kind == "foreign_key":
            own_key = draw(foreign_keys)
        elif kind == "surrogate":
            ev[draw(st.sampled_from(ID_FIELDS))] = "a\ud800b"
        elif kind == "raw_bytes":
            return Payload(etype, own_key, draw(st.binary(max_size=300)))
        elif kind == "non_object":
            text = draw(st.one_of(junk.map(json.dumps), st.text(max_size=50)))
            return Payload(etype, own_key, text.encode("utf-8", "surrogatepass"))
        elif kind == "null_value":
            return Payload(etype, own_key, None)
        return Payload(etype, own_key, _encode(ev, ascii_only=r.random() < 0.5))

    return one()


def draw_payloads(n: int) -> list[Payload]:
    """``n`` payloads from the strategies: hypothesis runs a collecting test body, batches of up
    to 16 per example (its per-example data budget would not hold thousands)."""
    out: list[Payload] = []

    @settings(
        max_examples=n,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(st.lists(payloads(), min_size=1, max_size=16))
    def collect(batch: list[Payload]) -> None:
        out.extend(batch)

    collect()
    assert len(out) >= n, f"hypothesis generated only {len(out)} payloads"
    return out[:n]


# -- the oracle -------------------------------------------------------------------------------------


@dataclass
class Expected:
    codes: list[str | None]  # per payload: the rejection code, or None (good)
    accepted: int
    duplicates: int
    good_event_ids: dict[str, set[str]]  # user -> event ids of their good events
    max_events_per_user: int


def judge(items: list[Payload], limits: Limits, now: float) -> Expected:
    codes: list[str | None] = []
    seen: set[tuple[str, str]] = set()
    per_user: Counter[str] = Counter()
    good: dict[str, set[str]] = {}
    accepted = duplicates = 0
    for p in items:
        v = validate_message(Message(p.event_type, p.key, p.value), limits, now)
        if isinstance(v, Rejection):
            codes.append(v.code)
            continue
        codes.append(None)
        good.setdefault(v.user_id, set()).add(v.event_id)
        if (v.user_id, v.event_id) in seen:
            duplicates += 1
        else:
            seen.add((v.user_id, v.event_id))
            accepted += 1
            per_user[v.user_id] += 1
    return Expected(codes, accepted, duplicates, good, max(per_user.values(), default=0))


# -- the test ---------------------------------------------------------------------------------------


def test_hostile_payloads_are_all_accounted_for_and_the_worker_survives(
    kafka_bootstrap: str, unique_name: Any, tmp_path: Any
) -> None:
    name = unique_name("fuzz")
    s = make_settings(
        kafka_bootstrap,
        name,
        tmp_path,
        checkpoint=str(write_tiny_checkpoint(tmp_path / "m", "fz1")),
    )
    v = s.validation
    limits = Limits.from_settings(v)
    now = time.time()
    assert PAST_END < now < FUTURE_START - limits.max_future_skew_s

    items = draw_payloads(N_PAYLOADS)
    # Redeliveries: exact copies of some earlier messages, produced after all of them (same key,
    # so the same partition, behind the original).
    rng = random.Random(5)
    copies = rng.sample(items, k=len(items) // 20)
    items += copies
    expected = judge(items, limits, now)
    n_bad = sum(c is not None for c in expected.codes)
    n_good = len(items) - n_bad
    by_code = Counter(c for c in expected.codes if c is not None)
    # The generator must keep covering every kind of refusal, and enough of both sides.
    assert set(by_code) >= {
        "invalid_utf8",
        "invalid_json",
        "wrong_type",
        "missing_field",
        "empty_field",
        "too_large",
        "too_deep",
        "bad_timestamp",
        "type_mismatch",
        "key_mismatch",
        "missing_key",
        "missing_value",
    }, by_code
    assert n_good > len(items) // 5 and n_bad > len(items) // 5
    assert expected.duplicates > 0
    # With fewer kept events per user than features.sequence_max, no event leaves a user's
    # sequence, and de-duplication is exactly "same user, same event id" (the oracle above).
    assert expected.max_events_per_user < s.features.sequence_max

    create_topics(s)
    send_items(s, TINY_CATALOG)
    worker = WorkerProcess(s, tmp_path / "worker.log").start()
    try:
        worker.wait_healthy()
        assert worker.proc is not None
        rss_before = rss_bytes(worker.proc.pid)

        topics = s.topics.event_topics()
        producer = KafkaProducer(
            **s.kafka_client_config(),
            linger_ms=20,
            batch_size=256 * 1024,
            max_request_size=4 * 2**20,  # oversized payloads must reach the worker to be refused
        )
        futures = [producer.send(topics[p.event_type], key=p.key, value=p.value) for p in items]
        producer.flush()
        metas = [f.get(timeout=60) for f in futures]
        producer.close()
        where = {(m.topic, m.partition, m.offset): i for i, m in enumerate(metas)}

        worker.wait_counter("events_in", len(items), timeout_s=300)
        worker.wait_counter("events_rejected", n_bad, timeout_s=60)

        # The DLQ: exactly the bad messages, each once, with the oracle's code and its bytes.
        dlq = read_topic(s, s.topics.dlq, until=lambda rs: len(rs) >= n_bad, timeout_s=120)
        consumer = KafkaConsumer(**s.kafka_client_config())
        try:
            parts = [
                TopicPartition(s.topics.dlq, p) for p in consumer.partitions_for_topic(s.topics.dlq)
            ]
            dlq_total = sum(consumer.end_offsets(parts).values())
        finally:
            consumer.close()
        assert dlq_total == len(dlq) == n_bad, (dlq_total, len(dlq), n_bad)
        seen_bad: set[int] = set()
        for r in dlq:
            h = {k: val.decode() for k, val in r.headers}
            i = where[(h["dlq.topic"], int(h["dlq.partition"]), int(h["dlq.offset"]))]
            assert i not in seen_bad, f"payload {i} dead-lettered twice"
            seen_bad.add(i)
            assert h["dlq.error"] == expected.codes[i], (i, h, items[i])
            assert h["dlq.reason"].strip()
            assert (r.key, r.value) == (items[i].key, items[i].value)
        assert len(seen_bad) == n_bad

        # The good ones: processed, counted once, and every user got a list for one of theirs.
        c = worker.counters()
        assert c["events_in"] == len(items)
        assert c["events_accepted"] == expected.accepted
        assert c.get("events_duplicate", 0) == expected.duplicates
        assert c["events_rejected"] == n_bad
        assert worker.get("/health/")[1]["metrics"]["rejected"] == dict(by_code)
        users = set(expected.good_event_ids)
        recs = read_topic(
            s,
            s.topics.recommendations,
            until=lambda rs: {r.key.decode() for r in rs} >= users,
            timeout_s=120,
        )
        last: dict[str, dict[str, Any]] = {}
        for r in recs:
            last[r.key.decode()] = orjson.loads(r.value)
        assert set(last) == users
        for user, rec in last.items():
            assert rec["event_id"] in expected.good_event_ids[user], (user, rec)
            assert len(rec["items"]) <= s.recs.k

        status, _ = worker.get("/health/")
        assert status == 200 and worker.proc.poll() is None, worker.log_tail()
        rss_after = rss_bytes(worker.proc.pid)
        print(
            f"\nfuzz: {len(items)} payloads ({len(copies)} of them redelivered "
            f"copies): {n_good} good ({expected.accepted} accepted, {expected.duplicates} "
            f"duplicates), {n_bad} dead-lettered {dict(sorted(by_code.items()))}; "
            f"{len(users)} users listed; worker RSS {rss_before / 2**20:.0f} MiB before, "
            f"{rss_after / 2**20:.0f} MiB after"
        )
        assert rss_after - rss_before < RSS_GROWTH_LIMIT
    finally:
        rc = worker.stop()
    assert rc == 0, worker.log_tail()
