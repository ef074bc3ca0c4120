"""What clients are told: snapshots to every audience of a room, one socket's
own copy, `error` events, and the state that goes with an error ack.

A change is rendered once per audience (json; html per party and locale),
not once per socket; the publisher (python-socketio's manager, or a test's
recording one) fans it out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from .negotiation import Refusal
from .nodes import Nodes
from .roomcache import CachedRoom, RoomCache
from .rooms import WATCHER, Registry, Session
from .shapes import Ack, Event, Snapshot, error_ack
from .store import Unavailable

log = structlog.get_logger("settlement")


class Publisher(Protocol):
    async def enter(self, sid: str, room: str) -> None: ...

    async def leave(self, sid: str, room: str) -> None: ...

    async def emit(self, event: str, data: Any, *, room: str, local: bool = False) -> None: ...


def render(snapshot: Snapshot, events: list[Event], party: str | None, locale: str) -> str:
    from . import views  # templates load lazily: the pipeline's tests need none

    return views.render_fragments(dict(snapshot), events, party, locale)


@dataclass(eq=False)
class Fanout:
    pub: Publisher
    registry: Registry
    nodes: Nodes
    cache: RoomCache

    async def online(self, cid: str) -> dict[str, bool]:
        return await self.nodes.online(cid, self.registry.online(cid))

    async def snapshot(
        self, room: CachedRoom, *, online: dict[str, bool] | None = None
    ) -> Snapshot:
        if online is None:
            online = await self.online(room.state.connection_id)
        return room.state.snapshot(online)  # type: ignore[return-value]

    async def state_of(self, s: Session) -> Snapshot | None:
        """The snapshot an error ack carries: the socket's room, if it is seated."""
        if s.seat is None:
            return None
        try:
            room, _ = await self.cache.get(s.seat[0])
        except Unavailable:
            return None
        return await self.snapshot(room) if room else None

    async def refuse(self, s: Session, refused: Refusal) -> Ack:
        return error_ack(refused, await self.state_of(s))

    async def publish(
        self, room: CachedRoom, *, local: bool = False, snapshot: Snapshot | None = None
    ) -> None:
        """One snapshot per change to every socket of the room, rendered once per audience."""
        cid = room.state.connection_id
        if snapshot is None:
            snapshot = await self.snapshot(room)
        try:
            await self.pub.emit("state", snapshot, room=f"{cid}:json", local=local)
            audiences = set(self.registry.audiences(cid))
            if not local:
                audiences |= await self.nodes.audiences(cid)
            for party, locale in sorted(audiences):
                reader = None if party == WATCHER else party
                html = render(snapshot, room.events, reader, locale)
                await self.pub.emit(
                    "html",
                    {"seq": snapshot["seq"], "html": html},
                    room=f"{cid}:html:{party}:{locale}",
                    local=local,
                )
        except Exception:  # the commit stands; clients re-sync by seq on reconnect
            log.exception("publish_failed", connection_id=cid)

    async def send_one(
        self,
        s: Session,
        room: CachedRoom,
        snapshot: Snapshot,
        *,
        party: str | None,
        local: bool = True,
    ) -> None:
        """This socket's own copy (after a resume, or its last one after `leave`)."""
        if s.view == "html":
            html = render(snapshot, room.events, party, s.locale)
            data: Any = {"seq": snapshot["seq"], "html": html}
            await self.pub.emit("html", data, room=s.sid, local=local)
        else:
            await self.pub.emit("state", snapshot, room=s.sid, local=local)

    async def error(self, s: Session, code: str, message: str) -> None:
        await self.pub.emit("error", {"code": code, "message": message}, room=s.sid, local=True)
