"""Waiting for a condition with a deadline: the one loop behind every "wait until" here."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    probe: Callable[[], T | bool | None],
    *,
    timeout_s: float,
    what: str,
    poll_s: float = 0.2,
    abort: Callable[[], None] | None = None,
    on_timeout: Callable[[], BaseException] | None = None,
) -> T:
    """Call ``probe`` every ``poll_s`` until it returns something other than None or False, and
    return that (so a count of 0 is an answer).
    ``abort`` runs before each probe and raises to give up early (a process died); past
    ``timeout_s`` raises ``on_timeout()`` or a TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while True:
        if abort is not None:
            abort()
        value = probe()
        if value is not None and value is not False:
            return value  # type: ignore[return-value]  # not None, not False: a T (or True)
        if time.monotonic() >= deadline:
            if on_timeout is not None:
                raise on_timeout()
            raise TimeoutError(f"{what}: not within {timeout_s:g} s")
        time.sleep(poll_s)
