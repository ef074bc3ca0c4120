"""A lean Socket.IO client: Engine.IO v4 over one aiohttp websocket, nothing else.

python-socketio's own `AsyncClient` costs about as much CPU per message as the
server it drives, so a benchmark built on it measures the client. This one
speaks the wire format directly:

- open: the server sends `0{"sid": ..., "pingInterval": ...}`;
- Engine.IO ping `2` is answered with pong `3`;
- namespace connect `40/settlement,{auth}` is answered by `40/settlement,{"sid": ...}`
  (or `44/settlement,{...}` when refused);
- an event with an ack id: `42/settlement,<id>["event",{payload}]`;
- its ack: `43/settlement,<id>[{...}]`;
- a broadcast: `42/settlement,["state",{...}]`.

Acks are parsed with orjson; broadcasts are handed to `on_event` as the raw
text (the throughput run only counts them, the latency run parses the few it
needs).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson

NAMESPACE = "/settlement"
_EVENT = f"42{NAMESPACE},"
_ACK = f"43{NAMESPACE},"
_CONNECT = f"40{NAMESPACE},"
_CONNECT_ERROR = f"44{NAMESPACE},"
_DISCONNECT = f"41{NAMESPACE},"


class LeanError(Exception):
    """The link failed, the server refused the namespace, or an ack timed out."""


def ws_url(base: str) -> str:
    """`http://host:port` -> the Engine.IO v4 websocket endpoint."""
    host = base.split("://", 1)[-1].rstrip("/")
    return f"ws://{host}/socket.io/?EIO=4&transport=websocket"


class LeanSocket:
    """One websocket, one namespace, acks by id. Not thread-safe; one event loop."""

    __slots__ = (
        "ws",
        "sid",
        "_next_id",
        "_pending",
        "_reader",
        "on_event",
        "closed",
        "received",
    )

    def __init__(self, on_event: Callable[[str], None] | None = None) -> None:
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.sid: str | None = None
        self._next_id = 0
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._reader: asyncio.Task[None] | None = None
        self.on_event = on_event
        self.closed = False
        self.received = 0  # broadcasts seen (all events, not acks)

    async def connect(
        self,
        session: aiohttp.ClientSession,
        url: str,
        auth: dict[str, Any] | None = None,
        connect_within: float = 10.0,
    ) -> None:
        async with asyncio.timeout(connect_within):
            self.ws = ws = await session.ws_connect(url, autoping=True, max_msg_size=0, compress=0)
            msg = await ws.receive()
            if msg.type != aiohttp.WSMsgType.TEXT or not msg.data.startswith("0"):
                raise LeanError(f"expected an Engine.IO open packet, got {msg.type} {msg.data!r}")
            body = _CONNECT + (orjson.dumps(auth).decode() if auth else "")
            await ws.send_str(body)
            while True:
                msg = await ws.receive()
                if msg.type != aiohttp.WSMsgType.TEXT:
                    raise LeanError(f"link closed while connecting the namespace: {msg.type}")
                data: str = msg.data
                if data == "2":
                    await ws.send_str("3")
                elif data.startswith(_CONNECT):
                    self.sid = orjson.loads(data[len(_CONNECT) :]).get("sid")
                    break
                elif data.startswith(_CONNECT_ERROR):
                    raise LeanError(f"namespace refused: {data[len(_CONNECT_ERROR) :]}")
                # anything else before the namespace connect (none expected) is ignored
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        ws = self.ws
        assert ws is not None
        ack_len = len(_ACK)
        try:
            while True:
                msg = await ws.receive()
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
                data: str = msg.data
                if data.startswith(_ACK):
                    bracket = data.index("[", ack_len)
                    fut = self._pending.pop(int(data[ack_len:bracket]), None)
                    if fut is not None and not fut.done():
                        fut.set_result(orjson.loads(data[bracket:])[0])
                elif data.startswith(_EVENT):
                    self.received += 1
                    if self.on_event is not None:
                        self.on_event(data)
                elif data == "2":
                    await ws.send_str("3")
                elif data.startswith(_DISCONNECT) or data == "1":
                    break
        except (aiohttp.ClientError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self.closed = True
            err = LeanError("link closed")
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(err)
            self._pending.clear()

    async def call(self, event: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Send one command and wait for its ack object.

        No per-call timer (it would cost as much as the rest of the call): the
        callers bound whole negotiations with one `asyncio.timeout`.
        """
        ws = self.ws
        if ws is None or self.closed:
            raise LeanError("not connected")
        self._next_id += 1
        ack_id = self._next_id
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[ack_id] = fut
        # Uncompressed frames are written to the transport synchronously.
        await ws.send_str(f"{_EVENT}{ack_id}" + orjson.dumps([event, payload]).decode())
        return await fut

    async def close(self) -> None:
        ws = self.ws
        if ws is not None and not ws.closed:
            try:
                await ws.close()
            except (aiohttp.ClientError, ConnectionError):
                pass
        if self._reader is not None:
            self._reader.cancel()
            try:
                await self._reader
            except asyncio.CancelledError:
                pass
        self.closed = True
