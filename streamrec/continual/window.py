"""The trainer's bounded window of recent per-user sequences."""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterator
from dataclasses import dataclass

Visit = tuple[str, int, float]  # (item_id, event type code, ts), as training reads it


Case = tuple[list[Visit], Visit]  # (the user's history before it, the event)


@dataclass(frozen=True)
class WindowSplit:
    """The window cut in event time: ``train``, each user's events before ``cut_ts``;
    ``holdout``, one case per event at or after it of a user with events before it, their
    history up to that event as context (prequential, as a worker would have served them)."""

    cut_ts: float
    train: dict[str, list[Visit]]
    holdout: list[Case]


class TrainingWindow:
    """Events of the last ``window_s`` (event time), at most ``max_users`` users (the least
    recently active dropped first) and ``max_user_events`` events per user: memory is bounded
    whatever the stream holds. Events are deduplicated by id within a user's kept events, so a
    re-read of the log (a restart) does not count one twice."""

    def __init__(self, window_s: float, max_users: int, max_user_events: int) -> None:
        self.window_s = window_s
        self.max_users = max_users
        self.max_user_events = max_user_events
        # user -> events in arrival order: (ts, event_id, item, type code); LRU order of users
        self._users: OrderedDict[str, deque[tuple[float, str, str, int]]] = OrderedDict()
        # user -> when they were last forgotten (the request's record time), bounded like the
        # users themselves: their events produced up to then are refused
        self._forgotten: OrderedDict[str, float] = OrderedDict()
        self.newest_ts = 0.0
        self.added = 0  # events accepted since start
        self.duplicates = 0
        self.evicted_users = 0

    def __len__(self) -> int:
        return sum(len(q) for q in self._users.values())

    @property
    def users(self) -> int:
        return len(self._users)

    def add(
        self,
        user: str,
        event_id: str,
        item: str,
        code: int,
        ts: float,
        produced_at: float | None = None,
    ) -> bool:
        """Keep one event; False for a duplicate, one already outside the window, or one of a
        forgotten user produced (record time) no later than the request (unknown: refused)."""
        if ts < self.newest_ts - self.window_s:
            return False
        forgotten_at = self._forgotten.get(user)
        if forgotten_at is not None and (produced_at is None or produced_at <= forgotten_at):
            return False
        q = self._users.get(user)
        if q is None:
            q = self._users[user] = deque(maxlen=self.max_user_events)
            while len(self._users) > self.max_users:
                self._users.popitem(last=False)
                self.evicted_users += 1
        else:
            self._users.move_to_end(user)
            if any(e[1] == event_id for e in q):
                self.duplicates += 1
                return False
        q.append((ts, event_id, item, code))
        self.added += 1
        self.newest_ts = max(self.newest_ts, ts)
        return True

    def forget(self, user: str, requested_at: float, idle_before: float | None = None) -> bool:
        """Drop a user's events and refuse those produced up to ``requested_at``, whatever order
        the topics are read in; events produced later start a new history, as on the workers.
        A conditional request (the retention sweep's) is not carried out if the user has an
        event at or after ``idle_before`` (event time). True if carried out."""
        q = self._users.get(user)
        if idle_before is not None and q and max(e[0] for e in q) >= idle_before:
            return False
        self._users.pop(user, None)
        self._forgotten[user] = max(requested_at, self._forgotten.pop(user, requested_at))
        while len(self._forgotten) > self.max_users:
            self._forgotten.popitem(last=False)
        return True

    def _expire(self) -> None:
        horizon = self.newest_ts - self.window_s
        for user in list(self._users):
            q = self._users[user]
            kept = [e for e in q if e[0] >= horizon]
            if not kept:
                del self._users[user]
            elif len(kept) < len(q):
                q.clear()
                q.extend(kept)

    def sequences(self) -> dict[str, list[Visit]]:
        """Each user's kept events in time order (ties by arrival)."""
        self._expire()
        return {u: [(i, c, ts) for ts, _, i, c in _in_time(q)] for u, q in self._users.items() if q}

    def split(self, holdout_fraction: float) -> WindowSplit:
        """Hold out the newest ``holdout_fraction`` of the events (by event time)."""
        seqs = self.sequences()
        times = sorted(ts for seq in seqs.values() for _, _, ts in seq)
        if not times:
            return WindowSplit(0.0, {}, [])
        cut = times[min(len(times) - 1, int(len(times) * (1.0 - holdout_fraction)))]
        train: dict[str, list[Visit]] = {}
        holdout: list[Case] = []
        for user in sorted(seqs):
            seq = seqs[user]
            first = next((n for n, v in enumerate(seq) if v[2] >= cut), len(seq))
            if first == 0:
                continue  # nothing before the cut: no context to serve from, nothing to train
            train[user] = seq[:first]
            holdout.extend((seq[:n], seq[n]) for n in range(first, len(seq)))
        return WindowSplit(cut, train, holdout)


def _in_time(q: deque[tuple[float, str, str, int]]) -> Iterator[tuple[float, str, str, int]]:
    return iter(sorted(q, key=lambda e: e[0]))  # stable: arrival order breaks ties
