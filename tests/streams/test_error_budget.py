from __future__ import annotations

import pytest

from streams.error_budget import ErrorBudget
from streams.failpoints import FailPointError, FailPoints


def test_errors_within_the_budget_pass_and_one_more_spends_it() -> None:
    b = ErrorBudget(budget=2, window=100)
    for _ in range(10):
        b.event()
    assert b.error() and b.error()
    assert not b.error()
    assert b.in_window() == 3


def test_errors_leave_the_window_as_events_go_by() -> None:
    b = ErrorBudget(budget=1, window=10)
    b.event()
    assert b.error()
    for _ in range(10):
        b.event()
    assert b.in_window() == 0
    assert b.error()  # the first one fell out of the last 10 events
    b.event()
    assert not b.error()  # two within the last 10


def test_a_zero_budget_stops_at_the_first_error() -> None:
    b = ErrorBudget(budget=0, window=5)
    b.event()
    assert not b.error()


def test_fail_points_fail_n_times_then_pass() -> None:
    fp = FailPoints("publish.send=2, rank=always")
    assert fp
    for _ in range(2):
        with pytest.raises(FailPointError, match=r"publish\.send"):
            fp.hit("publish.send")
    fp.hit("publish.send")
    for _ in range(5):
        with pytest.raises(FailPointError):
            fp.hit("rank")
    fp.hit("state.read")  # not armed
    assert fp.hits == {"publish.send": 2, "rank": 5}


def test_no_spec_arms_nothing() -> None:
    fp = FailPoints("")
    assert not fp
    for name in ("rank", "rank.fallback", "publish.send", "state.read"):
        fp.hit(name)


@pytest.mark.parametrize("spec", ["nope=1", "rank", "rank=0", "rank=-1", "rank=sometimes"])
def test_a_bad_spec_is_refused_with_its_reason(spec: str) -> None:
    with pytest.raises(ValueError, match="fail point"):
        FailPoints(spec)
