"""The framework ceiling: a bare python-socketio server doing the same fan-out.

`python -m bench.ceiling --host 127.0.0.1 --port P`

Same stack as the settlement server (python-socketio AsyncServer on aiohttp,
uvloop, orjson as the Socket.IO JSON module, `async_handlers=True`), the same
namespace and commands, the same ack shapes and a `state` dict of the same
shape and size, but no store, no rules, no hashes, no idempotency records, no
logging and no metrics. Each command is acked and its `state` emitted to the
room's Socket.IO room (both sockets of the pair), exactly the messages the real
server sends; `leave` also sends the leaver one last `state`, as the real one does.
Whatever the settlement server does beyond this is its own cost.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import resource
import secrets
import sys
import time
from datetime import UTC, datetime
from typing import Any

import orjson
import socketio
from aiohttp import web

NAMESPACE = "/settlement"


class OrjsonModule:
    """orjson both ways (the settlement server decodes with the stdlib, see its realtime.py)."""

    @staticmethod
    def dumps(obj: Any, **_: Any) -> str:
        return orjson.dumps(obj).decode()

    @staticmethod
    def loads(text: str | bytes, **_: Any) -> Any:
        return orjson.loads(text)


def now_iso() -> str:
    t = datetime.now(UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


class Room:
    __slots__ = ("cid", "seq", "status", "offer", "last_response", "settlement", "online")

    def __init__(self, cid: str) -> None:
        self.cid = cid
        self.seq = 1
        self.status = "awaiting_offer"
        self.offer: dict[str, Any] | None = None
        self.last_response: dict[str, Any] | None = None
        self.settlement: dict[str, Any] | None = None
        self.online = {"A": False, "B": False}

    def snapshot(self) -> dict[str, Any]:
        return {
            "connection_id": self.cid,
            "seq": self.seq,
            "status": self.status,
            "currency": "USD",
            "parties": {
                "A": {"seated": True, "online": self.online["A"]},
                "B": {"seated": True, "online": self.online["B"]},
            },
            "offer": self.offer,
            "last_response": self.last_response,
            "settlement": self.settlement,
        }


def build_app() -> web.Application:
    sio = socketio.AsyncServer(
        async_mode="aiohttp",
        json=OrjsonModule,
        async_handlers=True,
        cors_allowed_origins=[],
        logger=False,
        engineio_logger=False,
    )
    rooms: dict[str, Room] = {}
    seats: dict[str, tuple[Room, str]] = {}
    ids = itertools.count(1)

    def bad(code: str) -> dict[str, Any]:
        return {"ok": False, "error": {"code": code, "message": code}}

    async def publish(room: Room) -> dict[str, Any]:
        snap = room.snapshot()
        await sio.emit("state", snap, to=room.cid, namespace=NAMESPACE)
        return snap

    @sio.on("connect", namespace=NAMESPACE)  # type: ignore[untyped-decorator]
    async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        return None

    @sio.on("disconnect", namespace=NAMESPACE)  # type: ignore[untyped-decorator]
    async def disconnect(sid: str, reason: Any = None) -> None:
        seat = seats.pop(sid, None)
        if seat is not None:
            seat[0].online[seat[1]] = False

    @sio.on("create", namespace=NAMESPACE)  # type: ignore[untyped-decorator]
    async def create(sid: str, payload: dict[str, Any]) -> dict[str, Any]:
        if sid in seats:
            return bad("already_seated")
        cid = f"C{next(ids):011d}"
        room = rooms[cid] = Room(cid)
        party = payload.get("party", "A")
        room.online[party] = True
        seats[sid] = (room, party)
        await sio.enter_room(sid, cid, namespace=NAMESPACE)
        snap = await publish(room)
        return {
            "ok": True,
            "connection_id": cid,
            "party": party,
            "token": secrets.token_urlsafe(32),
            "state": snap,
        }

    @sio.on("join", namespace=NAMESPACE)  # type: ignore[untyped-decorator]
    async def join(sid: str, payload: dict[str, Any]) -> dict[str, Any]:
        room = rooms.get(payload.get("connection_id", ""))
        if room is None:
            return bad("not_found")
        party = "B" if room.online["A"] else "A"
        room.online[party] = True
        room.seq += 1
        seats[sid] = (room, party)
        await sio.enter_room(sid, room.cid, namespace=NAMESPACE)
        snap = await publish(room)
        return {
            "ok": True,
            "connection_id": room.cid,
            "party": party,
            "token": secrets.token_urlsafe(32),
            "state": snap,
        }

    @sio.on("propose", namespace=NAMESPACE)  # type: ignore[untyped-decorator]
    async def propose(sid: str, payload: dict[str, Any]) -> dict[str, Any]:
        seat = seats.get(sid)
        if seat is None:
            return bad("not_seated")
        room = seat[0]
        version = (room.offer["version"] + 1) if room.offer else 1
        room.seq += 1
        room.status = "offer_pending"
        room.offer = {"amount": payload["amount"], "version": version, "proposed_at": now_iso()}
        snap = await publish(room)
        return {"ok": True, "version": version, "state": snap}

    @sio.on("respond", namespace=NAMESPACE)  # type: ignore[untyped-decorator]
    async def respond(sid: str, payload: dict[str, Any]) -> dict[str, Any]:
        seat = seats.get(sid)
        if seat is None:
            return bad("not_seated")
        room = seat[0]
        at = now_iso()
        room.seq += 1
        room.last_response = {
            "decision": payload["decision"],
            "version": payload["version"],
            "reason": payload.get("reason"),
            "at": at,
        }
        if payload["decision"] == "accept" and room.offer is not None:
            room.status = "settled"
            room.settlement = {
                "amount": room.offer["amount"],
                "currency": "USD",
                "version": room.offer["version"],
                "settled_at": at,
                "receipt_id": secrets.token_hex(32),
            }
        else:
            room.status = "disputed"
        snap = await publish(room)
        return {"ok": True, "state": snap}

    @sio.on("leave", namespace=NAMESPACE)  # type: ignore[untyped-decorator]
    async def leave(sid: str, payload: dict[str, Any]) -> dict[str, Any]:
        seat = seats.pop(sid, None)
        if seat is None:
            return bad("not_seated")
        room, party = seat
        room.seq += 1
        room.online[party] = False
        await sio.leave_room(sid, room.cid, namespace=NAMESPACE)
        snap = await publish(room)
        await sio.emit("state", snap, to=sid, namespace=NAMESPACE)
        if not room.online["A"] and not room.online["B"]:
            rooms.pop(room.cid, None)
        return {"ok": True}

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    sio.attach(app)
    app.router.add_get("/healthz", healthz)
    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ceiling")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    args = parser.parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:  # pragma: no cover
        pass
    started = time.monotonic()
    web.run_app(
        build_app(),
        host=args.host,
        port=args.port,
        access_log=None,
        print=lambda *_: print(
            f"ceiling listening on http://{args.host}:{args.port} "
            f"({time.monotonic() - started:.2f}s)",
            file=sys.stderr,
        ),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
