"""A minimal faust-streaming worker for tests/integration/test_broker.py.

Counts events per key in a RocksDB-backed Table and reports every count on an output topic.
Run it as a subprocess (one worker per process; faust owns the event loop and signals)::

    COUNTER_BOOTSTRAP=127.0.0.1:19092 COUNTER_APP_ID=... COUNTER_DATADIR=... \
    COUNTER_SOURCE=... COUNTER_OUTPUT=... python -m tests.integration.faust_counter_app worker

Events on COUNTER_SOURCE: key = counted key (bytes), value ``b"inc"`` adds one, ``b"get"`` only
reports the current count (so a test can read the table of a freshly recovered worker).
Each event produces one JSON record on COUNTER_OUTPUT, keyed like the event:
``{"key": ..., "op": "inc"|"get", "count": <count after the event>, "worker": COUNTER_WORKER}``.
The table's changelog topic is ``<COUNTER_APP_ID>-counts-changelog``.
"""

from __future__ import annotations

import json
import os

import faust

TABLE = "counts"

app = faust.App(
    os.environ["COUNTER_APP_ID"],
    broker=f"kafka://{os.environ['COUNTER_BOOTSTRAP']}",
    store="rocksdb://",
    datadir=os.environ["COUNTER_DATADIR"],
    web_enabled=False,
    topic_partitions=1,
    topic_replication_factor=1,
    table_standby_replicas=0,
    consumer_auto_offset_reset="earliest",
    broker_commit_interval=0.5,
    # Short group timeouts: the broker allows >= 1 s (group.min.session.timeout.ms).
    broker_session_timeout=6.0,
    broker_heartbeat_interval=1.0,
)
if os.environ.get("COUNTER_PLAIN_FAUST") != "1":
    # streamrec's fix for faust's backlog-during-recovery race (COUNTER_PLAIN_FAUST=1 shows it)
    from streams.seek_first import SeekFirstConsumer

    app.transport.Consumer = SeekFirstConsumer  # type: ignore[misc]

source = app.topic(
    os.environ["COUNTER_SOURCE"], key_type=bytes, value_type=bytes, value_serializer="raw"
)
output = app.topic(
    os.environ["COUNTER_OUTPUT"], key_type=bytes, value_type=bytes, value_serializer="raw"
)
counts = app.Table(TABLE, default=int, partitions=1)
WORKER = os.environ.get("COUNTER_WORKER", "")


@app.agent(source)
async def count(stream: faust.StreamT[bytes]) -> None:
    """Apply each event to the table and report the resulting count."""
    async for key, value in stream.items():
        name = key.decode()
        op = value.decode()
        if op == "inc":
            counts[name] += 1
        report = {"key": name, "op": op, "count": counts[name], "worker": WORKER}
        await output.send(key=key, value=json.dumps(report).encode())


if __name__ == "__main__":
    app.main()
