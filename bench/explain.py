"""Are the reasons faithful? Each listed item's ``why.because`` names items of the user's history;
removing them should lower the item's score. Side by side, the control: removing as many other
items of the same history, drawn at random. Same leave-one-out split as bench/quality.py (the
lists served at each test user's last history), the worker's code for lists and reasons
(``streamrec.recommend.offline.explained_lists``).

    OMP_NUM_THREADS=1 .venv/bin/python bench/explain.py taobao var/quality/taobao/streamrec

Prints, per reason kind, how often the score fell and how often the item fell out of its rank or
off the list, for the named items and for the random ones.
"""

from __future__ import annotations

import argparse
import random
import statistics
from collections import defaultdict
from collections.abc import Sequence

import torch
from tqdm import tqdm

from encoders.checkpoint import TrainedModel, load_checkpoint
from encoders.evaluate import leave_one_out
from streamrec.datasets import load_dataset
from streamrec.recommend.offline import (
    BLOCK,
    Case,
    ExplainedList,
    ListProtocol,
    ListState,
    as_cases,
    candidates_for,
    explained_lists,
    served_scores,
)
from streamrec.settings import load_settings

Probe = tuple[int, int, str, str]  # case, position in its list, item, kind


def scores_after(
    cases: Sequence[Case],
    items: Sequence[str],
    state: ListState,
    protocol: ListProtocol,
    trained: TrainedModel,
    k: int,
    exclude_history: bool,
    desc: str,
) -> list[tuple[float, int]]:
    """For each (history, item): the item's served score and 0-based rank in that history's
    list (-inf and a huge rank when it is no candidate any more)."""
    score = served_scores(trained)
    out: list[tuple[float, int]] = []
    for s in tqdm(range(0, len(cases), BLOCK), desc=desc):
        part, wanted = cases[s : s + BLOCK], items[s : s + BLOCK]
        [(batch, _)] = candidates_for(part, state, protocol, trained, exclude_history)
        sc = score(batch)
        for b, item in enumerate(wanted):
            lo, hi = batch.offsets[b], batch.offsets[b + 1]
            try:
                row = lo + batch.item_ids[lo:hi].index(item)
            except ValueError:
                out.append((float("-inf"), 1 << 30))
                continue
            out.append((float(sc[row]), int((sc[lo:hi] > sc[row]).sum())))
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("dataset")
    p.add_argument("checkpoint")
    p.add_argument("--users", type=int, default=500, help="test users sampled")
    p.add_argument("--k", type=int, default=20, help="list length")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(1)
    rng = random.Random(args.seed)
    ds = load_dataset(args.dataset, None, min_events=3)
    protocol = ListProtocol.from_settings(load_settings())
    trained = load_checkpoint(args.checkpoint)
    split = leave_one_out(ds.sequences)
    state = ListState.from_sequences(split.train, protocol)
    test = as_cases(split.test)
    cases = sorted(rng.sample(test, min(args.users, len(test))), key=lambda c: len(c[0]))
    lists: list[ExplainedList] = explained_lists(
        cases, state, protocol, trained, args.k, ds.exclude_history
    )

    probes: list[Probe] = []
    named: list[Case] = []
    control: list[Case] = []
    for c, (case, served) in enumerate(zip(cases, lists, strict=True)):
        history, target = case
        distinct = list(dict.fromkeys(i for i, _, _ in history))
        for j, ((item, _), why) in enumerate(zip(served.items, served.why, strict=True)):
            because = set(why["because"])
            others = [i for i in distinct if i not in because and i != item]
            if not because or len(others) < len(because):
                continue
            drawn = set(rng.sample(others, len(because)))
            kept = [v for v in history if v[0] not in because]
            kept_control = [v for v in history if v[0] not in drawn]
            if not kept or not kept_control:
                continue  # the reason is the whole history: nothing would be left to list from
            probes.append((c, j, item, why["kind"]))
            named.append((kept, target))
            control.append((kept_control, target))
    items = [item for _, _, item, _ in probes]
    after = scores_after(
        named, items, state, protocol, trained, args.k, ds.exclude_history, "named removed"
    )
    after_control = scores_after(
        control, items, state, protocol, trained, args.k, ds.exclude_history, "random removed"
    )

    rows: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for (c, j, _, kind), (s1, r1), (s2, r2) in zip(probes, after, after_control, strict=True):
        s0 = lists[c].items[j][1]
        for key in (kind, "all"):
            row = rows[key]
            row["lower"].append(float(s1 < s0))
            row["lower_control"].append(float(s2 < s0))
            row["rank_down"].append(float(r1 > j))
            row["rank_down_control"].append(float(r2 > j))
            row["off_list"].append(float(r1 >= args.k))
            row["off_list_control"].append(float(r2 >= args.k))
    kinds = defaultdict(int)
    for served in lists:
        for why in served.why:
            kinds[why["kind"]] += 1
    total = sum(kinds.values())
    print(
        f"\n{ds.describe()}; {protocol.describe()}; checkpoint {args.checkpoint}; "
        f"{len(cases)} test users, lists of {args.k}\n"
    )
    print("reasons given: " + ", ".join(f"{k} {v / total:.1%}" for k, v in sorted(kinds.items())))
    print(
        "\n| kind | probes | score lower: named removed | random removed | named / random "
        "| rank lower: named | random | off the list: named | random |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for kind in sorted(rows, key=lambda k: (k == "all", k)):
        r = rows[kind]
        m = {name: statistics.fmean(v) for name, v in r.items()}
        ratio = m["lower"] / m["lower_control"] if m["lower_control"] else float("inf")
        print(
            f"| {kind} | {len(r['lower']):,} | {m['lower']:.1%} | {m['lower_control']:.1%} | "
            f"{ratio:.2f}× | {m['rank_down']:.1%} | {m['rank_down_control']:.1%} | "
            f"{m['off_list']:.1%} | {m['off_list_control']:.1%} |"
        )
    no_because = sum(1 for s in lists for w in s.why if not w["because"])
    print(f"\nitems without a 'because' (popular, or similar with no close item): {no_because:,}")
    skipped = total - no_because - len(probes)
    print(f"items not probed (too few other items for the control, or none left): {skipped:,}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
