"""Fault scenarios at full size on a real broker (the CI versions are tests/faults): ``kill -9``
mid-replay of >= 100k events then a restart, a worker frozen (SIGSTOP) past its group session
mid-replay, a broker stop/restart mid-stream, workers joining and leaving (gracefully and by
``kill -9``), and the local RocksDB directory deleted.

Run (a broker of your own; the broker-restart scenario always starts a private one):

    .venv/bin/streamrec kafka start
    nice -n 19 .venv/bin/python bench/faults.py --bootstrap 127.0.0.1:19092

``--events`` sizes the kill -9 run (default 100000, replayed at ``--rate`` 1500/s so the replay
is still going when the worker is killed); the others use ``--events`` / 4 unless
``--small-events`` is given. ``--only kill9,freeze,broker,scale,state,lists,budget,dlq`` picks
scenarios (the last three inject faults of the worker itself through fail points). Prints one row
per scenario: events replayed (redeliveries included), events lost, events double-counted, the
recovery times, then the details of any scenario that was not clean; exits 1 if any was not.
Work directories (worker logs) are kept under ``--workdir``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from streamrec.faults import scenarios
from streamrec.faults.scenarios import Result

SCENARIOS = ("kill9", "freeze", "broker", "scale", "state", "lists", "budget", "dlq")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--bootstrap", default="127.0.0.1:19092", help="broker for all but 'broker'")
    p.add_argument("--events", type=int, default=100_000, help="events of the kill -9 run")
    p.add_argument("--small-events", type=int, default=0, help="events of the other runs")
    p.add_argument("--users", type=int, default=0, help="users (default events / 20)")
    # the default keeps the replay going past the kill and through the restart's recovery on a
    # small machine (a worker there takes ~1-2k events/s), so a backlog waits during recovery
    p.add_argument(
        "--rate", type=float, default=1500.0, help="kill -9 run: replay rate (0 = flat out)"
    )
    p.add_argument("--only", default=",".join(SCENARIOS), help="comma-separated subset")
    p.add_argument("--workdir", type=Path, default=None, help="default: a new temporary dir")
    args = p.parse_args(argv)

    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(only) - set(SCENARIOS)
    if unknown:
        p.error(f"unknown scenarios {sorted(unknown)}; known: {', '.join(SCENARIOS)}")
    small = args.small_events or max(2000, args.events // 4)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="streamrec-faults-"))
    workdir.mkdir(parents=True, exist_ok=True)

    def users(n: int) -> int:
        return args.users or max(50, n // 20)

    def log(msg: str) -> None:
        print(f"  {time.strftime('%H:%M:%S')} {msg}", flush=True)

    def sized(run: Callable[..., Result], name: str) -> Callable[[], Result]:
        """A scenario on the given broker, at the small size."""
        return lambda: run(
            args.bootstrap, workdir / name, small, users(small), sample=300, progress=True, log=log
        )

    runs: dict[str, Callable[[], Result]] = {
        "kill9": lambda: scenarios.kill9_restart(
            args.bootstrap,
            workdir / "kill9",
            args.events,
            users(args.events),
            rate=args.rate or None,
            sample=300,
            progress=True,
            log=log,
        ),
        "freeze": sized(scenarios.freeze_past_session, "freeze"),
        "broker": lambda: scenarios.broker_restart(
            workdir / "broker", small, users(small), sample=300, progress=True, log=log
        ),
        "scale": sized(scenarios.scale_out_in, "scale"),
        "state": sized(scenarios.lost_local_state, "state"),
        "lists": sized(scenarios.failing_lists, "lists"),
        "budget": lambda: scenarios.internal_errors_past_budget(
            args.bootstrap, workdir / "budget", small, users(small), progress=True, log=log
        ),
        "dlq": sized(scenarios.dead_letters_unsendable, "dlq"),
    }
    results: list[Result] = []
    failures: list[str] = []
    print(f"work dir {workdir}", flush=True)
    for name in only:
        print(f"== {name}", flush=True)
        t0 = time.monotonic()
        try:
            r = runs[name]()
        except Exception:
            failures.append(f"{name}: crashed\n{traceback.format_exc()}")
            continue
        r.notes.append(f"wall {time.monotonic() - t0:.0f} s")
        results.append(r)
        print(r.describe(), flush=True)

    print()
    head = f"{'scenario':34} {'events':>8} {'lost':>6} {'double':>7}  recovery"
    print(head)
    print("-" * len(head))
    for r in results:
        rec = "; ".join(f"{k} {v:.1f} s" for k, v in r.recovery_s.items())
        print(f"{r.scenario:34} {r.events:>8} {r.lost:>6} {r.double:>7}  {rec}")
    bad = [r for r in results if not r.ok]
    for r in bad:
        failures.append(r.describe())
    if failures:
        print("\nNOT CLEAN:")
        for f in failures:
            print(f)
        return 1
    print(f"\nall {len(results)} scenarios clean (no event lost, none counted twice)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
