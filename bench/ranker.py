"""Serving cost of the candidate sources and the ranker, per list, side by side on one catalog,
one model and the same users (``Recommender.recommend``, the worker's call, no Kafka):

  model retrieval alone (a checkpoint without ranker)  vs  retrieval + candidates + ranker
      vs  the same with each item's reason ("why", recs.explain: as served)
      vs  the heuristic lists (no model), without and with reasons
  and the lists as served under Python's garbage-collector defaults (the worker freezes its
  long-lived state and collects its youngest objects less often: streams/collector)

Each timed batch gives every user one new event (an encoder cache hit: the steady state), so
the difference between the first two rows is what the ranker adds to a list, and the next row
what the reasons add.

Run:  .venv/bin/python bench/ranker.py [--items 100000] [--users 256] [--repeats 7]
Prints median (min-max) over repeats; the machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import random
import statistics
import time

import torch
from tqdm import tqdm
from workload import untrained_ranker

from encoders.checkpoint import TrainedModel
from encoders.item_features import ItemFeaturizer
from encoders.model import EncoderConfig, StreamRecModel
from streamrec.events.schema import EVENT_TYPES, Event, Item
from streamrec.features.user_state import FeatureLimits, UserState
from streamrec.recommend.engine import Job, Recommender
from streamrec.settings import load_settings
from streams.collector import Collector

DEFAULT_GC = "as served, Python's collector defaults (no freeze, young generation 700)"


def make_model(n_items: int, seed: int = 0) -> TrainedModel:
    torch.manual_seed(seed)
    items = [
        {"category": f"c{i % 50}", "price": float(i % 100), "title": ""} for i in range(n_items)
    ]
    fz = ItemFeaturizer.fit(items, 16, 512)
    cfg = EncoderConfig(n_item_ids=n_items + 1, n_categories=fz.n_categories)
    return TrainedModel(
        StreamRecModel(cfg).eval(), cfg, [f"i{i}" for i in range(n_items)], fz, "bench"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--users", type=int, default=256)
    ap.add_argument("--history", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    torch.set_num_threads(1)
    rng = random.Random(0)
    base = make_model(args.items)
    ranked = dataclasses.replace(base, ranker=untrained_ranker())
    settings = load_settings(env={"STREAMREC_RETRIEVAL_METHOD": "exact"})
    catalog = [Item(f"i{i}", f"c{i % 50}", float(i % 100)) for i in range(args.items)]
    limits = FeatureLimits.from_settings(settings.features)
    # Zipf-ish item choice: co-visitation and popularity get realistic heads
    weights = [1.0 / (r + 1) ** 0.8 for r in range(args.items)]
    users = [f"u{u}" for u in range(args.users)]
    n_events = args.history + args.repeats + 1
    picks = rng.choices(range(args.items), weights=weights, k=args.users * n_events)
    events = [
        [
            Event(
                f"{u}-{n}",
                u,
                f"i{picks[b * n_events + n]}",
                rng.choice(EVENT_TYPES),
                1.7e9 + 60 * n + b,
            )
            for n in range(n_events)
        ]
        for b, u in enumerate(users)
    ]
    served = "retrieval + candidates + ranker + reasons (as served)"
    systems = {
        "model retrieval alone": (base, False),
        "retrieval + candidates + ranker": (ranked, False),
        served: (ranked, True),
        # the same lists with Python's collector defaults (no freeze, young generation at 700)
        DEFAULT_GC: (ranked, True),
        "heuristic (no model)": (None, False),
        "heuristic + reasons": (None, True),
    }
    results: dict[str, list[float]] = {}
    collector = Collector(settings.app.gc_young_objects)  # as the worker runs
    worker_gc = gc.get_threshold()
    for name, (model, explain) in tqdm(systems.items(), desc="systems"):
        s = settings.replace(recs={"explain": explain})
        rec = Recommender(s, model)
        rec.upsert_items(catalog)
        states = {u: UserState() for u in users}

        def step(
            n: int, rec: Recommender = rec, states: dict[str, UserState] = states
        ) -> list[Job]:
            jobs = []
            for b, u in enumerate(users):
                e = events[b][n]
                states[u].apply(e, limits)
                rec.observe(e, states[u])
                jobs.append(rec.job(e, states[u]))
            return jobs

        for n in range(args.history):  # warm the state; the last batch fills the cache
            jobs = step(n)
        rec.recommend(jobs)
        if name == DEFAULT_GC:
            gc.unfreeze()
            gc.set_threshold(700, *worker_gc[1:])
        else:
            gc.set_threshold(*worker_gc)
            collector.refreeze()  # the worker freezes its long-lived state once it is built
        times = []
        for r in range(args.repeats):
            jobs = step(args.history + r)
            t0 = time.perf_counter()
            rec.recommend(jobs)
            times.append(time.perf_counter() - t0)
        results[name] = [t / args.users * 1e6 for t in times]
        rec.catalog.retriever.close()
        gc.unfreeze()
    ref = statistics.median(results["model retrieval alone"])
    print(
        f"\n{args.items:,} items, {args.users} users per batch, {args.history}-event histories, "
        f"exact retrieval, 1 thread; µs per list, median (min-max) of {args.repeats}\n"
    )
    as_served = statistics.median(results[served])
    print("| lists | µs per list | vs retrieval alone | vs as served |")
    print("|---|---:|---:|---:|")
    for name, us in results.items():
        med = statistics.median(us)
        print(
            f"| {name} | {med:,.0f} ({min(us):,.0f}–{max(us):,.0f}) | {med / ref:.2f}× "
            f"| {med / as_served:.2f}× |"
        )


if __name__ == "__main__":
    main()
