"""`streamrec` command line: one entry point for operators, analysts and the demo."""

from __future__ import annotations

import argparse
import itertools
import logging
import sys
from pathlib import Path
from typing import Any

import orjson

from streamrec.settings import Settings, SettingsError, load_settings


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(args.config)


def cmd_topics(args: argparse.Namespace) -> int:
    from streams.topics import create_topics

    for topic, outcome in create_topics(_settings(args)).items():
        print(f"{outcome:8} {topic}")
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from streams.run import run_worker

    return run_worker(_settings(args))


def cmd_dashboard(args: argparse.Namespace) -> int:
    from streamrec.dashboard.server import run_dashboard

    s = _settings(args)
    changes = {
        k: v for k, v in (("host", args.host), ("port", args.port), ("workers", args.workers)) if v
    }
    return run_dashboard(s.replace(dashboard=changes) if changes else s)


def cmd_trainer(args: argparse.Namespace) -> int:
    from streamrec.continual.trainer import run_trainer

    return run_trainer(_settings(args), once=args.once)


def cmd_generate(args: argparse.Namespace) -> int:
    from streamrec.generate import GeneratorConfig, generate, write_world

    cfg = GeneratorConfig(n_users=args.users, n_items=args.items, days=args.days, seed=args.seed)
    world = generate(cfg)
    items_path, events_path = write_world(world, Path(args.out))
    print(f"{len(world.items)} items -> {items_path}\n{len(world.events)} events -> {events_path}")
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from streamrec.eventlog import read_items
    from streamrec.events.validate import MIN_TS
    from streamrec.replay import ReplayError, ReplayStateError, replay
    from streamrec.replay_sources import open_source

    s = _settings(args)
    try:
        source = open_source(args.source, args.format, root=args.data_root or s.data.root)
        if args.time_scale is not None and not source.has_times:
            raise ValueError(f"{source.format} has no timestamps to scale; use --rate")
        events, total = source.events(args.order, args.limit)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    first = next(events, None)
    ts = first.get("ts") if first is not None else None
    if isinstance(ts, int | float) and ts < MIN_TS and not args.retime:
        print(
            f"warning: events start at ts {ts}, before 2000-01-01: the workers reject "
            "them as bad_timestamp (use --retime to stamp them with the send time)",
            file=sys.stderr,
        )
    items = list(read_items(args.items)) if args.items else None
    try:
        summary = replay(
            itertools.chain([first] if first is not None else [], events),
            s.kafka_client_config(),
            s.topics.event_topics(),
            rate=args.rate,
            items=items,
            items_topic=s.topics.items,
            total=total,
            retime=args.retime,
            time_scale=args.time_scale,
            state_path=args.state,
        )
    except (ReplayError, ReplayStateError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1 if isinstance(exc, ReplayError) else 2
    print(summary.format())
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from streamrec.recommend.offline import ListProtocol
    from streamrec.train import train_from_files

    s = _settings(args)
    out = Path(args.out or s.model.checkpoint)
    report = train_from_files(
        Path(args.events),
        Path(args.items) if args.items else None,
        out,
        epochs=args.epochs,
        seed=args.seed,
        preset=args.preset,
        protocol=ListProtocol.from_settings(s),
        train_overrides=_train_overrides(args),
    )
    print(report)
    return 0


def _train_overrides(args: argparse.Namespace) -> dict[str, float]:
    out: dict[str, float] = {}
    if args.max_minutes is not None:
        out["max_minutes"] = args.max_minutes
    if args.dp_epsilon is not None:
        if not args.dp_epsilon > 0:
            raise SystemExit("--dp-epsilon must be > 0")
        out.update(dp_epsilon=args.dp_epsilon, dp_clip=args.dp_clip)
        if args.dp_delta is not None:
            out["dp_delta"] = args.dp_delta
    return out


def cmd_evaluate(args: argparse.Namespace) -> int:
    from streamrec.datasets import load_dataset
    from streamrec.quality import evaluate_checkpoint, format_table

    s = _settings(args)
    if args.data_root:
        s = s.replace(data={"root": args.data_root})
    if args.online:
        return _evaluate_online(args, s)
    from streamrec.recommend.offline import ListProtocol

    ds = load_dataset(args.dataset, args.format, root=args.data_root or s.data.root, min_events=3)
    exclude = not args.keep_history and ds.exclude_history
    protocol = ListProtocol.from_settings(s)
    rows = evaluate_checkpoint(ds, Path(args.checkpoint or s.model.checkpoint), exclude, protocol)
    print(format_table(ds, rows))
    print(f"\nhistory {'removed' if exclude else 'kept'} from the ranking; {protocol.describe()}")
    return 0


def _evaluate_online(args: argparse.Namespace, s: Settings) -> int:
    from streamrec.online.run import OnlineConfig, describe, run_online

    cfg = OnlineConfig(
        dataset=args.dataset,
        fmt=args.format,
        out=Path(args.out or f"var/online/{Path(args.dataset).name}"),
        fit_fraction=args.fit_fraction,
        train_minutes=args.train_minutes,
        retrain=args.retrain,
        rate=args.rate,
        keep_topics=args.keep_topics,
        nice=args.nice,
        continual=args.continual,
        trainer_slices=args.trainer_slices,
    )
    result = run_online(cfg, s)
    print(describe(result))
    print(f"\nresults: {cfg.out / 'online.json'}")
    return 0


def cmd_backfill(args: argparse.Namespace) -> int:
    from streamrec.backfill import BackfillPlan, run_backfill

    s = _settings(args)
    plan = BackfillPlan(
        live=s,
        new_app_id=args.app_id,
        new_datadir=args.datadir or f"var/{args.app_id}",
        checkpoint=s.model.checkpoint if args.checkpoint is None else args.checkpoint,
        shadow_topic=args.shadow_topic or "",
        web_port=args.web_port,
        max_lag=args.max_lag,
        stop_timeout_s=args.stop_timeout,
    )
    if plan.new_app_id == s.app.id:
        print("error: --app-id must differ from the live app's id (app.id)", file=sys.stderr)
        return 2
    logs = Path(plan.new_datadir).parent / f"{plan.new_app_id}.backfill.log"
    run_backfill(plan, logs, Path(args.state) if args.state else None, say=_say)
    if not args.serve:
        return 0
    from streams.run import run_worker

    _say(f"serving: app {plan.new_app_id!r} on {s.topics.recommendations}")
    return run_worker(plan.serving_settings())


def _say(line: str) -> None:
    print(line, flush=True)  # operators (and tests) follow the phases as they happen


def cmd_recs(args: argparse.Namespace) -> int:
    from streamrec.kafka.lookup import latest_list

    try:
        found = latest_list(_settings(args), args.user, timeout_s=args.timeout)
    except (LookupError, TimeoutError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if found is None:
        print(f"no list published for user {args.user!r}", file=sys.stderr)
        return 1
    print(orjson.dumps(found, option=orjson.OPT_INDENT_2).decode())
    return 0


def cmd_forget(args: argparse.Namespace) -> int:
    from streamrec.kafka.forget import request_forget

    s = _settings(args)
    sent = request_forget(s, args.users)
    _say(f"asked to forget {sent} user(s) on {s.topics.forget}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from streamrec.demo import DemoConfig, run_demo

    return run_demo(
        _settings(args),
        DemoConfig(
            users=args.users,
            items=args.items,
            rate=args.rate,
            keep_broker=args.keep_broker,
            keep_s=args.keep,
            screenshot=Path(args.screenshot) if args.screenshot else None,
            dashboard=not args.no_dashboard,
        ),
    )


def build_parser() -> argparse.ArgumentParser:
    # light imports: no Kafka client, no torch
    from streamrec.datasets import DATASETS
    from streamrec.replay_sources import FORMATS, ORDERS

    p = argparse.ArgumentParser(prog="streamrec", description=__doc__)
    p.add_argument(
        "--config", help="TOML file overriding config/default.toml (or $STREAMREC_CONFIG)"
    )
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)

    # parsed by streamrec.kafka.broker (see main); listed here for --help
    sub.add_parser("kafka", help="the local development broker: start|stop|status")

    t = sub.add_parser("topics", help="create streamrec's topics")
    t.add_argument("action", choices=["create"])
    t.set_defaults(func=cmd_topics)

    w = sub.add_parser("worker", help="run a stream worker (scale out: more of them, same app id)")
    w.set_defaults(func=cmd_worker)

    db = sub.add_parser(
        "dashboard",
        help="a live web page over every worker of the group: rates, latency, lag, a user "
        "inspector (settings: [dashboard])",
    )
    db.add_argument("--host", help="bind address (dashboard.host)")
    db.add_argument("--port", type=int, help="dashboard.port")
    db.add_argument("--workers", help="comma-separated worker URLs (default: the consumer group's)")
    db.set_defaults(func=cmd_dashboard)

    tn = sub.add_parser(
        "trainer",
        help="continual training: fine-tune the serving model on the stream, publish it to "
        "model.checkpoint past a gate on newer held-out events (settings: [trainer])",
    )
    tn.add_argument(
        "--once",
        action="store_true",
        help="read what the topics hold now, run one cycle, print it; exit 0 if published",
    )
    tn.set_defaults(func=cmd_trainer)

    g = sub.add_parser("generate", help="write a synthetic catalog and event log")
    g.add_argument("--users", type=int, default=2000)
    g.add_argument("--items", type=int, default=1000)
    g.add_argument("--days", type=int, default=14)
    g.add_argument("--seed", type=int, default=7)
    g.add_argument("--out", default="var/generated")
    g.set_defaults(func=cmd_generate)

    r = sub.add_parser(
        "replay",
        help="publish an event log or a public dataset to the event topics",
        description="Publish events to the event topics: a file in the project's format "
        "(JSON Lines, CSV, Parquet), a public log with --format, or a dataset name under data.root.",
    )
    r.add_argument("source", help=f"a file, or a dataset name: {', '.join(DATASETS)}")
    r.add_argument("--format", choices=FORMATS, help="default: by the file's suffix")
    r.add_argument("--data-root", help="overrides data.root for dataset names")
    r.add_argument("--items", help="catalog JSONL to publish first")
    pace = r.add_mutually_exclusive_group()
    pace.add_argument(
        "--rate", type=float, default=None, help="events/s (default: as fast as possible)"
    )
    pace.add_argument(
        "--time-scale",
        type=float,
        default=None,
        help="follow the original timestamps, this many source seconds per second (3600: an hour/s)",
    )
    r.add_argument(
        "--state",
        help="resume file: records how far the replay got; a rerun with it continues from there",
    )
    r.add_argument(
        "--order",
        choices=ORDERS,
        default=None,
        help="time (default where the source has timestamps; loads it into memory) or file",
    )
    r.add_argument("--limit", type=int, default=None, help="only the first N events of the order")
    r.add_argument("--retime", action="store_true", help="stamp events with the send time")
    r.set_defaults(func=cmd_replay)

    tr = sub.add_parser("train", help="train the encoder from an event log")
    tr.add_argument("--events", required=True)
    tr.add_argument("--items")
    tr.add_argument("--out", help="checkpoint directory (default: model.checkpoint)")
    tr.add_argument("--epochs", type=int, default=None)
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument(
        "--preset", default="streamrec", help="model + training recipe (encoders/presets.py)"
    )
    tr.add_argument(
        "--max-minutes", type=float, default=None, help="stop after the epoch that passes this"
    )
    tr.add_argument(
        "--dp-epsilon",
        type=float,
        default=None,
        help="train with DP-SGD to user-level (epsilon, delta) (encoders/private.py); epsilon, "
        "delta and the clipping norm go into the checkpoint's metadata",
    )
    tr.add_argument("--dp-delta", type=float, default=None, help="default: min(1e-5, 0.1/users)")
    tr.add_argument("--dp-clip", type=float, default=1.0, help="per-user gradient norm bound")
    tr.set_defaults(func=cmd_train)

    ev = sub.add_parser(
        "evaluate",
        help="leave-one-out HR/NDCG@10,50 of a checkpoint; --online: prequential, on the broker",
    )
    ev.add_argument("dataset", help="a dataset name under data.root, or a file with --format")
    ev.add_argument(
        "--format", help="sasrec | movielens | recbole | taobao | trivago | yoochoose | events"
    )
    ev.add_argument("--checkpoint", help="checkpoint directory (default: model.checkpoint)")
    ev.add_argument("--data-root", help="overrides data.root")
    ev.add_argument("--keep-history", action="store_true", help="rank seen items too")
    on = ev.add_argument_group(
        "online (prequential) evaluation, on the broker of the settings (docs/benchmarks.md)"
    )
    on.add_argument(
        "--online",
        action="store_true",
        help="fit on the earlier part of time, replay the log through real workers and score "
        "each later event against the list shown before it",
    )
    on.add_argument("--out", help="checkpoints, worker state and results (var/online/DATASET)")
    on.add_argument("--fit-fraction", type=float, default=0.75, help="share of events fit on")
    on.add_argument(
        "--train-minutes",
        type=float,
        default=30.0,
        help="a guard per model: fits end by early stopping on validation, not by time",
    )
    on.add_argument("--retrain", action="store_true", help="fit again even if checkpoints exist")
    on.add_argument("--rate", type=float, default=400.0, help="replay events/s")
    on.add_argument("--nice", type=int, default=0, help="niceness of the worker processes")
    on.add_argument("--keep-topics", action="store_true")
    on.add_argument(
        "--continual",
        action="store_true",
        help="add a row served by a worker whose model `streamrec trainer` fine-tunes, gates and "
        "publishes inside the evaluation window (settings [trainer])",
    )
    on.add_argument(
        "--trainer-slices",
        type=int,
        default=4,
        help="with --continual: the window is replayed in this many slices, with one trainer "
        "cycle on everything sent so far before each slice after the first",
    )
    ev.set_defaults(func=cmd_evaluate)

    bf = sub.add_parser(
        "backfill",
        help="rebuild a new app's state from the retained topics, then cut over (docs/backfill.md)",
    )
    bf.add_argument("--app-id", required=True, help="the new app id (fresh tables, changelogs)")
    bf.add_argument("--datadir", help="the new app's state directory (default var/APP_ID)")
    bf.add_argument("--checkpoint", help="the new app's model (default: model.checkpoint)")
    bf.add_argument("--web-port", type=int, default=0, help="new app's (default app.web_port+1)")
    bf.add_argument("--shadow-topic", help="catch-up output (default RECS.backfill.APP_ID)")
    bf.add_argument(
        "--max-lag", type=int, default=0, help="events behind the input end that count as caught up"
    )
    bf.add_argument("--state", help="write the hand-over offsets to this JSON file")
    bf.add_argument(
        "--stop-timeout",
        type=float,
        default=3600.0,
        help="seconds to wait for the live app to stop",
    )
    bf.add_argument(
        "--serve", action="store_true", help="after the cutover, run the new app's worker here"
    )
    bf.set_defaults(func=cmd_backfill)

    rc = sub.add_parser("recs", help="the latest list published for a user")
    rc.add_argument("user")
    rc.add_argument("--timeout", type=float, default=10.0)
    rc.set_defaults(func=cmd_recs)

    fg = sub.add_parser(
        "forget",
        help="forget users everywhere: their records, lists and cached state (a request on the "
        "forget topic, which the worker holding each user carries out)",
    )
    fg.add_argument("users", nargs="+", metavar="USER_ID")
    fg.set_defaults(func=cmd_forget)

    d = sub.add_parser("demo", help="broker, data, training, worker and live events, end to end")
    d.add_argument("--users", type=int, default=1000)
    d.add_argument("--items", type=int, default=600)
    d.add_argument("--rate", type=float, default=400.0, help="live events/s")
    d.add_argument("--keep-broker", action="store_true")
    d.add_argument(
        "--keep",
        type=float,
        nargs="?",
        const=float("inf"),
        default=0.0,
        metavar="SECONDS",
        help="keep the worker and the dashboard running this long after the summary (no value: "
        "until Ctrl-C)",
    )
    d.add_argument("--no-dashboard", action="store_true", help="run without the dashboard")
    d.add_argument(
        "--screenshot",
        metavar="PNG",
        help="save a headless-Chromium screenshot of the dashboard during the live phase",
    )
    d.set_defaults(func=cmd_demo)
    return p


def _command_index(argv: list[str]) -> int | None:
    """Where the sub-command is, past the global options (-v, --config FILE)."""
    i = 0
    while i < len(argv):
        if argv[i] in ("-v", "--verbose") or argv[i].startswith("--config="):
            i += 1
        elif argv[i] == "--config":
            i += 2
        else:
            return i if not argv[i].startswith("-") else None
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = _command_index(argv)
    if command is not None and argv[command] == "kafka":
        # The broker's own parser (streamrec.kafka.broker), its -h included.
        from streamrec.kafka import broker

        return broker.main(argv[command + 1 :])
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:
        # the Kafka clients narrate every connection at INFO
        for noisy in ("kafka", "aiokafka"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        rc: Any = args.func(args)
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return int(rc or 0)
