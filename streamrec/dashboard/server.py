"""`streamrec dashboard`: one page over every worker of the group, updated live (server-sent
events).

A process of its own rather than a page on each worker: it shows the whole group (a worker knows
only its partitions), and its polling, page serving and output-topic reading stay off the
workers' event loops, whose latency is the product. It reads only what operators' tools read:
each worker's /health/ and /metrics/, its /users/<id>/ for the inspector, and the output topic.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import logging
import time
from collections.abc import AsyncIterator
from importlib import resources
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
from aiohttp import web
from kafka import KafkaConsumer

from streamrec.dashboard.discover import configured_urls, group_urls
from streamrec.dashboard.lists import ListFollower
from streamrec.dashboard.scrape import Reading, parse_metrics
from streamrec.dashboard.series import SeriesConfig, Timeline, list_moves, worker_view
from streamrec.kafka.lookup import partition_for
from streamrec.settings import Settings
from streams.web_auth import user_data_refusal

log = logging.getLogger(__name__)

STATIC = resources.files("streamrec.dashboard") / "static"
STATIC_TYPES = {".js": "text/javascript", ".css": "text/css", ".html": "text/html"}
DISCOVER_EVERY_S = 10.0
MAX_CLIENTS = 64  # open event streams; more are refused (each holds a queue)


class Dashboard:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        d = settings.dashboard
        self.timeline = Timeline(SeriesConfig(d.poll_s, d.history_s, d.window_s))
        self.fixed_urls = configured_urls(d.workers)
        self.urls: list[str] = list(self.fixed_urls)
        self.latest: dict[str, Reading] = {}
        self.discovery_error: str | None = None
        self.polls = 0
        self.follower = ListFollower(settings)
        self._clients: set[asyncio.Queue[bytes]] = set()
        self._n_partitions: int | None = None
        self._session: aiohttp.ClientSession | None = None

    # -- reading the workers --------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        token = self.settings.app.web_token
        return {"Authorization": f"Bearer {token}"} if token else {}

    async def _get(self, url: str) -> tuple[int, bytes]:
        assert self._session is not None
        async with self._session.get(url, headers=self._headers()) as r:
            return r.status, await r.read()

    async def read_worker(self, url: str) -> Reading:
        t = time.time()
        try:
            (_, health), (mstatus, metrics) = await asyncio.gather(
                self._get(f"{url}/health/"), self._get(f"{url}/metrics/")
            )
            if mstatus != 200:
                return Reading(url, t, error=f"/metrics/ answered {mstatus}")
            return Reading(url, t, health=orjson.loads(health), **parse_metrics(metrics.decode()))
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            return Reading(url, t, error=f"{type(exc).__name__}: {exc}".strip(": "))

    async def _discover(self) -> None:
        if self.fixed_urls:
            return
        try:
            urls = await asyncio.to_thread(
                group_urls, self.settings.kafka_client_config(), self.settings.app.id
            )
        except Exception as exc:  # the broker is away: keep the workers known so far
            self.discovery_error = f"{type(exc).__name__}: {exc}"
            return
        self.discovery_error = None
        self.urls = urls

    async def poll_forever(self) -> None:
        last_discovery = float("-inf")
        while True:
            started = time.monotonic()
            if started - last_discovery >= DISCOVER_EVERY_S:
                await self._discover()
                last_discovery = started
            readings = await asyncio.gather(*(self.read_worker(u) for u in self.urls))
            self.latest = {r.url: r for r in readings}
            point = self.timeline.add(readings)
            self.polls += 1
            self._broadcast({"point": point, **self._now()})
            await asyncio.sleep(
                max(0.0, self.settings.dashboard.poll_s - (time.monotonic() - started))
            )

    def _now(self) -> dict[str, Any]:
        return {
            "workers": [worker_view(self.latest[u]) for u in sorted(self.latest)],
            "latency_histogram": self.timeline.latency_histogram(),
            "discovery": {
                "from": "settings" if self.fixed_urls else f"consumer group {self.settings.app.id}",
                "error": self.discovery_error,
            },
            "polls": self.polls,
            "recent_users": self.follower.recent_users(),
        }

    def state(self) -> dict[str, Any]:
        return {"points": list(self.timeline.points), **self._now(), "config": self._config()}

    def _config(self) -> dict[str, Any]:
        d = self.settings.dashboard
        return {
            "poll_s": d.poll_s,
            "window_s": d.window_s,
            "history_s": d.history_s,
            "group": self.settings.app.id,
            "recommendations_topic": self.settings.topics.recommendations,
        }

    def _broadcast(self, message: dict[str, Any]) -> None:
        body = orjson.dumps(message)
        for q in list(self._clients):
            if q.full():  # a slow reader skips a beat rather than holding memory
                with contextlib.suppress(asyncio.QueueEmpty):
                    q.get_nowait()
            q.put_nowait(body)

    # -- the user inspector ---------------------------------------------------------------------

    def _partitions(self) -> int:
        if self._n_partitions is None:
            consumer = KafkaConsumer(**self.settings.kafka_client_config(), group_id=None)
            try:
                found = consumer.partitions_for_topic(self.settings.topics.click)
            finally:
                consumer.close()
            if not found:
                raise LookupError(f"topic {self.settings.topics.click} does not exist")
            self._n_partitions = len(found)
        return self._n_partitions

    async def inspect(self, user_id: str) -> dict[str, Any]:
        """The user's partition, the worker that owns it, their record there, and their newest
        two lists with what moved between them."""
        partition = partition_for(user_id.encode(), await asyncio.to_thread(self._partitions))
        owner = next(
            (u for u, r in self.latest.items() if r.ok and partition in r.partitions), None
        )
        state: dict[str, Any] | None = None
        error = None
        if owner is None:
            error = f"no worker owns partition {partition} right now"
        else:
            status, body = await self._get(f"{owner}/users/{quote(user_id, safe='')}/")
            if status == 200:
                state = orjson.loads(body)
            elif status != 404:
                error = f"{owner} answered {status}: {body.decode(errors='replace')[:200]}"
        previous, current = await asyncio.to_thread(self.follower.lists, user_id)
        return {
            "user_id": user_id,
            "partition": partition,
            "worker": owner,
            "state": state,
            "error": error or self.follower.error,
            "previous": previous,
            "current": current,
            "moves": list_moves(previous, current) if current else None,
        }

    # -- the web app ----------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/", self._page)
        app.router.add_get("/static/{name}", self._static)
        app.router.add_get("/api/state", self._state)
        app.router.add_get("/api/stream", self._stream)
        app.router.add_get("/api/users/{user_id}", self._user)
        app.router.add_get("/health", self._health)
        app.cleanup_ctx.append(self._running)
        return app

    async def _running(self, app: web.Application) -> AsyncIterator[None]:
        timeout = aiohttp.ClientTimeout(total=max(0.5, self.settings.dashboard.poll_s * 2))
        self._session = aiohttp.ClientSession(timeout=timeout)
        self.follower.start()
        poller = asyncio.create_task(self.poll_forever())
        yield
        poller.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await poller
        await self._session.close()
        await asyncio.to_thread(self.follower.stop)

    async def _page(self, request: web.Request) -> web.Response:
        # Server-rendered: the workers as last read, so the page says something before its
        # script connects; the script then redraws it live.
        rows = "".join(
            f"<tr><td>{html.escape(w['url'])}</td><td>{html.escape(str(w.get('status') or w.get('error')))}</td>"
            f"<td>{html.escape(str(w.get('model_version', '')))}</td>"
            f"<td>{html.escape(str(w.get('partitions', '')))}</td></tr>"
            for w in self._now()["workers"]
        )
        page = (STATIC / "index.html").read_text()
        page = page.replace("{{group}}", html.escape(self.settings.app.id))
        page = page.replace("{{topic}}", html.escape(self.settings.topics.recommendations))
        page = page.replace(
            "{{workers}}", rows or '<tr><td colspan="4">no worker read yet</td></tr>'
        )
        return web.Response(text=page, content_type="text/html")

    async def _static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        suffix = "." + name.rsplit(".", 1)[-1] if "." in name else ""
        if "/" in name or name.startswith(".") or suffix not in STATIC_TYPES:
            raise web.HTTPNotFound()
        path = STATIC / name
        if not path.is_file():
            raise web.HTTPNotFound()
        return web.Response(text=path.read_text(), content_type=STATIC_TYPES[suffix])

    async def _state(self, request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps(self.state()), content_type="application/json")

    async def _health(self, request: web.Request) -> web.Response:
        up = sum(1 for r in self.latest.values() if r.ok)
        body = {"polls": self.polls, "workers": len(self.latest), "workers_up": up}
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        if len(self._clients) >= MAX_CLIENTS:
            raise web.HTTPServiceUnavailable(text="too many open dashboards")
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=8)
        self._clients.add(queue)
        try:
            while True:
                body = await queue.get()
                await response.write(b"data: " + body + b"\n\n")
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self._clients.discard(queue)
        return response

    async def _user(self, request: web.Request) -> web.Response:
        refused = user_data_refusal(
            self.settings.dashboard.host,
            self.settings.app.web_token,
            request.headers.get("Authorization"),
        )
        if refused is not None:
            status = 401 if self.settings.app.web_token else 403
            return web.Response(
                body=orjson.dumps({"error": refused}),
                status=status,
                content_type="application/json",
            )
        user_id = request.match_info["user_id"]
        if not user_id or len(user_id) > self.settings.validation.max_id_length:
            raise web.HTTPBadRequest(text="a user id of 1 to validation.max_id_length characters")
        try:
            body = await self.inspect(user_id)
        except (LookupError, TimeoutError, aiohttp.ClientError, OSError) as exc:
            body = {"user_id": user_id, "error": f"{type(exc).__name__}: {exc}"}
            return web.Response(
                body=orjson.dumps(body), status=502, content_type="application/json"
            )
        return web.Response(body=orjson.dumps(body), content_type="application/json")


def run_dashboard(settings: Settings) -> int:
    d = settings.dashboard
    dash = Dashboard(settings)
    print(f"dashboard on http://{d.host}:{d.port}/ (group {settings.app.id})", flush=True)
    web.run_app(dash.app(), host=d.host, port=d.port, print=None, access_log=None)
    return 0
