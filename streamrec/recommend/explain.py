"""Why each listed item is there: a machine-readable reason and a short text for people.

A reason has a kind, the items of the user's own history it rests on (``because``) and a text:

* ``repeat``: the user touched the item itself ("You viewed it 3 times, last 12 min ago");
* ``covisit``: it often comes next to the user's last items ("Often viewed together with X");
  ``because`` holds those items, the heaviest contribution first;
* ``similar``: the model put it there; ``because`` holds the history items whose item-tower
  vectors are closest to it ("Similar to X, which you clicked");
* ``popular``: it is popular right now (``because`` is empty).

Which kind a ranked item gets is read off the scorer that ranked it, not off the source that
proposed it: each group of the item's features (its own history, co-visitation, the model's score,
popularity) is replaced by what an item without that signal has, and the group whose loss lowers
the score most is the reason (occlusion). Heuristic lists take the tier that placed the item.
``bench/explain.py`` checks the reasons are faithful: removing the ``because`` items from the
history should lower the item's score.

Plain Python, numpy and torch: the worker and the offline evaluation call the same functions.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from streamrec.features.covisit import CoVisitation
from streamrec.recommend.candidates import (
    SOURCE_BITS,
    CandidateBatch,
    CandidateConfig,
    HistoryStat,
    UserContext,
    absent_row,
    history_stats,
)
from streamrec.recommend.candidates import F as COL

REPEAT, COVISIT, SIMILAR, POPULAR = "repeat", "covisit", "similar", "popular"
KINDS = (REPEAT, COVISIT, SIMILAR, POPULAR)
# The feature columns behind each kind: occluding a group sets them to an unknown item's values.
_REPEAT_COLS = ("in_history", "recency_rank", "age", "n_browse", "n_click", "n_purchase")
GROUPS: dict[str, tuple[int, ...]] = {
    REPEAT: tuple(COL[c] for c in (*_REPEAT_COLS, "last_type")),
    COVISIT: (COL["covisit"], COL["covisit_rank"]),
    SIMILAR: (COL["model_score"], COL["model_rank"]),
    POPULAR: (COL["popularity"],),
}
VERBS = ("viewed", "clicked", "bought")  # by type code: browse, click, purchase
BECAUSE_MAX = 2  # history items named per reason
TITLE_CHARS = 40


@dataclass(frozen=True, slots=True)
class Evidence:
    """What the texts and ``because`` lists are read from: the co-visitation state the lists were
    built with, the item vectors the model scored with (rows by ``row_of``), and titles."""

    covisit: CoVisitation | None = None
    vectors: torch.Tensor | None = None
    row_of: Mapping[str, int] | None = None
    title_of: Callable[[str], str] | None = None


# -- which kind ------------------------------------------------------------------------------------


def ranked_kinds(
    batch: CandidateBatch,
    picked: Sequence[Sequence[int]],
    score: Callable[[np.ndarray], np.ndarray],
    cfg: CandidateConfig,
) -> list[list[str]]:
    """The kind of each picked row (``picked[b]``: user b's listed rows, best first): the feature
    group whose occlusion lowers ``score`` most, among the groups the item has a signal in. One
    scorer call for all rows and groups."""
    rows = [r for user_rows in picked for r in user_rows]
    if not rows:
        return [[] for _ in picked]
    f = batch.features[rows]
    empty = absent_row(cfg)
    blocks = [f]
    for cols in GROUPS.values():
        g = f.copy()
        g[:, cols] = empty[list(cols)]
        blocks.append(g)
    s = score(np.concatenate(blocks)).reshape(len(GROUPS) + 1, len(rows))
    drop = s[0][None, :] - s[1:]  # [groups, rows]
    eligible = _eligible(batch, rows)
    drop = np.where(eligible, drop, -np.inf)
    best = drop.argmax(axis=0)
    out = []
    i = 0
    for user_rows in picked:
        kinds = []
        for _ in user_rows:
            kinds.append(KINDS[best[i]] if np.isfinite(drop[best[i], i]) else POPULAR)
            i += 1
        out.append(kinds)
    return out


def tier_kinds(batch: CandidateBatch, picked: Sequence[Sequence[int]]) -> list[list[str]]:
    """Kinds for the heuristic blend, which lists the user's items, then co-visitation
    neighbours, then popular items: the tier that placed each row."""
    f = batch.features
    return [
        [
            REPEAT
            if f[r, COL["in_history"]] > 0
            else COVISIT
            if f[r, COL["covisit"]] > 0
            else POPULAR
            for r in rows
        ]
        for rows in picked
    ]


def _eligible(batch: CandidateBatch, rows: Sequence[int]) -> np.ndarray:
    f = batch.features[rows]
    src = np.asarray([batch.sources[r] for r in rows], dtype=np.int64)
    return np.stack(
        [
            f[:, COL["in_history"]] > 0,
            f[:, COL["covisit"]] > 0,
            (src & SOURCE_BITS["model"]) > 0,
            f[:, COL["popularity"]] > -1.0,
        ]
    )


# -- the reason ------------------------------------------------------------------------------------


def explain(
    contexts: Sequence[UserContext],
    lists: Sequence[Sequence[str]],
    kinds: Sequence[Sequence[str]],
    evidence: Evidence,
    user_items: int = 3,
    stats: Sequence[Mapping[str, HistoryStat]] | None = None,
) -> list[list[dict[str, Any]]]:
    """The ``why`` object of each listed item (``lists[b]``, with ``kinds[b]``) of each user.
    ``user_items``: how many of the user's last distinct items co-visitation sums over;
    ``stats``: each user's ``history_stats``, when the candidates already computed them."""
    if stats is None:
        stats = [history_stats(c.history) for c in contexts]
    out = []
    for ctx, st, items, ks in zip(contexts, stats, lists, kinds, strict=True):
        out.append(_explain_user(ctx, st, items, ks, evidence, user_items))
    return out


def _explain_user(
    ctx: UserContext,
    stats: Mapping[str, HistoryStat],
    items: Sequence[str],
    kinds: Sequence[str],
    ev: Evidence,
    user_items: int,
) -> list[dict[str, Any]]:
    history = _HistoryView(stats) if stats else None
    now = ctx.now
    similar = [i for i, k in zip(items, kinds, strict=True) if k == SIMILAR]
    closest = _closest(similar, history, ev) if similar and history is not None else {}
    covisited = [i for i, k in zip(items, kinds, strict=True) if k == COVISIT]
    parts = (
        ev.covisit.contributions(history.recent[:user_items], covisited)
        if covisited and history is not None and ev.covisit is not None
        else {}
    )
    name = _namer(ev.title_of)
    out = []
    for item, kind in zip(items, kinds, strict=True):
        because: tuple[str, ...] = ()
        text = "Popular right now"
        if kind == REPEAT and history is not None and item in history.stats:
            because = (item,)
            text = history.repeat_text(item, now)
        elif kind == COVISIT and history is not None:
            because = tuple(src for src, _ in parts.get(item, ())[:BECAUSE_MAX])
            if because:
                verb = VERBS[history.last_type(because[0])]
                text = f"Often {verb} together with {_and(name, because)}"
        elif kind == SIMILAR and history is not None:
            because = closest.get(item, ())
            if because:
                verb = VERBS[history.last_type(because[0])]
                text = f"Similar to {_and(name, because)}, which you {verb}"
            else:
                text = "Picked for you from your recent activity"
        if not because and kind != SIMILAR:
            kind = POPULAR
        out.append({"kind": kind, "because": list(because), "text": text})
    return out


class _HistoryView:
    """A user's kept sequence as the texts read it (``history_stats``: per item its last type,
    time and counts), and the distinct items newest first."""

    def __init__(self, stats: Mapping[str, HistoryStat]) -> None:
        self.stats = stats
        self.recent = list(stats)

    def last_type(self, item: str) -> int:
        return self.stats[item][3]

    def repeat_text(self, item: str, now: float) -> str:
        _, ts, counts, code = self.stats[item]
        n = sum(counts)
        ago = _ago(now - ts)
        if n > 1:
            return f"You {VERBS[code]} it {n} times, last {ago}"
        return f"You {VERBS[code]} it {ago}"


def _closest(
    items: Sequence[str], history: _HistoryView, ev: Evidence, pool: int = 30
) -> dict[str, tuple[str, ...]]:
    """For each item, the user's recent distinct items (the newest ``pool``) whose vectors are
    closest to its own (cosine, positive only), closest first."""
    if ev.vectors is None or ev.row_of is None:
        return {}
    row_of = ev.row_of
    hist = [h for h in history.recent[:pool] if h in row_of]
    cands = [i for i in items if i in row_of]
    if not hist or not cands:
        return {}
    # one gather and numpy from there: for a handful of items torch's per-op cost dominates
    rows = torch.tensor([row_of[x] for x in hist] + [row_of[x] for x in cands])
    m = ev.vectors.index_select(0, rows).float().numpy()
    m /= np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-12)
    sims = m[len(hist) :] @ m[: len(hist)].T
    # One sort for the whole list (this runs for every list served): an item is never its own
    # reason, and only positive similarities count.
    at = {x: n for n, x in enumerate(hist)}
    for j, item in enumerate(cands):
        if (n := at.get(item)) is not None:
            sims[j, n] = 0.0
    order = np.argsort(-sims, axis=1, kind="stable")[:, :BECAUSE_MAX]
    positive = (np.take_along_axis(sims, order, axis=1) > 0).tolist()
    picks = order.tolist()
    return {
        item: tuple(hist[o] for o, ok in zip(picks[j], positive[j], strict=True) if ok)
        for j, item in enumerate(cands)
    }


def _namer(title_of: Callable[[str], str] | None) -> Callable[[str], str]:
    def name(item: str) -> str:
        title = title_of(item) if title_of is not None else ""
        if not title:
            return item
        if len(title) > TITLE_CHARS:
            title = title[: TITLE_CHARS - 1].rstrip() + "…"
        return f"“{title}”"

    return name


def _and(name: Callable[[str], str], items: Sequence[str]) -> str:
    names = [name(i) for i in items]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _ago(seconds: float) -> str:
    s = max(0.0, seconds)
    if s < 60:
        return "just now"
    if s < 3600:
        return f"{math.floor(s / 60)} min ago"
    if s < 86400:
        return f"{math.floor(s / 3600)} h ago"
    days = math.floor(s / 86400)
    return f"{days} day ago" if days == 1 else f"{days} days ago"
