"""Serving path: one user-tower step per event, batched across users, with a bounded state cache.

A user's state is the user tower's K/V ring buffers (see ``UserTower``) plus the position of
their latest event and the oldest position the buffers describe. All states live in one
preallocated pool tensor sized from the configured byte budget; an LRU map assigns users to pool
slots. A user whose cached position is exactly one behind the request advances in O(W); anyone
else (new, evicted, restarted worker, skipped or replayed event) is rebuilt from the request's
recent events, which is exact because the request carries ``context_events`` of them.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from encoders.model import StreamRecModel, gap_bucket, left_pad

log = logging.getLogger(__name__)

# Users rebuilt per forward pass: bounds the [B, H, T, T] attention scratch of a rebuild burst
# (e.g. after a restart) without giving up batching.
REBUILD_CHUNK = 256


@dataclass
class StepRequest:
    """One new event of one user. ``rows``/``types``/``gaps`` describe the user's last
    min(position+1, context_events) events, oldest first, ending with the new event; only the
    new event is used on a cache hit, all of them on a rebuild. A request that will hit
    (``cached_position()`` is one behind it) may carry the newest event alone."""

    user_id: str
    position: int  # 0-based index of the new event in the user's WHOLE history
    rows: Sequence[int]  # item-matrix rows (index the matrix given to set_item_vectors)
    types: Sequence[int]  # event-type codes, same length
    gaps: Sequence[float]  # seconds since each event's predecessor (-1.0 for a first event)


@dataclass
class CacheStats:
    hits: int = 0  # incremental O(W) steps
    misses: int = 0  # every miss is a rebuild from the request's events
    evictions: int = 0  # users dropped to make room
    truncated: int = 0  # rebuilds given fewer events than context_events (not exact)
    cached_users: int = 0
    capacity: int = 0


CACHE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class IncrementalEncoder:
    """``cache_dtype`` is how the K/V rings are stored; the arithmetic stays in the model's
    dtype. float32 reproduces a full forward pass to float rounding; float16 halves the bytes
    per user (twice the users per MB) at a stated tolerance (tests/encoders/test_incremental.py)."""

    def __init__(
        self, model: StreamRecModel, cache_bytes: int, cache_dtype: torch.dtype | None = None
    ) -> None:
        self.model = model.eval()
        cfg = model.cfg
        self.cfg = cfg
        self.dtype = next(model.parameters()).dtype  # compute
        dtype = self.dtype if cache_dtype is None else cache_dtype  # storage
        self._ring_shape = (cfg.n_layers, 2, cfg.n_heads, cfg.window, cfg.head_dim)
        ring_elems = cfg.n_layers * 2 * cfg.window * cfg.d_model
        # ring buffers + (position, start) as int64
        self.bytes_per_user = ring_elems * dtype.itemsize + 2 * 8
        # at least one slot, so a budget below one user still serves (by rebuilding every time)
        self.capacity = max(1, int(cache_bytes) // self.bytes_per_user)
        # torch.empty: pages are committed as users arrive, the bound is fixed up front
        self._rings = torch.empty((self.capacity, *self._ring_shape), dtype=dtype)
        self._meta = torch.zeros((self.capacity, 2), dtype=torch.long)  # position, start
        self._slot_of: OrderedDict[str, int] = OrderedDict()  # LRU order, oldest first
        self._free = list(range(self.capacity - 1, -1, -1))
        self._item_vecs: Tensor | None = None
        self._stats = CacheStats(capacity=self.capacity)

    # -- configuration ---------------------------------------------------------------------------

    def set_item_vectors(self, item_vecs: Tensor) -> None:
        """Serving item matrix [N, d]; request rows index it. Kept by reference (no copy), so
        in-place updates of the caller's matrix are seen.

        Cached states hold K/V computed from the item vectors current when each event was
        encoded. Appending rows (catalog growth) keeps them valid; if existing rows get different
        vectors (new model, re-embedded items) call ``clear()`` for exact rebuilds. A shrinking
        matrix clears the cache, as cached rows may no longer mean the same items."""
        if item_vecs.dim() != 2 or item_vecs.shape[1] != self.cfg.d_model:
            raise ValueError(
                f"item vectors must be [N, {self.cfg.d_model}], got {tuple(item_vecs.shape)}"
            )
        vecs = item_vecs.detach().to(self.dtype)
        if self._item_vecs is not None and vecs.shape[0] < self._item_vecs.shape[0]:
            self.clear()
        self._item_vecs = vecs

    @property
    def stats(self) -> CacheStats:
        self._stats.cached_users = len(self._slot_of)
        return CacheStats(**vars(self._stats))

    def cached_position(self, user_id: str) -> int | None:
        """Position of the newest event the user's cached state describes (None: not cached).
        A request at exactly one past it is a hit and needs only its newest event."""
        slot = self._slot_of.get(user_id)
        return None if slot is None else int(self._meta[slot, 0])

    def rewind_one(self, user_id: str) -> bool:
        """Forget the user's newest cached event, so the next request may be at that position
        again (an event that belongs just before it arrived late). Exact: the ring still holds
        the W-1 positions before it, which is all a step at that position attends to, and the
        step overwrites the forgotten event's slot. False when there is nothing to rewind."""
        slot = self._slot_of.get(user_id)
        if slot is None:
            return False
        position, start = (int(v) for v in self._meta[slot])
        if position <= start:
            return False  # it describes a single event: nothing would be left
        self._meta[slot, 0] = position - 1
        return True

    def evict(self, user_id: str) -> bool:
        slot = self._slot_of.pop(user_id, None)
        if slot is None:
            return False
        self._free.append(slot)
        return True

    def clear(self) -> None:
        self._slot_of.clear()
        self._free = list(range(self.capacity - 1, -1, -1))

    # -- the step --------------------------------------------------------------------------------

    @torch.no_grad()
    def step(self, requests: Sequence[StepRequest]) -> Tensor:
        """One user vector per request [B, d], in request order. A user may appear several times
        (their events in order); such requests are processed in rounds, one event per user each."""
        d = self.cfg.d_model
        out = torch.empty((len(requests), d), dtype=self.dtype)
        if not requests:
            return out
        if self._item_vecs is None:
            raise RuntimeError("set_item_vectors() must be called before step()")
        for r in requests:
            self._check(r)
        if self.model.training:
            self.model.eval()  # someone trained it in between; dropout must be off here

        # A user's consecutive new events right after their cached position go through the tower
        # in one pass (``extend``); everything else in rounds of one event per user.
        rest = self._extend_runs(requests, out)
        rounds: list[list[int]] = []
        seen: dict[str, int] = {}
        for i in rest:
            r = requests[i]
            k = seen.get(r.user_id, 0)
            seen[r.user_id] = k + 1
            if k == len(rounds):
                rounds.append([])
            rounds[k].append(i)

        for batch in rounds:
            cached = [(i, self._slot_of.get(requests[i].user_id)) for i in batch]
            known = [s for _, s in cached if s is not None]
            positions = self._meta[torch.tensor(known, dtype=torch.long), 0].tolist()
            cached_pos = iter(positions)
            hits: list[tuple[int, int]] = []
            misses: list[int] = []
            for i, slot in cached:
                if slot is not None and next(cached_pos) == requests[i].position - 1:
                    hits.append((i, slot))
                else:
                    misses.append(i)
            if hits:
                self._advance(requests, hits, out)
            # shortest histories first, so a chunk is padded to lengths near its own
            misses.sort(key=lambda i: len(requests[i].rows))
            for start in range(0, len(misses), REBUILD_CHUNK):
                self._rebuild(requests, misses[start : start + REBUILD_CHUNK], out)
        return out

    def _extend_runs(self, requests: Sequence[StepRequest], out: Tensor) -> list[int]:
        """Serve every user with 2..W requests at consecutive positions starting just past their
        cached one in one batched ``extend``; returns the indices of the other requests."""
        by_user: dict[str, list[int]] = {}
        for i, r in enumerate(requests):
            by_user.setdefault(r.user_id, []).append(i)
        W = self.cfg.window
        runs = [
            (idx, slot)
            for user, idx in by_user.items()
            if 1 < len(idx) <= W and (slot := self._slot_of.get(user)) is not None
        ]
        if runs:
            cached = self._meta[torch.tensor([s for _, s in runs]), 0].tolist()
            runs = [
                (idx, slot)
                for (idx, slot), c in zip(runs, cached, strict=True)
                if [requests[i].position for i in idx] == list(range(c + 1, c + 1 + len(idx)))
            ]
        if not runs:
            return list(range(len(requests)))
        self._extend(requests, runs, out)
        done = {i for idx, _ in runs for i in idx}
        return [i for i in range(len(requests)) if i not in done]

    def _extend(
        self, requests: Sequence[StepRequest], runs: list[tuple[list[int], int]], out: Tensor
    ) -> None:
        assert self._item_vecs is not None
        tower = self.model.user_tower
        B, K = len(runs), max(len(idx) for idx, _ in runs)
        rows = torch.zeros((B, K), dtype=torch.long)
        types = torch.zeros((B, K), dtype=torch.long)
        gaps = torch.full((B, K), -1.0, dtype=torch.float64)
        for b, (idx, _) in enumerate(runs):
            off = K - len(idx)
            rows[b, off:] = torch.tensor([requests[i].rows[-1] for i in idx])
            types[b, off:] = torch.tensor([requests[i].types[-1] for i in idx])
            gaps[b, off:] = torch.tensor([requests[i].gaps[-1] for i in idx], dtype=torch.float64)
        slots = torch.tensor([s for _, s in runs], dtype=torch.long)
        n_new = torch.tensor([len(idx) for idx, _ in runs], dtype=torch.long)
        last = torch.tensor([requests[idx[-1]].position for idx, _ in runs], dtype=torch.long)
        rings = self._rings.index_select(0, slots).to(self.dtype)
        starts = self._meta.index_select(0, slots)[:, 1]
        tokens = tower.embed(self._item_vecs[rows], types, gap_bucket(gaps, self.cfg.n_gap_buckets))
        y = tower.extend(tokens, rings, last, n_new, starts)
        for b, (idx, _) in enumerate(runs):
            out[idx] = y[b, K - len(idx) :]
            self._slot_of.move_to_end(requests[idx[-1]].user_id)
        self._rings.index_copy_(0, slots, rings.to(self._rings.dtype))
        self._meta[slots, 0] = last
        self._stats.hits += int(n_new.sum())

    def _check(self, r: StepRequest) -> None:
        n = len(r.rows)
        if n == 0 or len(r.types) != n or len(r.gaps) != n:
            raise ValueError(
                f"user {r.user_id!r}: rows/types/gaps must be non-empty and of equal length "
                f"(got {n}/{len(r.types)}/{len(r.gaps)})"
            )
        if r.position < n - 1:
            raise ValueError(f"user {r.user_id!r}: {n} events cannot end at position {r.position}")
        assert self._item_vecs is not None
        n_rows = self._item_vecs.shape[0]
        if min(r.rows) < 0 or max(r.rows) >= n_rows:
            raise ValueError(f"user {r.user_id!r}: item row out of range [0, {n_rows})")
        if min(r.types) < 0 or max(r.types) >= self.cfg.n_event_types:
            raise ValueError(f"user {r.user_id!r}: event type out of range")

    def _advance(
        self, requests: Sequence[StepRequest], hits: list[tuple[int, int]], out: Tensor
    ) -> None:
        """One batched O(W) step for users whose cache is exactly one event behind."""
        assert self._item_vecs is not None
        tower = self.model.user_tower
        idx = [i for i, _ in hits]
        slots = torch.tensor([s for _, s in hits], dtype=torch.long)
        positions = torch.tensor([requests[i].position for i in idx], dtype=torch.long)
        rows = torch.tensor([requests[i].rows[-1] for i in idx], dtype=torch.long)
        types = torch.tensor([requests[i].types[-1] for i in idx], dtype=torch.long)
        gaps = torch.tensor([requests[i].gaps[-1] for i in idx], dtype=torch.float64)
        rings = self._rings.index_select(0, slots).to(self.dtype)
        starts = self._meta.index_select(0, slots)[:, 1]
        tokens = tower.embed(self._item_vecs[rows], types, gap_bucket(gaps, self.cfg.n_gap_buckets))
        out[idx] = tower.step(tokens, rings, positions, starts)
        self._rings.index_copy_(0, slots, rings.to(self._rings.dtype))
        self._meta[slots, 0] = positions
        for i in idx:
            self._slot_of.move_to_end(requests[i].user_id)
        self._stats.hits += len(hits)

    def _rebuild(self, requests: Sequence[StepRequest], misses: list[int], out: Tensor) -> None:
        """Batched exact rebuild from the requests' recent events (left-padded), then cache."""
        assert self._item_vecs is not None
        ctx = self.cfg.context_events
        seqs = []
        for i in misses:
            r = requests[i]
            n = min(len(r.rows), ctx)  # more than the receptive field cannot change anything
            if n < min(r.position + 1, ctx):
                self._stats.truncated += 1
            seqs.append((r.rows[-n:], r.types[-n:], r.gaps[-n:]))
        B = len(misses)
        rows, types, gap_buckets, valid = left_pad(seqs, self.cfg.n_gap_buckets)
        lengths = [len(s[0]) for s in seqs]
        positions = torch.tensor([requests[i].position for i in misses], dtype=torch.long)
        y, rings = self.model.user_tower.prefill(
            self._item_vecs[rows],
            types,
            gap_buckets,
            valid,
            positions,
        )
        out[misses] = y
        self._stats.misses += B

        # Assign slots in request order; with more misses than capacity a later user may evict
        # an earlier one of this batch, so keep one writer per slot (index_copy_ with duplicate
        # indices has no defined winner).
        writer: dict[int, int] = {}
        for b, i in enumerate(misses):
            writer[self._slot_for(requests[i].user_id)] = b
        slots = torch.tensor(list(writer), dtype=torch.long)
        src = torch.tensor(list(writer.values()), dtype=torch.long)
        self._rings.index_copy_(0, slots, rings.index_select(0, src).to(self._rings.dtype))
        meta = torch.stack([positions, positions - torch.tensor(lengths) + 1], dim=1)
        self._meta.index_copy_(0, slots, meta.index_select(0, src))

    def _slot_for(self, user_id: str) -> int:
        slot = self._slot_of.get(user_id)
        if slot is not None:
            self._slot_of.move_to_end(user_id)
            return slot
        if self._free:
            slot = self._free.pop()
        else:
            _, slot = self._slot_of.popitem(last=False)
            self._stats.evictions += 1
        self._slot_of[user_id] = slot
        return slot
