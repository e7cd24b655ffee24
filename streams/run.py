"""Run one worker process (``streamrec worker``): SIGTERM/SIGINT stop it gracefully."""

from __future__ import annotations

import logging

import faust
from kafka.errors import KafkaError

from encoders.checkpoint import CheckpointError
from streamrec.settings import Settings
from streams.topics import create_topics
from streams.worker import Worker

log = logging.getLogger(__name__)


def ensure_topics(settings: Settings) -> None:
    """Create missing topics with their proper partitions and configs. Where the worker's
    credentials may not create topics, an operator runs `streamrec topics create` instead."""
    try:
        created = [t for t, outcome in create_topics(settings).items() if outcome == "created"]
    except KafkaError as exc:
        log.warning("could not check/create topics (%s); expecting them to exist", exc)
        return
    if created:
        log.info("created topics: %s", ", ".join(created))


def run_worker(settings: Settings) -> int:
    ensure_topics(settings)
    try:
        worker = Worker(settings)
    except CheckpointError as exc:
        # A configured model that cannot be loaded is an operator's mistake to fix, not a reason to
        # serve the heuristic lists silently (a worker that already serves a model keeps it: _poll_model).
        log.error(
            "refusing to start: the model checkpoint %r cannot be loaded: %s "
            "(fix or replace it; with no model.json there the worker serves the heuristic lists)",
            settings.model.checkpoint,
            exc,
        )
        return 2  # as for a configuration error (streamrec.cli)
    log.info(
        "worker app=%s brokers=%s partitions=%d model=%s datadir=%s",
        settings.app.id,
        settings.kafka.bootstrap_servers,
        settings.topics.partitions,
        worker.recommender.model_version,
        settings.app.datadir,
    )
    runner = faust.Worker(worker.app, loglevel=settings.app.log_level, quiet=True)
    try:
        runner.execute_from_commandline()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0
