"""The dashboard in a real browser: a broker, a worker, `streamrec dashboard` finding the worker
through the consumer group, and headless Chromium watching the numbers move as events are
produced and the user inspector show the list that is on the output topic."""

from __future__ import annotations

import threading
import time

import orjson
import pytest

from streamrec.dashboard import browser
from streamrec.dashboard.process import DashboardProcess
from streamrec.kafka.broker import free_port
from streams.topics import create_topics
from tests.integration.worker_proc import (
    REPO,
    WorkerProcess,
    console_consume,
    make_settings,
    send_events,
    send_items,
)

pytestmark = pytest.mark.broker
SCREENSHOT = REPO / "var" / "test-artifacts" / "dashboard.png"
USERS = [f"dash-u{k}" for k in range(6)]


def _events(prefix: str, n: int, t0: float) -> list[dict]:
    return [
        {
            "event_id": f"{prefix}-{k}",
            "user_id": USERS[k % len(USERS)],
            "item_id": f"i{(k * 7) % 23}",
            "type": ("browse", "browse", "click", "purchase")[k % 4],
            "ts": t0 + k * 0.01,
        }
        for k in range(n)
    ]


def _number(text: str) -> float:
    try:
        return float(text.split()[0])
    except (ValueError, IndexError):
        return 0.0


def test_the_dashboard_moves_with_the_stream_and_shows_the_published_list(
    kafka_bootstrap, unique_name, tmp_path
):
    why = browser.missing()
    if why is not None:
        pytest.skip(f"no headless Chromium here: {why}")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    s = make_settings(kafka_bootstrap, unique_name("dash"), tmp_path)
    s = s.replace(dashboard={"port": free_port(), "poll_s": 0.5, "window_s": 2.0})
    create_topics(s)
    send_items(
        s, [{"item_id": f"i{k}", "category": f"c{k % 3}", "title": f"item {k}"} for k in range(23)]
    )
    worker = WorkerProcess(s, tmp_path / "worker.log").start()
    dash = DashboardProcess(s, tmp_path / "dashboard.log")
    driver = None
    stop = threading.Event()
    try:
        worker.wait_healthy()
        dash.start().wait_ready(workers_up=1)
        driver = browser.chromium()
        driver.get(dash.url)
        wait = WebDriverWait(driver, 60, poll_frequency=0.2)
        wait.until(lambda d: d.find_element(By.ID, "conn").text == "live")
        # the worker was found through the group, at the URL it advertises
        host = "127.0.0.1" if s.app.web_host in ("0.0.0.0", "") else s.app.web_host
        wait.until(lambda d: f"{host}:{s.app.web_port}" in d.find_element(By.ID, "workers").text)
        assert _number(driver.find_element(By.ID, "t-events").text) == 0.0
        # consumer lag: one row per partition number, read from the worker's /metrics/
        wait.until(
            lambda d: len(d.find_elements(By.CSS_SELECTOR, "#lag tbody tr")) == s.topics.partitions
        )

        sent = {"n": 0}

        def produce() -> None:
            k = 0
            while not stop.is_set():
                sent["n"] += send_events(s, _events(f"e{k}", 20, time.time() - 1))
                k += 1
                time.sleep(0.1)

        producer = threading.Thread(target=produce, daemon=True)
        producer.start()
        wait.until(lambda d: _number(d.find_element(By.ID, "t-events").text) > 0)
        wait.until(lambda d: _number(d.find_element(By.ID, "t-lists").text) > 0)
        wait.until(lambda d: d.find_element(By.ID, "t-p50").text.endswith("ms"))
        # the chart drew the events: a path per event type
        wait.until(
            lambda d: d.find_elements(By.CSS_SELECTOR, "#c-events path[data-series='click']")
        )
        stop.set()
        producer.join(timeout=30)
        worker.wait_counter("events_in", sent["n"])
        worker.wait_counter("lists_out", 1)
        time.sleep(2.0)  # let the worker's last lists go out

        user = USERS[1]
        box = driver.find_element(By.ID, "user-id")
        box.clear()
        box.send_keys(user)
        driver.find_element(By.CSS_SELECTOR, "#inspect-form button").click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#current li[data-item]"))
        # read in one go: the page redraws the inspector as it refreshes
        page = driver.execute_script(
            "const items = (sel) => [...document.querySelectorAll(sel)].map((e) => e.dataset.item);"
            "return {list: items('#current li[data-item]'), previous: items('#previous li[data-item]'),"
            " timeline: items('#events li[data-item]'),"
            " event: document.getElementById('current').dataset.eventId};"
        )
        shown, shown_event = page["list"], page["event"]
        # the output topic as Kafka's own Java consumer reads it
        records = console_consume(s, s.topics.recommendations, 100_000, idle_ms=5_000)
        mine = [orjson.loads(v) for k, v in records if k == user and v is not None]
        assert len(mine) >= 2
        assert shown_event == mine[-1]["event_id"]
        assert shown == [e["item_id"] for e in mine[-1]["items"]]
        # the previous list beside it (the topic is not compacted yet: both are still there)
        assert page["previous"] == [e["item_id"] for e in mine[-2]["items"]]
        # the timeline is the record the owning worker holds, newest first
        _, summary = worker.get(f"/users/{user}/")
        held = summary["timeline"]
        assert len(held) >= 2
        assert page["timeline"] == [e[0] for e in reversed(held)]
        assert "partition" in driver.find_element(By.ID, "inspect-status").text
        # the page's script ran without an error
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, errors
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(SCREENSHOT))
        print(f"screenshot: {SCREENSHOT}")
    finally:
        stop.set()
        if driver is not None:
            driver.quit()
        dash.stop()
        worker.stop()
