"""The Socket.IO side: the `/settlement` namespace, its dispatch, and the JSON module.

Client events are routed by `SettlementServer._handle_event_internal` rather
than by `on_<event>` methods, for two reasons: events named like the server's
own life-cycle handlers (`connect`, `disconnect`, ...) are refused instead of
reaching those handlers with arguments the client chose (python-socketio
would dispatch them), and every command of one socket runs in arrival order
under that socket's lock.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson
import socketio
import structlog

from . import views
from .cluster import LocalManager, RedisManager
from .config import Settings
from .rooms import Session, TokenBucket
from .service import Service
from .shapes import Ack
from .transport import LeanEngineIOServer

NAMESPACE = "/settlement"
MAX_QUEUED_PACKETS = 500
_FRAME_HEAD = re.compile(r"[25](?:\d+-)?(/[^,\[{]*)?,?(\d{1,15})?")
RESERVED_EVENTS = frozenset(
    {
        "connect",
        "disconnect",
        "connect_error",
        "disconnecting",
        "newListener",
        "removeListener",
        "message",
        "*",
    }
)
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


class JsonPacket(socketio.packet.Packet):  # type: ignore[misc]
    """Outgoing packets never carry binary attachments here, so skip the deep scan
    python-socketio makes of every payload to find some (incoming binary packets
    are typed on the wire and decoded as usual)."""

    @classmethod
    def data_is_binary(cls, data: Any) -> bool:
        return False


class SettlementServer(socketio.AsyncServer):  # type: ignore[misc]
    """python-socketio's AsyncServer with the settlement command dispatch."""

    service: Service
    settings: Settings

    def _engineio_server_class(self) -> type:
        return LeanEngineIOServer

    def _overflowing(self, eio_sid: str) -> bool:
        """Bounded per-socket queues: a client that stops reading is dropped
        instead of buffering every broadcast for it forever."""
        sock = self.eio.sockets.get(eio_sid)
        if sock is None or sock.queue.qsize() < MAX_QUEUED_PACKETS:
            return False
        if not getattr(sock, "settlement_dropping", False):
            sock.settlement_dropping = True
            log.warning("slow_client_dropped", queued=sock.queue.qsize())
            self.start_background_task(self.eio.disconnect, eio_sid)
        return True

    async def _send_packet(self, eio_sid: str, pkt: Any) -> None:  # acks, single sends
        if not self._overflowing(eio_sid):
            await super()._send_packet(eio_sid, pkt)

    async def _send_eio_packet(self, eio_sid: str, eio_pkt: Any) -> None:  # room broadcasts
        if not self._overflowing(eio_sid):
            await super()._send_eio_packet(eio_sid, eio_pkt)

    async def _handle_eio_message(self, eio_sid: str, data: Any) -> None:
        """A frame python-socketio cannot decode (`42/settlement,1[]`, a 5,000-digit
        number, nesting 5,000 deep, ...) still gets an error ack when it has an id."""
        try:
            await super()._handle_eio_message(eio_sid, data)
        except Exception as exc:
            self._binary_packet.pop(eio_sid, None)
            log.warning("undecodable_packet", error=type(exc).__name__)
            match = _FRAME_HEAD.match(data) if isinstance(data, str) else None
            if match and match.group(1) == NAMESPACE and match.group(2):
                ack = {
                    "ok": False,
                    "error": {
                        "code": "bad_request",
                        "message": "The frame is not a Socket.IO event of [name, payload].",
                    },
                }
                pkt = self.packet_class(
                    socketio.packet.ACK, namespace=NAMESPACE, id=int(match.group(2)), data=[ack]
                )
                await self._send_packet(eio_sid, pkt)

    async def _handle_event_internal(
        self, server: Any, sid: str, eio_sid: str, data: list[Any], namespace: str, id: Any
    ) -> None:
        if namespace != NAMESPACE:
            return
        ack = await self._dispatch(sid, data)
        if ack is not None and id is not None:
            await server._send_packet(
                eio_sid,
                self.packet_class(socketio.packet.ACK, namespace=namespace, id=id, data=[ack]),
            )

    async def _dispatch(self, sid: str, data: list[Any]) -> Ack | None:
        session = self.service.registry.sessions.get(sid)
        if session is None or session.closed:
            return None
        event = data[0] if data else None
        if not isinstance(event, str) or event in RESERVED_EVENTS:
            name = event if isinstance(event, str) else "?"
            log.warning("reserved_event_refused", sid=sid, event_name=str(name)[:40])
            return {
                "ok": False,
                "error": {
                    "code": "bad_request",
                    "message": f"{str(name)[:40]!r} is not a command.",
                },
            }
        args = data[1:]
        if len(args) > 1:
            payload: Any = args  # more than one argument: not an object payload
        else:
            payload = args[0] if args else None
        if self.service.draining:
            return {
                "ok": False,
                "error": {
                    "code": "unavailable",
                    "message": "The server is restarting; retry with the same request_id.",
                },
            }
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
    request = environ.get("aiohttp.request")
    remote = getattr(request, "remote", None)
    return str(remote or "unknown")


def build_server(settings: Settings) -> SettlementServer:
    client_manager: socketio.AsyncManager = LocalManager()
    if settings.redis_url:
        client_manager = RedisManager(settings.redis_url)
    sio = SettlementServer(
        async_mode="aiohttp",
        client_manager=client_manager,
        json=JsonModule,
        serializer=JsonPacket,
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
