"""Cost of one training step at a dataset's catalog size, side by side in one run:

  full softmax (the item tower over the whole vocabulary every step)
  vs  sampled softmax with the item tower on the step's rows only (inputs, targets, negatives)

Same model, same batches, same machine; forward, backward and the optimizer step are timed.

Run:  .venv/bin/python bench/train_step.py taobao [--steps 5] [--threads 1]
Prints median (min-max) seconds per step and per epoch; the machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import torch
from tqdm import tqdm

from encoders.evaluate import leave_one_out
from encoders.model import StreamRecModel
from encoders.presets import PRESETS
from encoders.train import _Trainer
from streamrec.datasets import load_dataset


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("dataset")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--data-root", default="../shared/data")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ds = load_dataset(args.dataset, None, root=args.data_root, min_events=3)
    split = leave_one_out(ds.sequences)
    preset = PRESETS["streamrec"]
    rows = {}
    for loss in tqdm(("full", "sampled"), desc="losses"):
        tc = dataclasses.replace(preset.train, loss=loss, seed=0)
        trainer = _Trainer(split.train, ds.items, preset.encoder, tc, None)
        torch.manual_seed(0)
        model = StreamRecModel(trainer.cfg)
        opt = trainer._optimizer(model)
        trainer.all_ids = torch.arange(trainer.cfg.n_item_ids)
        batches = trainer._batches(torch.Generator().manual_seed(0))
        times = []
        for part in batches[: args.steps + 1]:
            t0 = time.perf_counter()
            loss_value, _ = trainer._loss(model, part)
            opt.zero_grad(set_to_none=True)
            loss_value.backward()
            opt.step()
            times.append(time.perf_counter() - t0)
        rows[loss] = (times[1:], len(batches))  # the first step warms up
    print(
        f"\n{ds.describe()}; vocabulary {trainer.cfg.n_item_ids - 1:,} items, batch "
        f"{preset.train.batch_size} chunks, {args.threads} thread(s), median (min-max) of "
        f"{args.steps} steps\n"
    )
    print("| loss | s per step | s per epoch | vs full |")
    print("|---|---:|---:|---:|")
    full = statistics.median(rows["full"][0])
    for loss, (times, n) in rows.items():
        med = statistics.median(times)
        print(
            f"| {loss} | {med:.3f} ({min(times):.3f}–{max(times):.3f}) | {med * n:,.1f} | "
            f"{med / full:.2f}× |"
        )


if __name__ == "__main__":
    main()
