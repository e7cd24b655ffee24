"""The dashboard's web app without a broker: its page, its API, and who may see user data."""

from __future__ import annotations

import asyncio

import orjson
from aiohttp.test_utils import TestClient, TestServer

from streamrec.dashboard.server import Dashboard
from streamrec.settings import load_settings


def _settings(host: str = "127.0.0.1", token: str = ""):
    s = load_settings(env={})
    # no broker anywhere: a closed port, and a configured (dead) worker instead of discovery
    return s.replace(
        kafka={"bootstrap_servers": "127.0.0.1:9"},
        dashboard={"host": host, "workers": "http://127.0.0.1:9", "poll_s": 0.2},
        app={"web_token": token},
    )


def _run(settings, check) -> None:
    async def go() -> None:
        client = TestClient(TestServer(Dashboard(settings).app()))
        await client.start_server()
        try:
            await check(client)
        finally:
            await client.close()

    asyncio.run(go())


def test_page_state_and_a_down_worker():
    async def check(client: TestClient) -> None:
        page = await client.get("/")
        text = await page.text()
        assert page.status == 200 and "streamrec" in text and "/static/dashboard.js" in text
        js = await client.get("/static/dashboard.js")
        assert js.status == 200 and "EventSource" in await js.text()
        assert (await client.get("/static/..%2Fserver.py")).status == 404
        for _ in range(50):
            state = orjson.loads(await (await client.get("/api/state")).read())
            if state["workers"]:
                break
            await asyncio.sleep(0.1)
        (worker,) = state["workers"]
        assert worker["url"] == "http://127.0.0.1:9" and worker["ok"] is False and worker["error"]
        assert state["points"][-1]["workers_up"] == 0

    _run(_settings(), check)


def test_user_data_needs_loopback_or_the_token():
    async def wide_open(client: TestClient) -> None:
        r = await client.get("/api/users/u1")
        assert r.status == 403 and "web_token" in (await r.json())["error"]

    _run(_settings(host="0.0.0.0"), wide_open)

    async def with_token(client: TestClient) -> None:
        assert (await client.get("/api/users/u1")).status == 401
        wrong = await client.get("/api/users/u1", headers={"Authorization": "Bearer nope"})
        assert wrong.status == 401
        # the right token passes the gate (to the id check, before any broker is asked)
        right = await client.get(
            "/api/users/" + "u" * 500, headers={"Authorization": "Bearer s3cret"}
        )
        assert right.status == 400

    _run(_settings(host="0.0.0.0", token="s3cret"), with_token)
