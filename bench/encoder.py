"""Per-event cost of the serving path, side by side on the same model and histories:

  incremental step (cache hit, O(W))  vs  rebuild from the stored tail (cache miss)
                                      vs  full re-encode of the whole history (the reference)
  exact top-K over the item matrix at 10k and 100k items;
  and the user tower in float32 (as served)  vs  bfloat16  vs  dynamic int8 (torch's
  quantize_dynamic on its Linear layers): per-event cost of a step and a rebuild, and how far the
  served vectors move from float32's.

Run:  .venv/bin/python bench/encoder.py [--users 256] [--history 200] [--repeats 7] [--threads 1]
Prints median (min-max) over repeats; the machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
import warnings
from collections.abc import Callable

import torch
from torch import nn
from tqdm import tqdm

from encoders.incremental import IncrementalEncoder, StepRequest
from encoders.model import EncoderConfig, StreamRecModel, gap_bucket
from streamrec.retrieve.index import ItemIndex


def timed(fn: Callable[[], object], repeats: int) -> list[float]:
    fn()  # warm-up
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def fmt(seconds: list[float], per: int) -> tuple[str, float]:
    us = [s / per * 1e6 for s in seconds]
    med = statistics.median(us)
    return f"{med:9.1f} ({min(us):.1f}-{max(us):.1f})", med


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=256)
    ap.add_argument("--history", type=int, default=200)
    ap.add_argument("--items", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = EncoderConfig(n_item_ids=args.items + 1, n_categories=20)
    model = StreamRecModel(cfg).eval()
    item_vecs = torch.randn(args.items, cfg.d_model)
    B, T, C = args.users, args.history, cfg.context_events
    rows = torch.randint(0, args.items, (B, T + args.repeats + 2)).tolist()

    def request(u: int, pos: int) -> StepRequest:
        lo = max(0, pos + 1 - C)
        return StepRequest(
            f"u{u}", pos, rows[u][lo : pos + 1], [1] * (pos + 1 - lo), [30.0] * (pos + 1 - lo)
        )

    enc = IncrementalEncoder(model, cache_bytes=(B + 1) * 60_000)
    enc.set_item_vectors(item_vecs)
    enc.step([request(u, T - 1) for u in range(B)])  # fill the cache at position T-1
    pos = [T]

    def hit() -> None:
        enc.step([request(u, pos[0]) for u in range(B)])
        pos[0] += 1

    def rebuild() -> None:
        enc.clear()
        enc.step([request(u, T - 1) for u in range(B)])

    def full_one() -> None:
        for u in range(8):
            model.encode_full(rows[u][:T], [1] * T, [30.0] * T, item_vecs)

    full_rows = torch.tensor([r[:T] for r in rows[:32]])
    full_types = torch.ones_like(full_rows)
    full_gaps = gap_bucket(
        torch.full(full_rows.shape, 30.0, dtype=torch.float64), cfg.n_gap_buckets
    )
    full_valid = torch.ones_like(full_rows, dtype=torch.bool)

    def full_batched() -> None:
        with torch.no_grad():
            model.user_tower(item_vecs[full_rows], full_types, full_gaps, full_valid)

    rows_out = []
    bar = tqdm(total=6, desc="bench", leave=False)
    t_hit, m_hit = fmt(timed(hit, args.repeats), B)
    bar.update()
    t_reb, m_reb = fmt(timed(rebuild, max(3, args.repeats // 2)), B)
    bar.update()
    t_full, m_full = fmt(timed(full_one, max(3, args.repeats // 2)), 8)
    bar.update()
    t_fb, m_fb = fmt(timed(full_batched, max(3, args.repeats // 2)), 32)
    rows_out += [
        (f"incremental step, B={B}, cache hit", t_hit, 1.0),
        (f"rebuild from last {C} events, B={B}", t_reb, m_reb / m_hit),
        (f"full re-encode of {T} events, B=1", t_full, m_full / m_hit),
        (f"full re-encode of {T} events, B=32", t_fb, m_fb / m_hit),
    ]
    for n in (10_000, 100_000):
        index = ItemIndex(cfg.d_model, capacity=n)
        for i, v in enumerate(torch.randn(n, cfg.d_model)):
            index.upsert(f"i{i}", v, True)
        users = torch.randn(32, cfg.d_model)
        t, m = fmt(timed(lambda index=index, users=users: index.topk(users, 20), args.repeats), 32)
        rows_out.append((f"exact top-20 over {n:,} items, B=32", t, m / m_hit))
        bar.update()
    bar.close()
    print(
        f"\nd={cfg.d_model} layers={cfg.n_layers} heads={cfg.n_heads} window={cfg.window} "
        f"threads={args.threads} repeats={args.repeats}"
    )
    print(f"{'case':45} {'us/event median (min-max)':>28} {'x step':>8}")
    for name, t, ratio in rows_out:
        print(f"{name:45} {t:>28} {ratio:8.1f}")
    print(
        f"\nsummary: a cached step is {m_fb / m_hit:.0f}x cheaper per event than re-encoding {T} "
        f"events in batches of 32 ({m_full / m_hit:.0f}x vs one at a time) and "
        f"{m_reb / m_hit:.0f}x cheaper than a cache-miss rebuild."
    )
    precision(model, item_vecs, request, B, T, args.repeats)


def precision(
    model: StreamRecModel,
    item_vecs: torch.Tensor,
    request: Callable[[int, int], StepRequest],
    B: int,
    T: int,
    repeats: int,
) -> None:
    """The same steps and rebuilds under each compute precision of the user tower, side by side,
    with the served vectors compared against float32's for the same requests."""
    # torch marks eager-mode quantization as deprecated in favour of torchao (not a dependency)
    warnings.filterwarnings("ignore", module="torch.ao")
    warnings.filterwarnings("ignore", message=".*quantize.*")
    towers = {
        "float32 (served)": model,
        "bfloat16": copy.deepcopy(model).to(torch.bfloat16),
        "int8 dynamic (Linear)": torch.ao.quantization.quantize_dynamic(
            copy.deepcopy(model), {nn.Linear}, dtype=torch.qint8
        ),
    }
    results = {}
    reference: torch.Tensor | None = None
    for name, m in tqdm(towers.items(), desc="precisions", leave=False):
        enc = IncrementalEncoder(m, cache_bytes=(B + 1) * 60_000)
        enc.set_item_vectors(item_vecs)
        served = enc.step([request(u, T - 1) for u in range(B)]).float()
        pos = [T]

        def hit(enc: IncrementalEncoder = enc, pos: list[int] = pos) -> None:
            enc.step([request(u, pos[0]) for u in range(B)])
            pos[0] += 1

        def rebuild(enc: IncrementalEncoder = enc) -> None:
            enc.clear()
            enc.step([request(u, T - 1) for u in range(B)])

        _, step_us = fmt(timed(hit, repeats), B)
        _, rebuild_us = fmt(timed(rebuild, max(3, repeats // 2)), B)
        if reference is None:
            reference = served
        cos = torch.nn.functional.cosine_similarity(served, reference, dim=-1)
        results[name] = (step_us, rebuild_us, (served - reference).abs().max().item(), cos.min())
    base_step, base_rebuild = results["float32 (served)"][:2]
    print(f"\nuser tower precision, B={B}: us/event (median of {repeats}), x = float32 / this")
    print(
        f"{'tower':24} {'step':>8} {'x':>6} {'rebuild':>9} {'x':>6} {'max |dv|':>9} {'min cos':>8}"
    )
    for name, (st, rb, dv, cos) in results.items():
        print(
            f"{name:24} {st:8.1f} {base_step / st:6.2f} {rb:9.1f} {base_rebuild / rb:6.2f} "
            f"{dv:9.4f} {float(cos):8.5f}"
        )


if __name__ == "__main__":
    main()
