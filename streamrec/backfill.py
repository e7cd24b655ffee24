"""Backfill: rebuild a new app's state from the retained event topics, then cut over with no gap.

A new app version or model gets a NEW app id, so fresh tables and changelogs. It cannot simply
start publishing: while it works through history it would overwrite users' current lists with
lists for their old events. So `streamrec backfill`:

1. catch-up: runs the new app as a real `streamrec worker` child process, consuming the input
   topics from the beginning, with its lists going to a shadow topic; until its committed offsets
   are within ``max_lag`` events of the end of the input;
2. stops it gracefully; its committed offsets are the backfill offsets ``B``;
3. waits until the live app has committed at least ``B`` on every partition (so every event up
   to ``B`` has its list on the live topic), and records the hand-over point in the state file;
4. tells the operator to stop the live app's workers, and waits until its group is empty.

The operator then starts the new app's workers with the live output topic. They resume at ``B``:
events after ``B`` get their lists from the new app, events up to the live app's final offsets
``L >= B`` already had theirs from the live app, so every event has a list on the output topic
(events in ``B..L`` get two, the new app's last). See docs/backfill.md.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from kafka import KafkaAdminClient, TopicPartition
from tqdm import tqdm

from streamrec.atomic import write_atomic
from streamrec.kafka import groups
from streamrec.settings import Settings
from streamrec.wait import wait_until
from streamrec.worker_process import WorkerProcess

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BackfillPlan:
    live: Settings  # the running app (its id and output topic)
    new_app_id: str
    new_datadir: str
    checkpoint: str  # the new app's model ("" = popularity)
    web_port: int = 0  # the new app's web port (0: the live app's + 1, so both fit on one host)
    shadow_topic: str = ""  # default: <recommendations>.backfill.<new app id>
    max_lag: int = 0  # events behind the input's end at which catch-up counts as done
    timeout_s: float = 3600.0
    stop_timeout_s: float = 3600.0  # how long to wait for the operator to stop the live app

    @property
    def shadow(self) -> str:
        return self.shadow_topic or f"{self.live.topics.recommendations}.backfill.{self.new_app_id}"

    @property
    def port(self) -> int:
        return self.web_port or self.live.app.web_port + 1

    def catch_up_settings(self) -> Settings:
        return self.live.replace(
            app={"id": self.new_app_id, "datadir": self.new_datadir, "web_port": self.port},
            topics={"recommendations": self.shadow},
            model={"checkpoint": self.checkpoint},
        )

    def serving_settings(self) -> Settings:
        """The new app as it serves after the cutover: the live output topic."""
        return self.live.replace(
            app={"id": self.new_app_id, "datadir": self.new_datadir, "web_port": self.port},
            model={"checkpoint": self.checkpoint},
        )


@dataclass(frozen=True)
class Handover:
    backfill: dict[TopicPartition, int]  # the new app's committed offsets (it resumes here)
    live: dict[TopicPartition, int]  # the live app's committed offsets when it stopped

    def to_dict(self) -> dict[str, Any]:
        def enc(offsets: dict[TopicPartition, int]) -> dict[str, int]:
            return {f"{tp.topic}:{tp.partition}": off for tp, off in sorted(offsets.items())}

        return {"backfill": enc(self.backfill), "live": enc(self.live)}


def group_members(settings: Settings, group: str) -> int:
    """Active members of a consumer group (0 once every worker of the app has stopped)."""
    admin = KafkaAdminClient(**settings.kafka_client_config(), client_id="streamrec-backfill")
    try:
        info = admin.describe_groups([group]).get(group) or {}
        return len(info.get("members") or ())
    finally:
        admin.close()


def run_backfill(
    plan: BackfillPlan,
    log_path: Path,
    state_path: Path | None = None,
    say: Callable[[str], None] = print,
    progress: bool = True,
) -> Handover:
    client = plan.live.kafka_client_config()
    inputs = list(plan.live.topics.event_topics().values())
    worker = WorkerProcess(plan.catch_up_settings(), log_path).start()
    say(f"catch-up: app {plan.new_app_id!r} reading {', '.join(inputs)} -> {plan.shadow}")
    try:
        worker.wait_healthy(plan.timeout_s)
        with tqdm(desc="backfill", unit="ev", disable=not progress, dynamic_ncols=True) as bar:

            def show(p: groups.Progress) -> None:
                bar.total = sum(p.end.values())
                bar.n = bar.total - p.lag
                bar.refresh()

            try:
                groups.wait_for(
                    client,
                    plan.new_app_id,
                    inputs,
                    max_lag=plan.max_lag,
                    timeout_s=plan.timeout_s,
                    on_poll=show,
                    alive=worker.alive,
                )
            except RuntimeError as exc:  # the worker died
                raise RuntimeError(f"the backfill worker exited:\n{worker.log_tail()}") from exc
    finally:
        worker.stop()
    backfill = groups.committed_offsets(client, plan.new_app_id, inputs)
    say(f"caught up and stopped: {plan.new_app_id!r} resumes at {sum(backfill.values()):,} events")

    # Every event up to the backfill offsets must have a list from the live app before it stops.
    groups.wait_for(client, plan.live.app.id, inputs, target=backfill, timeout_s=plan.timeout_s)
    say(
        f"READY: the live app {plan.live.app.id!r} has passed the backfill offsets. "
        f"Stop its workers now; then start the new workers with app.id={plan.new_app_id} "
        f"(datadir {plan.new_datadir}, model {plan.checkpoint or 'none'})."
    )
    wait_until(
        lambda: group_members(plan.live, plan.live.app.id) == 0,
        timeout_s=plan.stop_timeout_s,
        what=f"the live app {plan.live.app.id!r} to stop its workers",
        poll_s=1.0,
    )
    live = groups.committed_offsets(client, plan.live.app.id, inputs)
    if not all(live.get(tp, 0) >= off for tp, off in backfill.items()):
        # Cannot happen unless offsets were reset meanwhile: then the cutover would leave a gap.
        raise RuntimeError("the live app's final offsets are behind the backfill's")
    handover = Handover(backfill, live)
    if state_path is not None:
        write_atomic(state_path, orjson.dumps(handover.to_dict(), option=orjson.OPT_INDENT_2))
    overlap = sum(live.values()) - sum(backfill.values())
    say(
        f"CUTOVER: the live app has stopped; start the new app's workers now. They republish "
        f"the lists of the {overlap:,} events the live app processed after the backfill stopped."
    )
    return handover
