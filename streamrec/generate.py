"""A synthetic shop whose behavior log has structure a sequence model can learn.

The world is deterministic by seed. What makes it learnable (and what the tests check):

* Category sizes and item popularity within a category are Zipf, so global popularity is a real
  (but weak) baseline.
* Each user cares about a few categories (a concentrated Dirichlet over a small support), and
  each session sticks mostly to one category drawn from that taste, so a user's history predicts
  the category of their next event far better than global popularity does.
* Items in a category sit on a circular "style" axis. A user has a preferred style per category
  and consecutive browses tend to move to stylistically adjacent items, and users come back to
  items they viewed recently, so the last few items predict the next one.
* Clicks follow browses of the same item (more likely when the item fits the user's style) and
  purchases are only of items clicked earlier in the same session (cheaper items sell more,
  unavailable items never sell).

Timing: seconds to minutes between events in a session, hours to days between sessions, with a
day/night rhythm in session start times.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from streamrec.eventlog import write_events, write_items
from streamrec.events.schema import EVENT_TYPES

BROWSE, CLICK, PURCHASE = (EVENT_TYPES.index(t) for t in ("browse", "click", "purchase"))

_CATEGORY_NAMES = (
    "books", "electronics", "kitchen", "garden", "toys", "shoes", "beauty", "sports", "music",
    "movies", "games", "office", "pets", "baby", "tools", "automotive", "jewelry", "watches",
    "outdoor", "furniture", "lighting", "bedding", "bath", "grocery", "coffee", "tea", "wine",
    "health", "fitness", "camping", "cycling", "travel", "luggage", "crafts", "stationery",
    "phones", "computers", "cameras", "audio", "appliances",
)  # fmt: skip
_ADJECTIVES = (
    "classic", "premium", "compact", "deluxe", "eco", "smart", "vintage", "ultra", "mini", "pro",
    "essential", "basic", "soft", "bright", "bold", "light", "heavy-duty", "portable", "modern",
    "rustic", "sleek", "everyday", "signature", "limited", "original", "natural", "urban", "royal",
)  # fmt: skip
_SYLLABLES = (
    "ka", "lo", "mi", "ra", "ven", "tor", "sel", "dra", "pi", "nu", "zen", "bo", "lux", "fi",
    "mar", "qui", "an", "te", "sol", "vi", "ro", "del", "ga", "or", "ix", "la", "mo", "sta",
)  # fmt: skip
_DEVICES = ("mobile", "desktop", "tablet")
_DEVICE_P = (0.6, 0.32, 0.08)
# Relative share of sessions starting in each hour (UTC): quiet nights, lunch and evening peaks.
_HOUR_WEIGHTS = (
    0.6, 0.35, 0.2, 0.15, 0.15, 0.2, 0.4, 0.8, 1.1, 1.2, 1.2, 1.3,
    1.5, 1.4, 1.2, 1.1, 1.1, 1.2, 1.5, 1.9, 2.1, 2.0, 1.6, 1.0,
)  # fmt: skip

_HOUR_P = np.asarray(_HOUR_WEIGHTS) / sum(_HOUR_WEIGHTS)

_MAX_BROWSES = 60  # caps the geometric tail so one session cannot dominate a user
_RECENT = 12  # how far back a user "returns to" recently viewed items
_MIN_SESSION_GAP_S = 1800.0  # shorter pauses would be the same session by any usual definition
_STAY_ON_DEVICE = 0.85


@dataclass(frozen=True, slots=True)
class GeneratorConfig:
    """Knobs of the synthetic world. Defaults give ~40 events per user."""

    n_users: int = 5000
    n_items: int = 2000
    n_categories: int = 20
    days: int = 30
    seed: int = 0
    sessions_per_user: float = 4.0  # mean; per-user activity varies (Gamma) around it
    browses_per_session: float = 8.0  # mean of a geometric distribution
    start_ts: float = 1_735_689_600.0  # 2025-01-01T00:00:00Z
    category_zipf: float = 1.0  # exponent of category sizes
    item_zipf: float = 1.1  # exponent of item popularity within a category
    taste_categories: float = 2.5  # mean number of categories a user cares about
    taste_alpha: float = 0.6  # Dirichlet concentration over those; small = one dominant category
    explore_prob: float = 0.05  # a session's category comes from global popularity instead
    switch_prob: float = 0.04  # per browse: hop to another category of the user's taste
    repeat_prob: float = 0.12  # per browse: go back to a recently viewed item
    walk_prob: float = 0.45  # per browse: move to a stylistically adjacent item
    style_width: float = 0.1  # width of a user's style preference on the [0, 1) circle
    click_prob: float = 0.25  # base click-through on a browse
    purchase_prob: float = 0.25  # base purchase rate of a click
    unavailable_frac: float = 0.03
    price_median: float = 30.0  # median of per-category median prices
    price_spread: float = 0.9  # sigma (log space) of category medians
    price_item_spread: float = 0.45  # sigma (log space) of item prices within a category

    def __post_init__(self) -> None:
        if self.n_users < 1 or self.days < 1:
            raise ValueError("n_users and days must be >= 1")
        if not 1 <= self.n_categories <= self.n_items // 2:
            raise ValueError("need 1 <= n_categories <= n_items / 2 (two items per category)")
        if self.sessions_per_user < 1 or self.browses_per_session < 1:
            raise ValueError("sessions_per_user and browses_per_session must be >= 1")
        if self.taste_categories < 1 or self.taste_alpha <= 0 or self.style_width <= 0:
            raise ValueError("taste_categories >= 1, taste_alpha > 0, style_width > 0 required")
        probs = (
            self.explore_prob, self.switch_prob, self.repeat_prob, self.walk_prob,
            self.click_prob, self.purchase_prob, self.unavailable_frac,
        )  # fmt: skip
        if not all(0.0 <= p <= 1.0 for p in probs) or self.repeat_prob + self.walk_prob > 1.0:
            raise ValueError("probabilities must lie in [0, 1] and repeat_prob + walk_prob <= 1")


@dataclass(slots=True)
class World:
    """The generated catalog and behavior log (events sorted by ts, file-format dicts)."""

    config: GeneratorConfig
    categories: list[str]
    items: list[dict[str, Any]]
    events: list[dict[str, Any]]


@dataclass(slots=True)
class _Catalog:
    names: list[str]
    members: list[list[int]]  # per category: item indices ordered along the style axis
    style: list[np.ndarray]  # per category: style coordinate, aligned with members
    pop: list[np.ndarray]  # per category: popularity weights, aligned with members
    cat_weight: np.ndarray  # share of traffic a category attracts
    cat_cdf: list[float]
    item_cat: list[int]
    item_pos: list[int]  # index of the item within members[item_cat]
    available: list[bool]
    price_factor: list[float]  # purchase propensity from price relative to category median
    ids: list[str]
    items: list[dict[str, Any]] = field(default_factory=list)


def _zipf_sizes(total: int, n: int, exponent: float, minimum: int) -> list[int]:
    weights = np.arange(1, n + 1, dtype=float) ** -exponent
    share = weights / weights.sum() * (total - minimum * n)
    sizes = np.floor(share).astype(int)
    # Largest remainder keeps the sum exact without biasing any category.
    short = total - minimum * n - int(sizes.sum())
    sizes[np.argsort(share - sizes, kind="stable")[::-1][:short]] += 1
    return [int(s) + minimum for s in sizes]


def _category_names(n: int) -> list[str]:
    base = len(_CATEGORY_NAMES)
    return [
        _CATEGORY_NAMES[c % base] + (f"-{c // base + 1}" if c >= base else "") for c in range(n)
    ]


def _pseudo_word(rng: np.random.Generator) -> str:
    return "".join(_SYLLABLES[s] for s in rng.integers(0, len(_SYLLABLES), rng.integers(2, 4)))


def _build_catalog(cfg: GeneratorConfig, rng: np.random.Generator) -> _Catalog:
    names = _category_names(cfg.n_categories)
    sizes = _zipf_sizes(cfg.n_items, cfg.n_categories, cfg.category_zipf, minimum=2)
    width = max(4, len(str(cfg.n_items - 1)))
    # Opaque ids: the id must not leak the category or the popularity rank.
    id_of = rng.permutation(cfg.n_items)
    ids = [f"i{int(k):0{width}d}" for k in id_of]

    members: list[list[int]] = []
    styles: list[np.ndarray] = []
    pops: list[np.ndarray] = []
    item_cat = [0] * cfg.n_items
    item_pos = [0] * cfg.n_items
    available = [True] * cfg.n_items
    price_factor = [1.0] * cfg.n_items
    items: list[dict[str, Any]] = []
    next_item = 0
    for c, (name, size) in enumerate(zip(names, sizes, strict=True)):
        style = np.sort(rng.random(size))
        ranks = rng.permutation(size) + 1
        pop = ranks.astype(float) ** -cfg.item_zipf
        median = cfg.price_median * math.exp(rng.normal(0.0, cfg.price_spread))
        prices = np.maximum(0.5, median * np.exp(rng.normal(0.0, cfg.price_item_spread, size)))
        avail = rng.random(size) >= cfg.unavailable_frac
        vocab = [_pseudo_word(rng) for _ in range(10)]
        word_idx = rng.integers(0, len(vocab), (size, 2))
        adj_idx = rng.integers(0, len(_ADJECTIVES), size)
        idx = list(range(next_item, next_item + size))
        next_item += size
        for pos, i in enumerate(idx):
            item_cat[i] = c
            item_pos[i] = pos
            available[i] = bool(avail[pos])
            price = round(float(prices[pos]), 2)
            price_factor[i] = min(2.0, max(0.3, math.sqrt(median / price)))
            w1, w2 = (vocab[k] for k in word_idx[pos])
            title = f"{_ADJECTIVES[adj_idx[pos]]} {w1} {w2} {name.split('-')[0]}".title()
            items.append(
                {
                    "item_id": ids[i],
                    "category": name,
                    "price": price,
                    "title": title,
                    "available": available[i],
                }
            )
        members.append(idx)
        styles.append(style)
        pops.append(pop / pop.sum())

    cat_weight = np.asarray(sizes, dtype=float)
    items.sort(key=lambda it: it["item_id"])
    return _Catalog(
        names=names,
        members=members,
        style=styles,
        pop=pops,
        cat_weight=cat_weight / cat_weight.sum(),
        cat_cdf=np.cumsum(cat_weight).tolist(),
        item_cat=item_cat,
        item_pos=item_pos,
        available=available,
        price_factor=price_factor,
        ids=ids,
        items=items,
    )


class _UserTaste:
    """One user's preferences; per-category item preferences are drawn on first use."""

    __slots__ = ("_cat", "_cdf", "_explore", "_prefs", "_rng", "_support", "_width")

    def __init__(self, cfg: GeneratorConfig, cat: _Catalog, rng: np.random.Generator) -> None:
        n_cat = len(cat.names)
        k = min(n_cat, 1 + int(rng.poisson(cfg.taste_categories - 1.0)))
        # Big categories attract more users, so category popularity is a real baseline.
        self._support: list[int] = rng.choice(
            n_cat, size=k, replace=False, p=cat.cat_weight
        ).tolist()
        self._cdf: list[float] = np.cumsum(rng.dirichlet(np.full(k, cfg.taste_alpha))).tolist()
        self._explore = cfg.explore_prob
        self._prefs: dict[int, tuple[list[float], list[float]]] = {}
        self._cat = cat
        self._rng = rng
        self._width = cfg.style_width

    def category(self, u_pick: float, u_explore: float = 1.0) -> int:
        """A category by taste, or by global popularity when u_explore < explore_prob."""
        if u_explore < self._explore:
            cdf = self._cat.cat_cdf
            return min(bisect_right(cdf, u_pick * cdf[-1]), len(cdf) - 1)
        k = bisect_right(self._cdf, u_pick * self._cdf[-1])
        return self._support[min(k, len(self._support) - 1)]

    def prefs(self, c: int) -> tuple[list[float], list[float]]:
        """(cumulative item weights, style fit in [0, 1]) over members[c]."""
        found = self._prefs.get(c)
        if found is None:
            center = self._rng.random()
            d = np.abs(self._cat.style[c] - center)
            d = np.minimum(d, 1.0 - d)  # circular, so no item is disadvantaged by sitting at an end
            fit = np.exp(-0.5 * (d / self._width) ** 2)
            # The 0.15 floor keeps popular items reachable for every user, as in real shops.
            cdf = np.cumsum(self._cat.pop[c] * (0.15 + fit))
            found = self._prefs[c] = (cdf.tolist(), fit.tolist())
        return found


def _simulate_user(
    u: int,
    cfg: GeneratorConfig,
    cat: _Catalog,
    rng: np.random.Generator,
    out: list[tuple[float, int, int, int, int]],
    sessions: list[tuple[int, int, str]],
) -> None:
    """Append the user's events as (t, user, item, type, session) in time order."""
    taste = _UserTaste(cfg, cat, rng)
    activity = rng.gamma(2.0, 0.5)  # mean 1: a few heavy users, many light ones
    n_sessions = 1 + int(rng.poisson(activity * (cfg.sessions_per_user - 1.0)))
    starts = np.sort(
        rng.integers(0, cfg.days, n_sessions) * 86400.0
        + rng.choice(24, n_sessions, p=_HOUR_P) * 3600.0
        + rng.random(n_sessions) * 3600.0
    ).tolist()
    horizon = cfg.days * 86400.0
    main_device = int(rng.choice(3, p=_DEVICE_P))
    recent: list[int] = []
    last_t = -math.inf

    for k, planned in enumerate(starts):
        t = max(planned, last_t + _MIN_SESSION_GAP_S + rng.exponential(3 * 3600.0))
        if t >= horizon:
            break
        session = len(sessions)
        on_main = rng.random() < _STAY_ON_DEVICE
        device = _DEVICES[main_device if on_main else int(rng.choice(3, p=_DEVICE_P))]
        sessions.append((u, k, device))

        n = min(int(rng.geometric(1.0 / cfg.browses_per_session)), _MAX_BROWSES)
        r = rng.random((n, 7)).tolist()
        steps = (rng.geometric(0.5, n) * (2 * rng.integers(0, 2, n) - 1)).tolist()
        gaps = np.clip(rng.lognormal(math.log(25.0), 0.9, n), 3.0, 900.0).tolist()
        click_delay = rng.uniform(2.0, 20.0, n).tolist()
        buy_delay = rng.uniform(10.0, 120.0, n).tolist()

        c = taste.category(rng.random(), u_explore=rng.random())
        members = cat.members[c]
        pos = -1
        cart: list[int] = []
        for j in range(n):
            r_kind, r_item, r_switch, r_click, r_buy, r_when, r_cat = r[j]
            if j > 0 and r_switch < cfg.switch_prob:
                c = taste.category(r_cat)
                members = cat.members[c]
                pos = -1
            # Going back never means "the item already on screen", except across sessions.
            back = 0 if j == 0 else 1
            pool = min(len(recent) - back, _RECENT)
            if pool > 0 and r_kind < cfg.repeat_prob:
                item = recent[-1 - back - int(r_item * pool)]
                c = cat.item_cat[item]
                members = cat.members[c]
                pos = cat.item_pos[item]
            elif pos >= 0 and r_kind < cfg.repeat_prob + cfg.walk_prob:
                pos = (pos + steps[j]) % len(members)
            else:
                pos = -1  # a fresh pick by the user's preferences, below
            cdf, fit = taste.prefs(c)
            if pos < 0:
                pos = min(bisect_right(cdf, r_item * cdf[-1]), len(members) - 1)
            item = members[pos]

            if j > 0:
                t = max(t + gaps[j], last_t + 1.0)
            out.append((t, u, item, BROWSE, session))
            last_t = t
            if item not in recent[-3:]:
                recent.append(item)
                del recent[:-_RECENT]

            if r_click < cfg.click_prob * (0.4 + 1.2 * fit[pos]):
                last_t = t + click_delay[j]
                out.append((last_t, u, item, CLICK, session))
                if cat.available[item] and r_buy < cfg.purchase_prob * cat.price_factor[item]:
                    if r_when < 0.6:
                        last_t += buy_delay[j]
                        out.append((last_t, u, item, PURCHASE, session))
                    elif item not in cart:
                        cart.append(item)  # bought at checkout, at the end of the session
        for item in cart:
            last_t += float(rng.uniform(15.0, 60.0))
            out.append((last_t, u, item, PURCHASE, session))


def generate(cfg: GeneratorConfig) -> World:
    """Build the catalog and simulate every user; events come back sorted by ts."""
    rng = np.random.default_rng(cfg.seed)
    cat = _build_catalog(cfg, rng)
    width = max(4, len(str(cfg.n_users - 1)))
    user_ids = [f"u{u:0{width}d}" for u in range(cfg.n_users)]

    raw: list[tuple[float, int, int, int, int]] = []
    sessions: list[tuple[int, int, str]] = []
    for u in range(cfg.n_users):
        _simulate_user(u, cfg, cat, rng, raw, sessions)

    ts = np.round(cfg.start_ts + np.fromiter((e[0] for e in raw), float, len(raw)), 3)
    # Stable: users were simulated one after another, so equal ts keep each user's order.
    order = np.argsort(ts, kind="stable").tolist()
    ts_list = ts.tolist()
    session_names = [f"{user_ids[u]}-s{k}" for u, k, _ in sessions]
    prefix = f"g{cfg.seed}-"
    events: list[dict[str, Any]] = []
    append = events.append
    for n, idx in enumerate(order):
        _, u, item, code, s = raw[idx]
        append(
            {
                "event_id": f"{prefix}{n}",
                "user_id": user_ids[u],
                "item_id": cat.ids[item],
                "type": EVENT_TYPES[code],
                "ts": ts_list[idx],
                "context": {"session": session_names[s], "device": sessions[s][2]},
            }
        )
    return World(config=cfg, categories=cat.names, items=cat.items, events=events)


def write_world(world: World, out_dir: str | Path, *, compress: bool = False) -> tuple[Path, Path]:
    """Write items.jsonl and events.jsonl (``.gz`` when compress) into out_dir."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    suffix = ".jsonl.gz" if compress else ".jsonl"
    items_path = out / f"items{suffix}"
    events_path = out / f"events{suffix}"
    write_items(items_path, world.items)
    write_events(events_path, world.events)
    return items_path, events_path
