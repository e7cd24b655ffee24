"""Run one worker process (``streamrec worker``): SIGTERM/SIGINT stop it gracefully."""

from __future__ import annotations

import logging

import faust

from streamrec.settings import Settings
from streams.worker import Worker

log = logging.getLogger(__name__)


def run_worker(settings: Settings) -> int:
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
