"""Shared tools of the fault suite: a raw Socket.IO socket, store readers, log checks."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
import resource
import sqlite3
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

NS = "/settlement"
OPEN_TIMEOUT = 20.0


def rid() -> str:
    """A request id long enough for create and join."""
    return uuid.uuid4().hex


def raise_nofile(target: int = 20_000) -> int:
    """Raise this process's soft RLIMIT_NOFILE (children, i.e. servers, inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(target, hard) if hard != resource.RLIM_INFINITY else target
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class WireSocket:
    """Socket.IO spoken by hand over one Engine.IO websocket, with a background reader.

    Answers pings, routes acks to their futures by id and keeps every event it
    receives. Frames no client library would send can go out with `send_raw`.
    """

    _ids = itertools.count(1)

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.events: list[tuple[str, Any]] = []
        self.acks: dict[int, asyncio.Future[Any]] = {}
        self.closed = asyncio.Event()
        self.connected = asyncio.get_running_loop().create_future()
        self.sid: str | None = None
        self.changed = asyncio.Event()
        self.pong = True  # False: go silent (pings unanswered), as a vanished peer
        self.pings = 0
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def open(
        cls,
        session: aiohttp.ClientSession,
        url: str,
        auth: dict[str, Any] | None = None,
        *,
        timeout: float = OPEN_TIMEOUT,
        headers: dict[str, str] | None = None,
    ) -> WireSocket:
        ws = await session.ws_connect(
            url.replace("http", "ws", 1) + "/socket.io/?EIO=4&transport=websocket",
            timeout=aiohttp.ClientWSTimeout(ws_close=2),
            headers=headers,
            max_msg_size=0,
        )
        sock = cls(ws)
        await ws.send_str("40" + NS + "," + (json.dumps(auth) if auth is not None else ""))
        await asyncio.wait_for(asyncio.shield(sock.connected), timeout)
        return sock

    async def _read(self) -> None:
        try:
            async for msg in self.ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                data: str = msg.data
                if data == "2":
                    self.pings += 1
                    if self.pong:
                        await self.ws.send_str("3")
                elif data.startswith("40" + NS + ","):
                    body = json.loads(data[len(NS) + 3 :])
                    self.sid = body.get("sid")
                    if not self.connected.done():
                        self.connected.set_result(body)
                elif data.startswith("44" + NS + ","):
                    if not self.connected.done():
                        self.connected.set_exception(ConnectionError(data))
                elif data.startswith("43" + NS + ","):
                    rest = data[len(NS) + 3 :]
                    digits = re.match(r"\d+", rest)
                    assert digits is not None, data
                    ack_id = int(digits.group())
                    fut = self.acks.get(ack_id)
                    if fut is not None and not fut.done():
                        fut.set_result(json.loads(rest[digits.end() :])[0])
                elif data.startswith("42" + NS + ","):
                    name, *args = json.loads(data[len(NS) + 3 :])
                    self.events.append((name, args[0] if args else None))
                    self.changed.set()
        except (aiohttp.ClientError, asyncio.CancelledError, ConnectionError):
            pass
        finally:
            self.closed.set()
            for fut in self.acks.values():
                if not fut.done():
                    fut.set_exception(ConnectionError("socket closed"))
            if not self.connected.done():
                self.connected.set_exception(ConnectionError("socket closed"))

    def send(self, event: Any, *args: Any) -> asyncio.Future[Any]:
        """Queue one command with an ack id; the future resolves to its ack."""
        ack_id = next(self._ids)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.acks[ack_id] = fut
        frame = f"42{NS},{ack_id}" + json.dumps([event, *args])
        asyncio.ensure_future(self._send_str(frame, fut))
        return fut

    async def _send_str(self, frame: str, fut: asyncio.Future[Any]) -> None:
        try:
            await self.ws.send_str(frame)
        except Exception as exc:  # closed under us
            if not fut.done():
                fut.set_exception(ConnectionError(str(exc)))

    async def call(self, event: Any, *args: Any, timeout: float = 10.0) -> Any:
        return await asyncio.wait_for(self.send(event, *args), timeout)

    async def send_raw(self, frame: str) -> None:
        await self.ws.send_str(frame)

    async def call_raw(self, body: str, timeout: float = 10.0) -> Any:
        """Send `42/settlement,<id><body>` exactly as given; await its ack."""
        ack_id = next(self._ids)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.acks[ack_id] = fut
        await self.ws.send_str(f"42{NS},{ack_id}{body}")
        return await asyncio.wait_for(fut, timeout)

    def states(self) -> list[dict[str, Any]]:
        return [data for name, data in self.events if name == "state"]

    async def wait_event(self, predicate: Any, timeout: float = 5.0) -> tuple[str, Any]:
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            for item in self.events[seen:]:
                if predicate(item):
                    return item
            seen = len(self.events)
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no matching event")
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), left)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close()
        self._reader.cancel()
        with contextlib.suppress(BaseException):
            await self._reader


def http_session(limit: int = 0) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=limit, force_close=False))


# -- the store ----------------------------------------------------------------


@dataclass
class StoreDump:
    events: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    rooms: dict[str, tuple[str, str, int]] = field(default_factory=dict)
    idempotency: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)


def read_store(db_path: Path) -> StoreDump:
    """The whole SQLite store, read directly (the server should be stopped or idle)."""
    dump = StoreDump()
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        for cid, seq, body in db.execute(
            "SELECT connection_id, seq, body FROM events ORDER BY connection_id, seq"
        ):
            event = json.loads(body)
            assert event["seq"] == seq
            dump.events.setdefault(cid, []).append(event)
        for cid, currency, status, seq in db.execute(
            "SELECT connection_id, currency, status, seq FROM rooms"
        ):
            dump.rooms[cid] = (currency, status, seq)
        for scope, request_id, cid, ack in db.execute(
            "SELECT scope, request_id, connection_id, ack FROM idempotency"
        ):
            dump.idempotency[(scope, request_id)] = {"connection_id": cid, "ack": json.loads(ack)}
    finally:
        db.close()
    return dump


# -- the server's log ---------------------------------------------------------

ERROR_LINE = re.compile(
    r'Traceback|"exception"\s*:|"level"\s*:\s*"(error|critical|exception)"|'
    r"handler error|Task exception was never retrieved|Error handling request"
)


def log_errors(log: str) -> list[str]:
    """Lines that show an unhandled exception or an error-level record (either JSON style)."""
    return [line for line in log.splitlines() if ERROR_LINE.search(line)]


def log_records(log: str) -> list[dict[str, Any]]:
    out = []
    for line in log.splitlines():
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
    return out


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def metric(session: aiohttp.ClientSession, url: str, name: str) -> float:
    async with session.get(url + "/metrics") as r:
        text = await r.text()
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise KeyError(name)
