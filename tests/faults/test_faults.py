"""Fault tests on the real broker (issue 5), small sizes for CI: each scenario of
``streamrec.faults.scenarios`` with a few thousand events. The big runs (100k+ events) are
``bench/faults.py``.

    .venv/bin/pytest tests/faults      # ~2 min on a shared 2-core machine; -m faults elsewhere

The broker-restart test starts a broker of its own (it stops and restarts it); the others use the
session broker (``kafka_bootstrap``, or ``STREAMREC_TEST_BOOTSTRAP``).

What "equal to the reference" means here (order-free facts, since the three event topics are
consumed independently) is documented in ``streamrec/faults/harness.py``.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from streamrec.events.schema import Event
from streamrec.faults import scenarios
from streamrec.faults.harness import Expected, compare, expected_of, make_log
from streamrec.faults.scenarios import Result
from streamrec.features.user_state import FeatureLimits, UserState
from streamrec.settings import load_settings
from tests.conftest import _report

pytestmark = pytest.mark.faults


def _assert_clean(result: Result, request: pytest.FixtureRequest, t0: float) -> None:
    _report(request.config, f"\n{result.describe()}\n  wall {time.monotonic() - t0:.0f} s")
    assert result.comparison is not None
    assert result.lost == 0, result.describe()
    assert result.double == 0, result.describe()
    assert result.ok, result.describe()
    assert result.checked_served > 0


def test_kill9_mid_replay_then_restart_loses_nothing_and_counts_nothing_twice(
    kafka_bootstrap: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    t0 = time.monotonic()
    result = scenarios.kill9_restart(kafka_bootstrap, tmp_path, n_events=3000, n_users=300)
    _assert_clean(result, request, t0)


def test_worker_frozen_past_its_session_resumes_and_loses_nothing(
    kafka_bootstrap: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    t0 = time.monotonic()
    result = scenarios.freeze_past_session(kafka_bootstrap, tmp_path, n_events=3000, n_users=300)
    _assert_clean(result, request, t0)


@pytest.mark.broker  # starts a broker of its own, to stop and restart it
def test_broker_restart_mid_stream_worker_reconnects_and_catches_up(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    t0 = time.monotonic()
    result = scenarios.broker_restart(tmp_path, n_events=3000, n_users=300)
    _assert_clean(result, request, t0)


def test_workers_join_leave_and_die_every_user_stays_served(
    kafka_bootstrap: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    t0 = time.monotonic()
    result = scenarios.scale_out_in(kafka_bootstrap, tmp_path, n_events=4000, n_users=300)
    _assert_clean(result, request, t0)


def test_deleted_local_state_is_rebuilt_from_the_changelog(
    kafka_bootstrap: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    t0 = time.monotonic()
    result = scenarios.lost_local_state(kafka_bootstrap, tmp_path, n_events=3000, n_users=300)
    _assert_clean(result, request, t0)


def test_lists_that_fail_to_publish_are_retried_or_the_worker_stops_unacked(
    kafka_bootstrap: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    t0 = time.monotonic()
    result = scenarios.failing_lists(kafka_bootstrap, tmp_path, n_events=2000, n_users=200)
    _assert_clean(result, request, t0)


def test_errors_of_the_worker_past_its_budget_stop_it_instead_of_dead_lettering(
    kafka_bootstrap: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    t0 = time.monotonic()
    result = scenarios.internal_errors_past_budget(kafka_bootstrap, tmp_path, budget=5)
    _assert_clean(result, request, t0)


def test_a_worker_that_cannot_dead_letter_stops_instead_of_acking(
    kafka_bootstrap: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    t0 = time.monotonic()
    result = scenarios.dead_letters_unsendable(kafka_bootstrap, tmp_path)
    _assert_clean(result, request, t0)


# --- the comparison itself must be able to fail (no broker needed) ---------------------------

LOG = make_log(400, 20, seed=9, now=1.7e9)  # fixed, in the past: all valid, same every run


def _reference() -> tuple[Expected, dict[str, UserState]]:
    exp = expected_of(LOG, load_settings(env={}))
    # a perfect "live" table: the reference's own states, through the changelog's codec
    return exp, {u: UserState.from_bytes(st.to_bytes()) for u, st in exp.run.states.items()}


def _user_events(user: str) -> list[Event]:
    """The user's distinct events in log order."""
    first: dict[str, Event] = {}
    for e in LOG:
        if e["user_id"] == user:
            first.setdefault(
                e["event_id"], Event(e["event_id"], user, e["item_id"], e["type"], e["ts"])
            )
    return list(first.values())


def test_comparison_is_clean_for_the_reference_itself() -> None:
    exp, got = _reference()
    assert exp.run.accepted == 400 and exp.run.duplicates > 0 and len(got) == 20
    assert compare(exp, got, 100).ok


def test_comparison_sees_a_lost_and_a_double_counted_event() -> None:
    exp, got = _reference()
    user = min(got, key=lambda u: (got[u].n_events, u))  # its whole sequence is kept
    events = _user_events(user)
    limits = FeatureLimits()

    lost = UserState()
    for ev in events[:-1]:
        lost.apply(ev, limits)
    c = compare(exp, {**got, user: lost}, 100)
    assert (c.lost, c.double) == (1, 0), c.describe()

    double = UserState.from_bytes(got[user].to_bytes())
    last = events[-1]
    # the same event counted again (under another id, as a broken dedup would)
    assert double.apply(
        Event(f"x{last.event_id}", user, last.item_id, last.type, last.ts + 1), limits
    )
    c = compare(exp, {**got, user: double}, 100)
    assert (c.lost, c.double) == (0, 1), c.describe()
    assert not c.ok
