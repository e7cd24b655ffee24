"""Dead-letter records: the original key and bytes, untouched, with the reason in headers."""

from __future__ import annotations

import time

from streamrec.events.validate import Rejection


def dlq_headers(
    topic: str, partition: int, offset: int, rejection: Rejection
) -> list[tuple[str, bytes]]:
    return [
        ("dlq.reason", rejection.reason.encode()),
        ("dlq.error", rejection.code.encode()),
        ("dlq.topic", topic.encode()),
        ("dlq.partition", str(partition).encode()),
        ("dlq.offset", str(offset).encode()),
        ("dlq.ts", str(int(time.time() * 1000)).encode()),
    ]
