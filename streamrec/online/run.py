"""Online (prequential) evaluation on the real broker: `streamrec evaluate DATASET --online`.

1. Split the dataset by time (streamrec.online.prepare); fit the served model and its untyped
   variant on the earlier part with the project's training code (or reuse checkpoints from an
   earlier run in the same output folder).
2. Start real `streamrec worker` processes, one app each, all consuming the same input topics
   (made for this run): the typed model, the untyped model, and a worker without a checkpoint
   (it serves rolling, time-decayed popularity). Each app has its own output topic.
3. Replay the whole log, in time order and at a fixed rate, with `streamrec replay`'s code: the
   fit part warms the workers' user state, the rest is the evaluation window.
4. Wait until every app has committed the whole input, read the output topics, and score each
   evaluation event against the list shown before it (streamrec.online.scoring). The frozen
   lists are the typed worker's last lists before the window.

With ``continual`` one more app serves a copy of the typed checkpoint into which a real
`streamrec trainer` publishes the candidates that pass its gate: the "live, continual" row, beside
the frozen start-of-window model's "live". The evaluation window is replayed in
``trainer_slices`` slices; at each boundary the replay pauses, every worker drains, and one
`streamrec trainer --once` (niced, reading the run's topics: everything sent so far) fine-tunes,
gates and publishes before the continual worker, having loaded what was published, lists the
next slice. Pausing keeps the protocol prequential (no list is made by a model that trained on
its target) and independent of how fast the trainer is on this machine: it measures a trainer
that keeps up, as one on its own machine would at this pace, while its CPU is reported apart.
"""

from __future__ import annotations

import itertools
import logging
import os
import resource
import shutil
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from kafka import KafkaAdminClient
from tqdm import tqdm

from streamrec.datasets import load_dataset
from streamrec.datasets.base import Dataset
from streamrec.features.user_state import UserState, event_id_hash
from streamrec.kafka import groups
from streamrec.kafka.broker import free_port
from streamrec.kafka.read import read_to_end
from streamrec.online import scoring
from streamrec.online.prepare import catalog, fit_part, split_time, train_checkpoint
from streamrec.quality import categories_of
from streamrec.recommend.offline import ListProtocol
from streamrec.replay import replay
from streamrec.replay_sources import open_source
from streamrec.settings import Settings
from streamrec.worker_process import WorkerProcess
from streams.topics import changelog_topic, create_topics

log = logging.getLogger(__name__)

LIVE, FROZEN, POPULARITY, UNTYPED = "live", "frozen", "popularity", "live, untyped"
CONTINUAL = "live, continual"
RECENT, COVISIT, HEURISTIC = "recent items", "co-visitation", "recent+covisit+popular"
# The worker apps of one run: name -> (checkpoint sub-folder, "" = none; recs.source). The
# simple lists are real workers too, serving one source each from the same live state.
APPS = {
    "typed": ("typed", "auto"),
    "untyped": ("untyped", "auto"),
    "popularity": ("", "popularity"),
    "recent": ("", "recent"),
    "covisit": ("", "covisit"),
    "heuristic": ("", "heuristic"),
}
# rows of the result table: system -> the app whose lists it shows
LIVE_ROWS = {
    LIVE: "typed",
    UNTYPED: "untyped",
    RECENT: "recent",
    COVISIT: "covisit",
    HEURISTIC: "heuristic",
    POPULARITY: "popularity",
}


@dataclass
class OnlineConfig:
    dataset: str
    out: Path
    fmt: str | None = None
    fit_fraction: float = 0.75
    train_minutes: float = 30.0  # a guard only: fits run by epochs with early stopping
    retrain: bool = False
    rate: float = 400.0  # events/s of the replay; below what the workers sustain, see docs
    partitions: int = 2
    timeout_s: float = 3600.0
    keep_topics: bool = False
    progress: bool = True
    nice: int = 0  # niceness of the worker processes
    continual: bool = False  # add the "live, continual" row: trainer cycles inside the window
    trainer_slices: int = 4  # the window in this many slices, a cycle before each after the first


@dataclass
class OnlineResult:
    dataset: str
    split_ts: float
    events: int
    eval_events: int
    tallies: dict[str, dict[str, scoring.Tally]]
    reordered: dict[str, int] = field(default_factory=dict)
    lists: dict[str, int] = field(default_factory=dict)  # lists each app published
    applied: dict[str, int] = field(default_factory=dict)  # events each app's changelog shows
    replay_events_per_s: float = 0.0
    fits: dict[str, dict[str, Any]] = field(default_factory=dict)  # checkpoint -> its fit
    policy: str = ""  # the list policy every worker ran (purchased items excluded or kept)
    # {system: {kind: categories, coverage, novelty}} of the top 10 shown at the targets
    beyond: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    # with --continual: the trainer's cycles, its CPU and the versions the continual app served
    trainer: dict[str, Any] = field(default_factory=dict)

    def table(self) -> str:
        return scoring.format_table(self.tallies, LIVE, FROZEN, self.beyond)

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "split_ts": self.split_ts,
            "events": self.events,
            "eval_events": self.eval_events,
            "reordered_lists": self.reordered,
            "lists": self.lists,
            "applied": self.applied,
            "replay_events_per_s": self.replay_events_per_s,
            "fits": self.fits,
            "policy": self.policy,
            "trainer": self.trainer,
            "metrics": {
                name: {
                    kind: {
                        "n": t.n,
                        "bought_before": t.bought_before,
                        **{f"hr@{k}": t.hr(k) for k in scoring.KS},
                        **{f"ndcg@{k}": t.ndcg(k) for k in scoring.KS},
                    }
                    for kind, t in per_kind.items()
                }
                for name, per_kind in self.tallies.items()
            },
            "beyond_accuracy@10": self.beyond,
            "lift_hr@20": {
                kind: scoring.lift(self.tallies, kind, LIVE, FROZEN) for kind in scoring.KINDS
            },
        }


def prepare_checkpoints(cfg: OnlineConfig, settings: Settings) -> tuple[Dataset, float]:
    """Train (or reuse) the typed and untyped checkpoints; returns the dataset and split time."""
    ds = load_dataset(cfg.dataset, cfg.fmt, root=settings.data.root)
    split_ts = split_time(ds, cfg.fit_fraction)
    fit = fit_part(ds.sequences, split_ts)
    for name, untyped in (("typed", False), ("untyped", True)):
        out = cfg.out / name
        if (out / "model.json").exists() and not cfg.retrain:
            log.info("reusing the checkpoint in %s (--retrain to fit it again)", out)
            continue
        log.info(
            "fitting the %s model on %s before %.0f (%.1f min)",
            name,
            ds.name,
            split_ts,
            cfg.train_minutes,
        )
        train_checkpoint(
            fit, ds, out, cfg.train_minutes, untyped=untyped, progress=cfg.progress,
            protocol=ListProtocol.from_settings(settings),
        )  # fmt: skip
    return ds, split_ts


def app_settings(
    base: Settings,
    run: str,
    app: str,
    checkpoint: str,
    datadir: Path,
    partitions: int,
    source: str = "auto",
) -> Settings:
    """One worker app of the run: shared input topics, its own id, state and output topic."""
    return base.replace(
        topics={
            "browse": f"{run}.browse",
            "click": f"{run}.click",
            "purchase": f"{run}.purchase",
            "items": f"{run}.items",
            "recommendations": f"{run}.{app}.recommendations",
            "dlq": f"{run}.dlq",
            "forget": f"{run}.{app}.forget",
            "partitions": partitions,
        },
        app={
            "id": f"{run}.{app}",
            "datadir": str(datadir),
            "web_port": free_port(),
            "web_host": "127.0.0.1",
        },
        model={"checkpoint": checkpoint},
        recs={"k": max(scoring.KS), "source": source},
    )


def read_lists(settings: Settings, topic: str) -> list[dict[str, Any]]:
    """The published lists of an output topic, in emission order per user."""
    return [
        orjson.loads(v)
        for _, v in read_to_end(settings.kafka_client_config(), topic)
        if v is not None
    ]


def read_applied(settings: Settings) -> list[tuple[str, int]]:
    """(user id, event-id hash) of every event the app applied, in the order it applied them,
    from its users-table changelog: each write there is the state after exactly one new event,
    whose digest the state keeps as ``last_applied`` (the sequence itself is in event time)."""
    out: list[tuple[str, int]] = []
    last: dict[str, int] = {}
    for key, value in read_to_end(settings.kafka_client_config(), changelog_topic(settings)):
        if key is None or not value:
            continue
        state = UserState.from_bytes(value)
        user = key.decode()
        # a redelivered last event rewrites the same state (streams.worker: Worker.apply)
        if state.n_events and last.get(user) != state.last_applied:
            out.append((user, state.last_applied))
            last[user] = state.last_applied
    return out


def run_online(cfg: OnlineConfig, settings: Settings) -> OnlineResult:
    cfg.out.mkdir(parents=True, exist_ok=True)
    ds, split_ts = prepare_checkpoints(cfg, settings)
    source = open_source(cfg.dataset, cfg.fmt, root=settings.data.root)
    events_iter, _ = source.events("time")
    events = list(events_iter)
    replayed = scoring.index_events(events, split_ts)

    run = f"online.{source.tag}.{uuid.uuid4().hex[:8]}"
    checkpoints = {app: str(cfg.out / ckpt) if ckpt else "" for app, (ckpt, _) in APPS.items()}
    sources = {app: src for app, (_, src) in APPS.items()}
    rows = dict(LIVE_ROWS)
    if cfg.continual:
        # its own copy of the start-of-window model, which the trainer then publishes over
        served = cfg.out / "state" / run / "continual-model"
        shutil.copytree(cfg.out / "typed", served)
        checkpoints["continual"], sources["continual"] = str(served), "auto"
        rows = {LIVE: "typed", CONTINUAL: "continual", **LIVE_ROWS}
    apps = {
        app: app_settings(
            settings,
            run,
            app,
            checkpoints[app],
            cfg.out / "state" / run / app,
            cfg.partitions,
            sources[app],
        )
        for app in checkpoints
    }
    first = next(iter(apps.values()))
    for s in apps.values():
        create_topics(s)
    # The catalog goes first, so every worker has it (health waits for it) before any event.
    replay(
        [],
        first.kafka_client_config(),
        items=list(catalog(ds).values()),
        items_topic=first.topics.items,
        progress=False,
    )
    workers = {
        app: WorkerProcess(s, cfg.out / "logs" / f"{run}.{app}.log", nice=cfg.nice)
        for app, s in apps.items()
    }
    inputs = list(first.topics.event_topics().values())

    def drain(progress: bool) -> None:
        """Wait until every app has committed everything sent so far."""
        for app, s in apps.items():
            with tqdm(
                total=sent,
                desc=f"processed ({app})",
                unit="ev",
                disable=not progress,
                dynamic_ncols=True,
            ) as bar:

                def show(p: groups.Progress, bar: Any = bar) -> None:
                    bar.n = sent - p.lag
                    bar.refresh()

                groups.wait_for(
                    first.kafka_client_config(),
                    s.app.id,
                    inputs,
                    timeout_s=cfg.timeout_s,
                    on_poll=show,
                    alive=workers[app].alive,
                )

    segments = replay_segments(events, split_ts, cfg.trainer_slices if cfg.continual else 1)
    cycles: list[dict[str, Any]] = []
    sent, replay_s = 0, 0.0
    try:
        for w in workers.values():
            w.start()
        for w in workers.values():
            w.wait_healthy()
        log.info(
            "replaying %d events of %s at %.0f events/s into %s.* in %d part(s)",
            len(events),
            source.tag,
            cfg.rate,
            run,
            len(segments),
        )
        trainer_log = cfg.out / "logs" / f"{run}.trainer.log"
        t0 = time.monotonic()
        for n, (lo, hi) in enumerate(segments):
            if n:  # a slice boundary inside the window: the trainer's turn
                drain(progress=False)
                cycle = trainer_cycle(apps["continual"], workers["continual"], trainer_log,
                                      cfg.timeout_s)  # fmt: skip
                cycles.append({**cycle, "slice": n, "after_ts": float(events[lo - 1]["ts"])})
            summary = replay(
                events[lo:hi],
                first.kafka_client_config(),
                first.topics.event_topics(),
                rate=cfg.rate,
                progress=cfg.progress,
                total=hi - lo,
            )
            sent += summary.events_sent
            replay_s += summary.seconds
        drain(progress=cfg.progress)
        wall = time.monotonic() - t0
    finally:
        for w in workers.values():
            w.stop()
    trainer_report: dict[str, Any] = {}
    if cfg.continual:
        cpu = sum(c["cpu_s"] for c in cycles)
        trainer_report = {
            "cycles": cycles,
            "nice": apps["continual"].trainer.nice,
            "cpu_seconds": cpu,
            "cycle_seconds": sum(c["seconds"] for c in cycles),
            "run_seconds": wall,
            "cpu_cores": cpu / max(wall, 1e-9),  # its share of the run, pauses included
        }
    published = {app: read_lists(s, s.topics.recommendations) for app, s in apps.items()}
    applied = {app: read_applied(s) for app, s in apps.items()}
    if not cfg.keep_topics:
        _delete_topics(
            first,
            [
                *first.topics.event_topics().values(),
                first.topics.items,
                first.topics.dlq,
                *(s.topics.recommendations for s in apps.values()),
                *(changelog_topic(s) for s in apps.values()),
            ],
        )
    # The workers' local state is rebuilt from the changelogs anyway; it is only this run's.
    shutil.rmtree(cfg.out / "state" / run, ignore_errors=True)
    by_hash = {(u, event_id_hash(eid)): pos for eid, (u, pos) in replayed.position_of.items()}
    hist = {
        app: scoring.histories(
            recs, replayed.position_of, scoring.processing_order(applied[app], by_hash)
        )
        for app, recs in published.items()
    }
    systems = {name: scoring.live(hist[app]) for name, app in rows.items()}
    systems[FROZEN] = scoring.frozen(hist["typed"], replayed.first_target)
    tallies = scoring.score(replayed.targets, systems, warm=systems[FROZEN])
    if cfg.continual:
        trainer_report["versions_served"] = dict(
            Counter(str(rec.get("model_version")) for rec in published["continual"])
        )
    items = catalog(ds)
    before_window = Counter(str(e["item_id"]) for e in events if float(e["ts"]) < split_ts)
    beyond = scoring.beyond_accuracy(tallies, categories_of(items), before_window, len(items))
    result = OnlineResult(
        source.tag,
        split_ts,
        len(events),
        len(replayed.targets),
        tallies,
        reordered={app: sum(h.reordered for h in hs.values()) for app, hs in hist.items()},
        lists={app: sum(len(h.lists) for h in hs.values()) for app, hs in hist.items()},
        applied={app: len(a) for app, a in applied.items()},
        replay_events_per_s=sent / replay_s if replay_s > 0 else 0.0,
        fits={name: fit_summary(cfg.out / name) for name in ("typed", "untyped")},
        policy=ListProtocol.from_settings(settings).describe(),
        beyond=beyond,
        trainer=trainer_report,
    )
    (cfg.out / "online.json").write_bytes(
        orjson.dumps(result.to_dict(), option=orjson.OPT_INDENT_2)
    )
    return result


def replay_segments(
    events: list[dict[str, Any]], split_ts: float, slices: int
) -> list[tuple[int, int]]:
    """[lo, hi) index ranges of the time-ordered log: the fit part with the window's first slice,
    then the rest of the window in ``slices`` equal parts by event count."""
    start = next((i for i, e in enumerate(events) if float(e["ts"]) >= split_ts), len(events))
    n = len(events) - start
    cuts = [start + n * k // slices for k in range(1, slices)] if slices > 1 else []
    bounds = [0, *dict.fromkeys(c for c in cuts if start < c < len(events)), len(events)]
    return [(lo, hi) for lo, hi in itertools.pairwise(bounds) if hi > lo]


def trainer_cycle(
    continual: Settings, worker: WorkerProcess, log_path: Path, timeout_s: float
) -> dict[str, Any]:
    """One `streamrec trainer --once` over the run's topics (its own settings: [trainer], nice
    included), publishing into the continual app's checkpoint; returns once that app's worker
    has loaded what it published. Its stdout is the cycle's JSON; a trainer that prints none
    failed, and that is this run's fault, not a figure."""
    loads = worker.counters().get("model_loads", 0)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    with open(log_path, "ab") as err:
        proc = subprocess.run(
            [sys.executable, "-m", "streamrec", "trainer", "--once"],
            env={**os.environ, **continual.to_env()},
            stdout=subprocess.PIPE,
            stderr=err,
            timeout=timeout_s,
            check=False,
        )
    seconds = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        result = orjson.loads(proc.stdout)
    except orjson.JSONDecodeError:
        raise RuntimeError(
            f"streamrec trainer --once exited {proc.returncode} without a result; see {log_path}"
        ) from None
    if result["published"]:
        worker.wait_counter("model_loads", loads + 1, timeout_s=timeout_s)
    decision = result.get("decision") or {}
    return {
        "published": result["published"],
        "reason": result["reason"],
        "candidate_version": result.get("candidate_version", ""),
        "window": result.get("window", {}),
        "gate_ndcg@10": {
            side: (decision.get(side) or {}).get("ndcg@10") for side in ("candidate", "serving")
        },
        "seconds": seconds,
        "cpu_s": (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
    }


def fit_summary(checkpoint: Path) -> dict[str, Any]:
    """How a checkpoint was fit: epochs, the best one, its validation figures, the ranker."""
    meta = orjson.loads((checkpoint / "model.json").read_bytes()).get("training", {})
    keys = ("epochs_run", "best_epoch", "val_hr@10", "val_ndcg@10", "seconds", "protocol")
    out = {k: meta.get(k) for k in keys}
    ranker = meta.get("ranker")
    if ranker:
        out["ranker"] = {k: ranker.get(k) for k in ("best_epoch", "cases_with_target", "cases")}
    return out


def _delete_topics(settings: Settings, topics: list[str]) -> None:
    admin = KafkaAdminClient(**settings.kafka_client_config(), client_id="streamrec-online")
    try:
        admin.delete_topics(topics)
    except Exception as exc:  # leftovers are harmless; say so rather than fail the run
        log.warning("could not delete the run's topics (%s)", exc)
    finally:
        admin.close()


def describe(result: OnlineResult) -> str:
    lines = [
        f"{result.dataset}: {result.events:,} events replayed, {result.eval_events:,} in the "
        f"evaluation window (from ts {result.split_ts:.0f}); {result.policy}",
        result.table(),
        "events processed after a later event of the same user (of all processed), per app: "
        + ", ".join(
            f"{a} {n:,} of {result.applied.get(a, 0):,}" for a, n in result.reordered.items()
        ),
        "lists published per app: " + ", ".join(f"{a} {n:,}" for a, n in result.lists.items()),
        *_describe_trainer(result.trainer),
        *(
            f"fit {name}: {f.get('epochs_run')} epochs (best {f.get('best_epoch')}), validation "
            f"HR@10 {f.get('val_hr@10')} NDCG@10 {f.get('val_ndcg@10')}, {f.get('seconds')} s"
            + (f"; ranker {f['ranker']}" if f.get("ranker") else "; no ranker")
            for name, f in result.fits.items()
        ),
    ]
    return "\n".join(lines)


def _describe_trainer(report: dict[str, Any]) -> list[str]:
    if not report:
        return []
    cycles = report["cycles"]
    lines = [
        f"trainer: {len(cycles)} cycles at the window's slice boundaries, "
        f"{sum(c['published'] for c in cycles)} published; the replay paused "
        f"{report['cycle_seconds']:.0f} s for them (nice {report['nice']}, "
        f"{report['cpu_seconds']:.0f} CPU s: {report['cpu_cores']:.2f} cores of the "
        f"{report['run_seconds']:.0f} s run); versions served by the continual app: "
        f"{report.get('versions_served')}"
    ]
    for c in cycles:
        g = c["gate_ndcg@10"]
        lines.append(
            f"  cycle before slice {c['slice']}: {'published' if c['published'] else 'kept'} "
            f"({c['reason']}); gate NDCG@10 candidate {g['candidate']} serving {g['serving']}; "
            f"{c['seconds']:.0f} s"
        )
    return lines
