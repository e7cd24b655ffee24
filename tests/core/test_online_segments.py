"""The continual run's replay parts: the fit part rides with the window's first slice, the rest of
the window is cut into equal slices, and together they are the whole log once, in order."""

from __future__ import annotations

import itertools

import pytest

from streamrec.online.run import replay_segments


def _log(n: int, first_window: int) -> tuple[list[dict[str, float]], float]:
    return [{"ts": float(i)} for i in range(n)], float(first_window)


@pytest.mark.parametrize("slices", [1, 2, 3, 4, 7])
def test_parts_cover_the_log_once_and_cut_only_inside_the_window(slices: int) -> None:
    events, split_ts = _log(100, 40)
    parts = replay_segments(events, split_ts, slices)
    assert len(parts) == slices
    assert parts[0][0] == 0 and parts[-1][1] == 100
    assert all(a[1] == b[0] for a, b in itertools.pairwise(parts))
    # every boundary (where a trainer cycle runs) lies inside the evaluation window
    assert all(events[lo]["ts"] > split_ts for lo, _ in parts[1:])
    # the window's 60 events in equal slices: the first part holds the fit part and one slice
    sizes = [hi - lo for lo, hi in parts]
    assert sizes[0] - 40 in range(60 // slices, 60 // slices + 2)
    assert max(sizes[1:], default=0) - min(sizes[1:], default=0) <= 1


def test_more_slices_than_window_events_gives_one_part_per_event() -> None:
    events, split_ts = _log(10, 8)
    assert replay_segments(events, split_ts, 5) == [(0, 9), (9, 10)]


def test_a_log_without_a_window_is_one_part() -> None:
    events, _ = _log(10, 0)
    assert replay_segments(events, 1e9, 4) == [(0, 10)]
