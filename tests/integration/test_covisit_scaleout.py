"""Co-visitation under scale-out, on the real broker: two workers in one group each count the
users of the partitions they own, exactly as the offline state does over those users, and the
two samples together are the whole."""

from __future__ import annotations

import time
from collections import defaultdict

import pytest
from kafka.partitioner.default import murmur2

from streamrec.faults.harness import (
    Workers,
    make_log,
    make_settings,
    produce,
    wait_drained,
    worker_settings,
)
from streamrec.features.covisit import CoVisitation
from streamrec.recommend.engine import covisit_config
from streams.topics import create_topics

pytestmark = pytest.mark.broker
PARTITIONS = 4


def partition_of(user: str) -> int:
    # kafka-python's DefaultPartitioner (the Java client's), which streamrec.replay uses
    return (murmur2(user.encode()) & 0x7FFFFFFF) % PARTITIONS


def settled(ws: Workers) -> list[list[int]]:
    """Each worker's partitions, once the group holds all of them and both workers have some."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        owned = [w.health()[1] for w in ws.all]
        parts = [sorted(h.get("partitions", [])) if h else [] for h in owned]
        if all(parts) and sorted(p for ps in parts for p in ps) == list(range(PARTITIONS)):
            return parts
        time.sleep(0.5)
    raise AssertionError(f"the group did not settle on {PARTITIONS} partitions:\n{ws.logs()}")


def weights(cv: CoVisitation, item: str, t0: float) -> dict[str, float]:
    """The item's weights on the scale of decay landmark ``t0`` (each state has its own)."""
    assert cv.t0 is not None
    scale = 2.0 ** ((cv.t0 - t0) / cv.config.half_life_s)
    return {i: w * scale for i, w in cv.neighbours(item)}


def test_two_workers_count_covisitation_over_their_own_users(
    kafka_bootstrap, unique_name, tmp_path
):
    s = make_settings(
        kafka_bootstrap, unique_name("covisit"), tmp_path / "w1", partitions=PARTITIONS
    )
    create_topics(s)
    # one event type: one topic, so each user's events arrive in their order (pairs are made
    # in processing order; the mixed-type pairing is the unit tests')
    events = [
        {**e, "type": "click"}
        for e in make_log(2500, 60, seed=5, n_items=30, dup_frac=0.0, span_s=6 * 3600.0)
    ]
    cfg = covisit_config(s)
    with Workers(tmp_path) as ws:
        w1 = ws.start(s, "worker-1")
        w2 = ws.start(worker_settings(s, tmp_path / "w2"), "worker-2")
        w1.wait_healthy()
        w2.wait_healthy()
        before = settled(ws)
        produce(s, events)
        wait_drained(s, ws)
        assert settled(ws) == before, "a rebalance during the run would move counts"
        items = sorted({e["item_id"] for e in events})
        served = [{i: w.get(f"/items/{i}/neighbours/")[1] for i in items} for w in ws.all]

    by_user: dict[str, list[tuple[str, int, float]]] = defaultdict(list)
    for e in events:
        by_user[e["user_id"]].append((e["item_id"], 1, float(e["ts"])))
    whole = CoVisitation(cfg)
    for seq in by_user.values():
        whole.observe_sequence(seq)
    assert whole.t0 is not None
    union: dict[tuple[str, str], float] = defaultdict(float)
    for owned, views in zip(before, served, strict=True):
        mine = CoVisitation(cfg)
        for user, seq in by_user.items():
            if partition_of(user) in owned:
                mine.observe_sequence(seq)
        assert mine.pairs_added > 0
        for item in items:
            view = views[item]
            assert view["partitions"] == owned
            if not view["neighbours"]:
                assert not mine.neighbours(item)
                continue
            scale = 2.0 ** ((view["decay_t0"] - whole.t0) / cfg.half_life_s)
            got = {i: w * scale for i, w in view["neighbours"]}
            assert got == pytest.approx(weights(mine, item, whole.t0), rel=1e-9), item
            for other, w in got.items():
                union[(item, other)] += w
    # the two samples add up to the counts over every user
    expected = {(a, b): w for a in items for b, w in weights(whole, a, whole.t0).items()}
    assert union == pytest.approx(expected, rel=1e-9)
