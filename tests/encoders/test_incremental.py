"""The serving path must equal a plain full forward over each user's WHOLE history."""

from __future__ import annotations

import random

import pytest
import torch

from encoders.incremental import IncrementalEncoder, StepRequest
from encoders.model import EncoderConfig, StreamRecModel
from tests.encoders.helpers import Event, random_event, random_model

TOL = 1e-4
N_ROWS = 60


def small_cfg(n_layers: int = 2, window: int = 8, n_heads: int = 2) -> EncoderConfig:
    return EncoderConfig(
        d_model=32,
        n_layers=n_layers,
        n_heads=n_heads,
        window=window,
        dropout=0.1,
        n_item_ids=40,
        n_categories=5,
    )


def budget(model: StreamRecModel, users: int) -> int:
    return IncrementalEncoder(model, 1).bytes_per_user * users


def request(user: str, history: list[Event], ctx: int) -> StepRequest:
    tail = history[-ctx:]
    return StepRequest(
        user_id=user,
        position=len(history) - 1,
        rows=[e[0] for e in tail],
        types=[e[1] for e in tail],
        gaps=[e[2] for e in tail],
    )


def reference(model: StreamRecModel, history: list[Event], item_vecs: torch.Tensor) -> torch.Tensor:
    return model.encode_full(
        [e[0] for e in history], [e[1] for e in history], [e[2] for e in history], item_vecs
    )


def stream(
    model: StreamRecModel,
    enc: IncrementalEncoder,
    item_vecs: torch.Tensor,
    n_users: int,
    seed: int,
    max_batch: int = 5,
    tol: float | None = None,
) -> float:
    """Interleave users with histories of 2.5W..4W events in batched step calls (a call may hold
    the same user more than once); compare EVERY output with the full-history reference."""
    rng = random.Random(seed)
    W, ctx = model.cfg.window, model.cfg.context_events
    lengths = {f"user-{u}": rng.randint(int(2.5 * W), 4 * W) for u in range(n_users)}
    schedule = [u for u, n in lengths.items() for _ in range(n)]
    rng.shuffle(schedule)
    histories: dict[str, list[Event]] = {u: [] for u in lengths}
    worst, i = 0.0, 0
    while i < len(schedule):
        k = rng.randint(1, max_batch)
        reqs, refs = [], []
        for user in schedule[i : i + k]:
            h = histories[user]
            h.append(random_event(rng, N_ROWS, first=not h))
            reqs.append(request(user, h, ctx))
            refs.append(reference(model, h, item_vecs))
        out = enc.step(reqs)
        assert out.shape == (len(reqs), model.cfg.d_model)
        ref = torch.stack(refs)
        diff = float((out - ref).abs().max())
        assert diff <= (TOL if tol is None else tol), f"differs from the full forward by {diff}"
        if tol is not None:  # a stored-precision tolerance: the direction must hold too
            cos = torch.nn.functional.cosine_similarity(out, ref, dim=1)
            assert float(cos.min()) >= 0.99999
        worst = max(worst, diff)
        assert len(enc._slot_of) <= enc.capacity
        i += k
    assert all(len(h) == lengths[u] for u, h in histories.items())
    return worst


@pytest.mark.parametrize(("n_layers", "window", "n_heads"), [(1, 8, 2), (2, 8, 2), (3, 5, 4)])
def test_incremental_equals_full_forward(n_layers: int, window: int, n_heads: int) -> None:
    model = random_model(small_cfg(n_layers, window, n_heads), seed=n_layers)
    item_vecs = torch.randn(N_ROWS, model.cfg.d_model)
    enc = IncrementalEncoder(model, budget(model, 100))
    enc.set_item_vectors(item_vecs)
    worst = stream(model, enc, item_vecs, n_users=5, seed=window)
    stats = enc.stats
    assert stats.misses == 5 and stats.evictions == 0  # one rebuild per new user, then all hits
    assert stats.hits > 5 * 2 * window
    assert worst <= TOL


def test_incremental_equals_full_forward_default_config() -> None:
    model = random_model(EncoderConfig(n_item_ids=40, n_categories=5), seed=7)
    item_vecs = torch.randn(N_ROWS, model.cfg.d_model)
    enc = IncrementalEncoder(model, 64 * 2**20)
    enc.set_item_vectors(item_vecs)
    stream(model, enc, item_vecs, n_users=3, seed=3, max_batch=4)
    assert enc.stats.hits > 3 * 100


def test_half_precision_cache_stays_within_its_tolerance() -> None:
    """The rings stored in float16 (the worker's default) serve vectors within 0.02 of the full
    float32 forward pass (elements are O(1), norms ~8 here) and at cosine >= 0.99999, for twice
    the users per MB."""
    model = random_model(EncoderConfig(n_item_ids=40, n_categories=5), seed=7)
    item_vecs = torch.randn(N_ROWS, model.cfg.d_model)
    enc = IncrementalEncoder(model, 64 * 2**20, torch.float16)
    enc.set_item_vectors(item_vecs)
    worst = stream(model, enc, item_vecs, n_users=3, seed=3, max_batch=4, tol=0.02)
    assert enc.stats.hits > 3 * 100
    assert worst > TOL  # it is not exact: the tolerance above is what it buys the memory with
    full = IncrementalEncoder(model, 64 * 2**20)
    assert enc.capacity >= 1.99 * full.capacity


@pytest.mark.parametrize("capacity", [1, 2])
def test_tiny_cache_evicts_and_rebuilds_exactly(capacity: int) -> None:
    model = random_model(small_cfg(), seed=11)
    item_vecs = torch.randn(N_ROWS, model.cfg.d_model)
    enc = IncrementalEncoder(model, budget(model, capacity))
    assert enc.capacity == capacity
    enc.set_item_vectors(item_vecs)
    stream(model, enc, item_vecs, n_users=4, seed=capacity)
    stats = enc.stats
    assert stats.evictions > 0 and stats.misses > 4
    assert stats.cached_users <= capacity


def test_budget_below_one_user_still_serves() -> None:
    model = random_model(small_cfg(), seed=12)
    item_vecs = torch.randn(N_ROWS, model.cfg.d_model)
    enc = IncrementalEncoder(model, 1)
    assert enc.capacity == 1
    enc.set_item_vectors(item_vecs)
    stream(model, enc, item_vecs, n_users=3, seed=5)


@pytest.mark.parametrize(("n_layers", "window"), [(1, 8), (2, 8), (3, 5)])
def test_runs_of_new_events_go_through_in_one_pass_exactly(n_layers: int, window: int) -> None:
    """Users with 2..W new events past their cached state (different counts in one call, so
    the chunk is padded) are served by one ``extend`` pass, not one step per event, and every
    output equals the full forward over the history so far."""
    model = random_model(small_cfg(n_layers, window), seed=20 + n_layers)
    item_vecs = torch.randn(N_ROWS, model.cfg.d_model)
    ctx = model.cfg.context_events
    enc = IncrementalEncoder(model, budget(model, 10))
    enc.set_item_vectors(item_vecs)
    rng = random.Random(n_layers)
    histories: dict[str, list[Event]] = {f"u{u}": [] for u in range(4)}
    for user, h in histories.items():  # warm: each user cached after a rebuild
        for _ in range(rng.randint(1, 3 * window)):
            h.append(random_event(rng, N_ROWS, first=not h))
        enc.step([request(user, h, ctx)])

    def no_single_steps(*args: object) -> None:
        raise AssertionError("a run of new events was stepped one by one")

    model.user_tower.step = no_single_steps  # type: ignore[method-assign,assignment]
    for call in range(6):
        reqs, refs = [], []
        for u, (user, h) in enumerate(histories.items()):
            for _ in range(2 + (u + call) % (window - 1)):  # 2..W new events
                h.append(random_event(rng, N_ROWS, first=False))
                reqs.append(request(user, h, ctx))
                refs.append(reference(model, h, item_vecs))
        before = enc.stats
        out = enc.step(reqs)
        diff = float((out - torch.stack(refs)).abs().max())
        assert diff <= TOL, f"extend differs from the full forward by {diff}"
        after = enc.stats
        assert after.hits - before.hits == len(reqs) and after.misses == before.misses


def test_same_user_several_times_in_one_call() -> None:
    model = random_model(small_cfg(), seed=13)
    item_vecs = torch.randn(N_ROWS, model.cfg.d_model)
    ctx = model.cfg.context_events
    enc = IncrementalEncoder(model, budget(model, 10))
    enc.set_item_vectors(item_vecs)
    rng = random.Random(0)
    hist: dict[str, list[Event]] = {"a": [], "b": []}
    for call in range(6):
        reqs, refs = [], []
        for user in ["a", "a", "b", "a", "b", "a"]:  # several events of one user, in order
            hist[user].append(random_event(rng, N_ROWS, first=not hist[user]))
            reqs.append(request(user, hist[user], ctx))
            refs.append(reference(model, hist[user], item_vecs))
        out = enc.step(reqs)
        assert float((out - torch.stack(refs)).abs().max()) <= TOL
        if call == 0:
            assert enc.stats.misses == 2  # only each user's first event is a rebuild
    assert enc.stats.misses == 2


def test_out_of_order_replay_and_restart_rebuild_exactly() -> None:
    model = random_model(small_cfg(), seed=14)
    item_vecs = torch.randn(N_ROWS, model.cfg.d_model)
    ctx = model.cfg.context_events
    enc = IncrementalEncoder(model, budget(model, 10))
    enc.set_item_vectors(item_vecs)
    rng = random.Random(1)
    h: list[Event] = []

    def check(e: IncrementalEncoder) -> None:
        out = e.step([request("u", h, ctx)])[0]
        assert float((out - reference(model, h, item_vecs)).abs().max()) <= TOL

    for _ in range(20):
        h.append(random_event(rng, N_ROWS, first=not h))
        check(enc)
    misses = enc.stats.misses
    # an event the encoder never saw (skipped position): must rebuild, not extend the cache
    h.append(random_event(rng, N_ROWS, first=False))
    h.append(random_event(rng, N_ROWS, first=False))
    check(enc)
    assert enc.stats.misses == misses + 1
    # a replayed position with different content: rebuild
    h[-1] = random_event(rng, N_ROWS, first=False)
    check(enc)
    assert enc.stats.misses == misses + 2
    h.append(random_event(rng, N_ROWS, first=False))
    check(enc)
    assert enc.stats.misses == misses + 2  # back to incremental
    # a restarted worker has an empty cache
    fresh = IncrementalEncoder(model, budget(model, 10))
    fresh.set_item_vectors(item_vecs)
    check(fresh)
    assert fresh.stats.misses == 1
    # explicit eviction
    assert enc.evict("u") and not enc.evict("u")
    h.append(random_event(rng, N_ROWS, first=False))
    check(enc)
    assert enc.stats.misses == misses + 3


def test_truncated_history_is_served_from_what_is_given() -> None:
    """Fewer events than context_events (the caller kept too few): the state is that of a
    history starting at the oldest given event, and later steps stay consistent with it."""
    model = random_model(small_cfg(), seed=15)
    item_vecs = torch.randn(N_ROWS, model.cfg.d_model)
    enc = IncrementalEncoder(model, budget(model, 4))
    enc.set_item_vectors(item_vecs)
    rng = random.Random(2)
    h = [random_event(rng, N_ROWS, first=i == 0) for i in range(30)]
    keep = 5  # < window, so the ring buffers are partly unknown
    for step in range(12):
        given = h[-keep - step :]
        req = StepRequest(
            "t", len(h) - 1, [e[0] for e in given], [e[1] for e in given], [e[2] for e in given]
        )
        out = enc.step([req])[0]
        assert float((out - reference(model, given, item_vecs)).abs().max()) <= TOL
        h.append(random_event(rng, N_ROWS, first=False))
    assert enc.stats.truncated == 1 and enc.stats.hits == 11


def test_catalog_growth_keeps_the_cache() -> None:
    model = random_model(small_cfg(), seed=16)
    item_vecs = torch.randn(N_ROWS, model.cfg.d_model)
    ctx = model.cfg.context_events
    enc = IncrementalEncoder(model, budget(model, 4))
    enc.set_item_vectors(item_vecs)
    rng = random.Random(3)
    h: list[Event] = []
    for _ in range(15):
        h.append(random_event(rng, N_ROWS, first=not h))
        enc.step([request("g", h, ctx)])
    grown = torch.cat([item_vecs, torch.randn(10, model.cfg.d_model)])
    enc.set_item_vectors(grown)
    h.append((N_ROWS + 3, 1, 5.0))  # an event on a new row
    out = enc.step([request("g", h, ctx)])[0]
    assert float((out - reference(model, h, grown)).abs().max()) <= TOL
    assert enc.stats.misses == 1
    enc.set_item_vectors(item_vecs[:10])  # shrinking: rows may mean other items now
    assert enc.stats.cached_users == 0


def test_memory_is_bounded_by_the_budget() -> None:
    model = random_model(small_cfg(), seed=17)
    item_vecs = torch.randn(N_ROWS, model.cfg.d_model)
    cache_bytes = budget(model, 7) + 123
    enc = IncrementalEncoder(model, cache_bytes)
    enc.set_item_vectors(item_vecs)
    assert enc.capacity == 7
    assert enc.bytes_per_user * enc.capacity <= cache_bytes
    pool_bytes = sum(t.numel() * t.element_size() for t in (enc._rings, enc._meta))
    assert pool_bytes == enc.bytes_per_user * enc.capacity
    rng = random.Random(4)
    for call in range(30):
        users = [f"m{rng.randrange(40)}" for _ in range(rng.randint(1, 20))]
        reqs = []
        for u in users:
            ev = random_event(rng, N_ROWS, first=True)
            reqs.append(
                StepRequest(
                    u,
                    call,
                    [ev[0]] * min(call + 1, 15),
                    [ev[1]] * min(call + 1, 15),
                    [ev[2]] * min(call + 1, 15),
                )
            )
        enc.step(reqs)
        assert enc.stats.cached_users <= enc.capacity
        assert enc._rings.shape[0] == enc.capacity  # the pool never grows
        assert len(enc._free) + len(enc._slot_of) == enc.capacity
        assert len(set(enc._slot_of.values())) == len(enc._slot_of)  # no shared slots
    assert enc.stats.evictions > 0
    enc.clear()
    assert enc.stats.cached_users == 0


def test_rejects_malformed_requests() -> None:
    model = random_model(small_cfg(), seed=18)
    enc = IncrementalEncoder(model, budget(model, 2))
    with pytest.raises(RuntimeError):
        enc.step([StepRequest("x", 0, [1], [0], [-1.0])])
    enc.set_item_vectors(torch.randn(N_ROWS, model.cfg.d_model))
    assert enc.step([]).shape == (0, model.cfg.d_model)
    for bad in (
        StepRequest("x", 1, [1, 2], [0], [-1.0, 1.0]),
        StepRequest("x", 0, [], [], []),
        StepRequest("x", 0, [N_ROWS], [0], [-1.0]),
        StepRequest("x", 0, [1], [3], [-1.0]),
        StepRequest("x", 0, [1, 2], [0, 0], [-1.0, 1.0]),
    ):
        with pytest.raises(ValueError):
            enc.step([bad])
    with pytest.raises(ValueError):
        enc.set_item_vectors(torch.randn(N_ROWS, model.cfg.d_model + 1))
