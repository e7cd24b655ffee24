"""Run one worker process (``streamrec worker``): SIGTERM/SIGINT stop it gracefully."""

from __future__ import annotations

import logging

import faust
from kafka.errors import KafkaError

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
    worker = Worker(settings)
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
