"""The framework's floor: a Faust agent that consumes streamrec's event topics, decodes each event
and produces a small record to the output topic. No table, no model. It is built from the same
settings (`streams.app.create_app`: commit interval, acks, fetch settings) and acks the same way
as the worker (after the send is handed to the producer), so the difference between the two is
streamrec's own work.

Run (bench/live.py does): STREAMREC_*=... .venv/bin/python bench/passthrough.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import faust
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streamrec.settings import load_settings
from streams.app import create_app
from streams.topics import declare


def build(settings: Any) -> faust.App:
    app = create_app(settings)
    topics = declare(app, settings)

    async def passthrough(stream: Any) -> None:
        async for event in stream.noack().events():
            msg = event.message
            body = orjson.loads(msg.value)
            out = {
                "user_id": body["user_id"],
                "event_id": body["event_id"],
                "event_ts": body["ts"],
                "emitted_at": time.time(),
            }
            await topics.recommendations.send(key=msg.key, value=orjson.dumps(out))
            event.ack()

    app.agent(topics.events, name="bench.passthrough")(passthrough)
    return app


def main() -> int:
    settings = load_settings()
    app = build(settings)
    worker = faust.Worker(app, loglevel=settings.app.log_level, quiet=True)
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
