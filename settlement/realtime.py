"""The Socket.IO side: the `/settlement` namespace, its dispatch, and the JSON module.

Client events are routed to `SettlementServer.dispatch` (the one hook of
`compat.DispatchServer`) rather than to `on_<event>` handlers, for two
reasons: events named like the server's own life-cycle handlers (`connect`,
`disconnect`, ...) are refused instead of reaching those handlers with
arguments the client chose (python-socketio would dispatch them), and every
command of one socket runs in arrival order under that socket's lock.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
import socketio
import structlog

from . import compat, views
from .config import Settings
from .negotiation import Refusal
from .rooms import Session, TokenBucket
from .service import Service
from .shapes import Ack, error_ack, refusal

NAMESPACE = "/settlement"
MAX_QUEUED_PACKETS = 500
log = structlog.get_logger("settlement.realtime")


class JsonModule:
    """A `json`-compatible module for python-socketio: orjson out, the standard library in.

    Incoming JSON goes through `json.loads` because orjson turns integers
    beyond 64 bits into floats, and the protocol tells `1` from `1.0`.
    """

    @staticmethod
    def dumps(obj: Any, **_: Any) -> str:
        return orjson.dumps(obj).decode()

    @staticmethod
    def loads(text: str | bytes, **_: Any) -> Any:
        return json.loads(text)


class SettlementServer(compat.DispatchServer):
    """The `/settlement` namespace: every client event goes to `dispatch`."""

    service: Service
    settings: Settings
    dispatch_namespace = NAMESPACE
    max_queued_packets = MAX_QUEUED_PACKETS

    def undecodable_ack(self) -> Ack:
        return error_ack(refusal("undecodable"))

    async def dispatch(self, sid: str, data: list[Any]) -> Ack | None:
        session = self.service.registry.sessions.get(sid)
        if session is None or session.closed:
            return None
        event = data[0] if data else None
        if not isinstance(event, str) or event in compat.RESERVED_EVENTS:
            name = event if isinstance(event, str) else "?"
            log.warning("reserved_event_refused", sid=sid, event_name=str(name)[:40])
            return error_ack(Refusal("bad_request", f"{str(name)[:40]!r} is not a command."))
        args = data[1:]
        if len(args) > 1:
            payload: Any = args  # more than one argument: not an object payload
        else:
            payload = args[0] if args else None
        if self.service.draining:
            return error_ack(refusal("draining"))
        if not session.bucket.take():
            # Checked on arrival, before the socket's queue: "before everything else".
            return await self.service.rate_limited(session, event, payload)
        # Counted from arrival, so a graceful shutdown waits also for the commands
        # queued behind this socket's earlier ones.
        self.service.begin()
        try:
            async with session.lock:
                if session.closed:
                    return None
                return await self.service.handle(session, event, payload)
        finally:
            self.service.end()


def client_address(environ: dict[str, Any], trust_proxy: bool) -> str:
    """The peer's address (python-engineio's environ always says 127.0.0.1)."""
    if trust_proxy:
        forwarded = environ.get("HTTP_X_FORWARDED_FOR", "")
        if forwarded:
            return str(forwarded.split(",")[-1].strip())  # the hop our proxy saw
    request = compat.aiohttp_request(environ)
    remote = getattr(request, "remote", None)
    return str(remote or "unknown")


def build_server(settings: Settings) -> SettlementServer:
    sio = SettlementServer(
        async_mode="aiohttp",
        client_manager=compat.make_manager(settings.redis_url),
        json=JsonModule,
        serializer=compat.JsonPacket,
        async_handlers=True,
        always_connect=False,
        max_http_buffer_size=settings.max_frame_bytes,
        ping_interval=settings.ping_interval,
        ping_timeout=settings.ping_timeout,
        cors_allowed_origins=[],
        logger=False,
        engineio_logger=False,
    )
    sio.settings = settings

    @sio.on("connect", namespace=NAMESPACE)  # type: ignore[untyped-decorator]
    async def on_connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        view = auth.get("view", "json") if isinstance(auth, dict) else "json"
        session = Session(
            sid=sid,
            view="html" if view == "html" else "json",
            locale=views.negotiate_locale(environ.get("HTTP_ACCEPT_LANGUAGE")),
            bucket=TokenBucket(settings.rate_burst, settings.rate_per_second),
            remote=client_address(environ, settings.trust_proxy),
        )
        # Hold the socket's lock until the connect-time resume is done, so its
        # first commands already see it seated. The resume runs after this
        # handler returns, i.e. after the CONNECT packet is queued.
        await session.lock.acquire()
        sio.service.registry.sessions[sid] = session

        async def after_connect() -> None:
            try:
                await sio.service.connect(session, auth)
            except Exception:
                log.exception("connect_failed", sid=sid)
            finally:
                session.lock.release()

        sio.start_background_task(after_connect)

    @sio.on("disconnect", namespace=NAMESPACE)  # type: ignore[untyped-decorator]
    async def on_disconnect(sid: str, reason: Any = None) -> None:
        session = sio.service.registry.sessions.get(sid)
        if session is None:
            return
        session.closed = True
        async with session.lock:
            await sio.service.disconnect(session)

    return sio


class SioPublisher:
    """The service's view of the Socket.IO manager: rooms and emits in one namespace."""

    def __init__(self, sio: socketio.AsyncServer) -> None:
        self.sio = sio

    async def enter(self, sid: str, room: str) -> None:
        await self.sio.enter_room(sid, room, namespace=NAMESPACE)

    async def leave(self, sid: str, room: str) -> None:
        await self.sio.leave_room(sid, room, namespace=NAMESPACE)

    async def emit(self, event: str, data: Any, *, room: str, local: bool = False) -> None:
        # `local`: to this node's sockets only (a socket id, or a re-sync), not via the queue.
        await self.sio.emit(event, data, to=room, namespace=NAMESPACE, ignore_queue=local)
