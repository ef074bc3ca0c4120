"""A real webhook receiver for the tests: an aiohttp server on loopback that verifies
every delivery with the `standardwebhooks` package, keeps what it received, and can
be told to fail, to hang, or to be down."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from standardwebhooks import Webhook, WebhookVerificationError

from tests.conftest import free_port


@dataclass
class Delivery:
    at: float  # monotonic arrival time
    id: str
    body: bytes
    headers: dict[str, str]
    message: dict[str, Any]
    answer: str = ""  # what the receiver did: ok, fail, hang, redirect


@dataclass
class Receiver:
    secret: str
    port: int = field(default_factory=free_port)
    # mode(delivery) -> "ok" | "fail" | "hang"; default: accept everything
    mode: Callable[[Delivery], str] = lambda _: "ok"
    received: list[Delivery] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)  # deliveries that did not verify
    redirected: int = 0  # requests that followed a redirect (must stay 0)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = dict(request.headers)
        try:
            message = Webhook(self.secret).verify(body, headers)
        except WebhookVerificationError as exc:
            self.rejected.append(f"{headers.get('webhook-id')}: {exc}")
            return web.Response(status=400)
        if request.content_type != "application/json":
            self.rejected.append(f"{headers.get('webhook-id')}: {request.content_type}")
        delivery = Delivery(time.monotonic(), headers["webhook-id"], body, headers, message)
        mode = delivery.answer = self.mode(delivery)
        self.received.append(delivery)
        self.changed.set()
        if mode == "hang":
            await asyncio.sleep(3600)
        if mode == "fail":
            return web.Response(status=500, text="not now")
        if mode == "redirect":
            raise web.HTTPFound("/elsewhere")
        return web.Response(status=204)

    async def _elsewhere(self, request: web.Request) -> web.Response:
        self.redirected += 1
        return web.Response(status=204)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        app.router.add_route("*", "/elsewhere", self._elsewhere)
        self._runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.1)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        """Down: the port refuses connections until `start` again."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Receiver:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def ids(self) -> list[str]:
        return [d.id for d in self.received]

    def unique(self) -> dict[str, Delivery]:
        """The first delivery of each webhook-id (receivers de-duplicate by it)."""
        first: dict[str, Delivery] = {}
        for d in self.received:
            first.setdefault(d.id, d)
        return first

    def bodies_by_id(self) -> dict[str, set[bytes]]:
        out: dict[str, set[bytes]] = {}
        for d in self.received:
            out.setdefault(d.id, set()).add(d.body)
        return out

    async def until(self, predicate: Callable[[], bool], timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"receiver: condition not met in {timeout} s; got "
                    + json.dumps(self.ids()[-20:])
                )
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), min(left, 0.2))
            except TimeoutError:
                pass


def secret() -> str:
    import base64
    import secrets as s

    return "whsec_" + base64.b64encode(s.token_bytes(32)).decode()
