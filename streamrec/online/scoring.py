"""Prequential (online) scoring of published lists: pure Python, no Kafka.

For each event of the evaluation window, the list that counts is the latest one published for
that user *before* the event: the list a client would have been showing. "Before" is decided by
position in the user's own event sequence, not by clock time, so the result does not depend on
how fast the replay ran. Every published list names the event it was computed after
(``event_id``); replay ids are deterministic, so each list maps to a position in its user's
sequence.

Processing order and sequence order can disagree: a worker consumes the three event topics
independently, so a user's click can be processed before the view that preceded it. A list is
built from the state after its event *in processing order*, which then may hold events that come
later in the user's sequence. So a list counts for a target at position p only if every event
processed up to it (by that app) is before p in the sequence: ``ListHistory.before``. The
processing order comes from the app's changelog (each state write appends exactly one event, in
the order the worker handled them), which also covers events whose list was coalesced away by
the micro-batcher (it emits one list per user per batch, named after the user's last event).
Without a processing order, the emission order of the lists stands in for it (it misses events
coalesced into a batch out of order). ``ListHistory.reordered`` counts the events processed
after an event later in the sequence.
"""

from __future__ import annotations

import bisect
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from streamrec.recommend.list_metrics import list_metrics

PURCHASE = "purchase"
CLICK_VIEW = "click/view"
KINDS = (PURCHASE, CLICK_VIEW)
KS = (10, 20)
BEYOND_AT = 10  # beyond-accuracy metrics of the top 10 of each list shown

# A system answers "which list was the user shown just before their event at this position".
System = Callable[[str, int], Sequence[str] | None]


def kind_of(event_type: str) -> str:
    return PURCHASE if event_type == "purchase" else CLICK_VIEW


@dataclass(frozen=True, slots=True)
class Target:
    """An evaluation event: the item the user went for, at ``position`` in their sequence."""

    user_id: str
    position: int
    item_id: str
    kind: str
    bought_before: bool = False  # the user bought this item earlier: the worker never lists it


@dataclass(frozen=True, slots=True)
class EmittedList:
    """A published list: the position of the event it was built after, and its item ids."""

    position: int
    items: tuple[str, ...]


class ListHistory:
    """One user's published lists in the order they were emitted, and optionally the sequence
    positions of all their events in the order the app processed them."""

    def __init__(
        self, lists: Sequence[EmittedList], processed: Sequence[int] | None = None
    ) -> None:
        self.lists = list(lists)
        order = list(processed) if processed is not None else [x.position for x in self.lists]
        # high[i]: the furthest sequence position among the first i + 1 events processed
        high: list[int] = []
        top = -1
        self.reordered = 0
        for pos in order:
            if pos < top:
                self.reordered += 1
            top = max(top, pos)
            high.append(top)
        rank = {pos: i for i, pos in enumerate(order)}
        self._high: list[int] = []
        top = -1
        for lst in self.lists:
            # A list whose event the processing order lacks (it should not happen) is judged by
            # everything processed: it can then only count for targets after all of them.
            i = rank.get(lst.position, len(order) - 1)
            top = max(top, high[i] if high else lst.position, lst.position)
            self._high.append(top)

    def before(self, position: int) -> EmittedList | None:
        """The last emitted list whose state provably held no event at ``position`` or later."""
        j = bisect.bisect_left(self._high, position)
        return self.lists[j - 1] if j > 0 else None


@dataclass(frozen=True, slots=True)
class Replayed:
    """The replayed log, indexed: where each event id sits and which events are targets."""

    position_of: dict[str, tuple[str, int]]  # event id -> (user id, position in their sequence)
    targets: list[Target]
    first_target: dict[str, int]  # user id -> position of their first evaluation event


def index_events(events: Iterable[Mapping[str, Any]], split_ts: float) -> Replayed:
    """Index events in replay order (each user's events in their sequence order): events at or
    after split_ts are the targets."""
    count: dict[str, int] = defaultdict(int)
    bought: dict[str, set[str]] = defaultdict(set)
    position_of: dict[str, tuple[str, int]] = {}
    targets: list[Target] = []
    first: dict[str, int] = {}
    for e in events:
        user = str(e["user_id"])
        pos = count[user]
        count[user] += 1
        position_of[str(e["event_id"])] = (user, pos)
        item, etype = str(e["item_id"]), str(e["type"])
        if float(e["ts"]) >= split_ts:
            targets.append(Target(user, pos, item, kind_of(etype), item in bought[user]))
            first.setdefault(user, pos)
        if etype == "purchase":
            bought[user].add(item)
    return Replayed(position_of, targets, first)


def histories(
    records: Iterable[Mapping[str, Any]],
    position_of: Mapping[str, tuple[str, int]],
    processed: Mapping[str, Sequence[int]] | None = None,
) -> dict[str, ListHistory]:
    """Per-user list histories from published list records in emission order (lists after
    events the log does not hold, e.g. from another run, are skipped). ``processed``: per user,
    the sequence positions of their events in the order the app processed them."""
    per_user: dict[str, list[EmittedList]] = defaultdict(list)
    for rec in records:
        where = position_of.get(str(rec.get("event_id")))
        if where is None or where[0] != str(rec.get("user_id")):
            continue
        items = tuple(str(i["item_id"]) for i in rec.get("items", ()))
        per_user[where[0]].append(EmittedList(where[1], items))
    return {
        u: ListHistory(ls, processed.get(u) if processed is not None else None)
        for u, ls in per_user.items()
    }


def processing_order(
    appended: Iterable[tuple[str, int]], position_of_hash: Mapping[tuple[str, int], int]
) -> dict[str, list[int]]:
    """Per user, sequence positions in processing order, from (user id, event-id hash) pairs in
    the order the app applied them (unknown hashes are skipped)."""
    out: dict[str, list[int]] = defaultdict(list)
    for user, h in appended:
        pos = position_of_hash.get((user, h))
        if pos is not None:
            out[user].append(pos)
    return dict(out)


def live(hist: Mapping[str, ListHistory]) -> System:
    """The lists as they were updated in real time."""

    def shown(user: str, position: int) -> Sequence[str] | None:
        h = hist.get(user)
        found = h.before(position) if h is not None else None
        return found.items if found is not None else None

    return shown


def frozen(hist: Mapping[str, ListHistory], first_target: Mapping[str, int]) -> System:
    """Each user's last list before the evaluation window, kept for the whole window (what a
    daily batch job computed the night before would serve)."""
    lists: dict[str, tuple[str, ...]] = {}
    for user, pos in first_target.items():
        h = hist.get(user)
        found = h.before(pos) if h is not None else None
        if found is not None:
            lists[user] = found.items

    def shown(user: str, position: int) -> Sequence[str] | None:
        return lists.get(user)

    return shown


@dataclass
class Tally:
    """Hits and discounted gains at each K over n targets."""

    n: int = 0
    bought_before: int = 0  # targets the user had bought before (never listed, always a miss)
    hits: dict[int, int] = field(default_factory=lambda: dict.fromkeys(KS, 0))
    gain: dict[int, float] = field(default_factory=lambda: dict.fromkeys(KS, 0.0))
    # the top BEYOND_AT of the list shown at each target (as many as targets), for list_metrics
    shown: list[tuple[str, ...]] = field(default_factory=list)

    def add(self, items: Sequence[str] | None, target: str, bought_before: bool = False) -> None:
        self.n += 1
        self.bought_before += bought_before
        if not items:
            return  # no list shown: a miss
        self.shown.append(tuple(items[:BEYOND_AT]))
        try:
            rank = list(items).index(target)
        except ValueError:
            return
        for k in self.hits:
            if rank < k:
                self.hits[k] += 1
                self.gain[k] += 1.0 / math.log2(rank + 2)

    def hr(self, k: int) -> float:
        return self.hits[k] / self.n if self.n else 0.0

    def ndcg(self, k: int) -> float:
        return self.gain[k] / self.n if self.n else 0.0


def score(
    targets: Iterable[Target], systems: Mapping[str, System], warm: System
) -> dict[str, dict[str, Tally]]:
    """{system: {kind: Tally}} over the targets of users that ``warm`` shows a list (users seen
    before the window), so every system is judged on the same events."""
    out = {name: {kind: Tally() for kind in KINDS} for name in systems}
    for t in targets:
        if warm(t.user_id, t.position) is None:
            continue
        for name, system in systems.items():
            out[name][t.kind].add(system(t.user_id, t.position), t.item_id, t.bought_before)
    return out


def beyond_accuracy(
    tallies: Mapping[str, Mapping[str, Tally]],
    categories: Mapping[str, str] | None,
    counts: Mapping[str, int],
    n_catalog: int,
) -> dict[str, dict[str, dict[str, float]]]:
    """{system: {kind: categories per list, catalog coverage, novelty}} of the lists shown at
    the targets (top ``BEYOND_AT``). No intra-list diversity here: the rows include lists with
    no item space of their own (the heuristics), and one model's space would favour it."""
    return {
        name: {
            kind: list_metrics(t.shown, None, None, categories, counts, n_catalog)
            for kind, t in per_kind.items()
        }
        for name, per_kind in tallies.items()
    }


def lift(
    tallies: Mapping[str, Mapping[str, Tally]],
    kind: str,
    live_name: str,
    frozen_name: str,
    k: int = 20,
) -> float | None:
    """Relative HR@k of live over frozen lists (None when frozen scores nothing)."""
    base = tallies[frozen_name][kind].hr(k)
    return tallies[live_name][kind].hr(k) / base - 1.0 if base > 0 else None


def format_table(
    tallies: Mapping[str, Mapping[str, Tally]],
    live_name: str,
    frozen_name: str,
    beyond: Mapping[str, Mapping[str, Mapping[str, float]]] | None = None,
) -> str:
    """A Markdown table: one row per system and kind, HR/NDCG @10 and @20, the beyond-accuracy
    metrics when given, lift of live."""
    extra = sorted(
        {m for per_kind in (beyond or {}).values() for ms in per_kind.values() for m in ms}
    )
    lines = [
        "| lists | targets | n | bought before | HR@10 | NDCG@10 | HR@20 | NDCG@20 |"
        + "".join(f" {m}@{BEYOND_AT} |" for m in extra),
        "|---|---|---:|---:|---:|---:|---:|---:|" + "---:|" * len(extra),
    ]
    for kind in KINDS:
        for name, per_kind in tallies.items():
            t = per_kind[kind]
            ms = (beyond or {}).get(name, {}).get(kind, {})
            lines.append(
                f"| {name} | {kind} | {t.n:,} | {t.bought_before / max(t.n, 1):.1%} | {t.hr(10):.4f} | {t.ndcg(10):.4f} | "
                f"{t.hr(20):.4f} | {t.ndcg(20):.4f} |"
                + "".join(f" {ms[m]:.4f} |" if m in ms else " |" for m in extra)
            )
    for kind in KINDS:
        up = lift(tallies, kind, live_name, frozen_name)
        shown = f"{up:+.1%}" if up is not None else "n/a (frozen HR@20 = 0)"
        lines.append(f"\nreal-time lift, {kind}: HR@20 {live_name} vs {frozen_name} {shown}")
    return "\n".join(lines)
