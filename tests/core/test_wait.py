from __future__ import annotations

import pytest

from streamrec.wait import wait_until


def test_returns_the_first_answer_and_zero_is_an_answer() -> None:
    answers = iter([None, False, 0, 5])
    assert wait_until(lambda: next(answers), timeout_s=5, what="x", poll_s=0) == 0


def test_times_out_with_what_it_waited_for() -> None:
    with pytest.raises(TimeoutError, match="the moon"):
        wait_until(lambda: None, timeout_s=0.05, what="the moon", poll_s=0.01)


def test_abort_and_on_timeout_raise_their_own_errors() -> None:
    def dead() -> None:
        raise RuntimeError("the worker died")

    with pytest.raises(RuntimeError, match="died"):
        wait_until(lambda: None, timeout_s=5, what="x", abort=dead)
    with pytest.raises(KeyError):
        wait_until(lambda: False, timeout_s=0, what="x", on_timeout=lambda: KeyError("k"))
