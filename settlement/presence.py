"""Sockets arriving and going: connect-time `auth`, `resume`, and disconnects.

None of these is an event of the room: a resume seats a socket on a token it
holds, a disconnect unseats it, and either may change `online` (a snapshot
with the same `seq`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import structlog

from . import negotiation
from .fanout import Fanout
from .ids import normalise_connection_id, token_matches
from .metrics import Metrics
from .roomcache import RoomCache
from .rooms import GuessLimiter, MemoryTrimmer, Registry, Session
from .seating import Seating
from .shapes import EVENT_ERRORS, Ack, ok, refusal
from .store import Unavailable

log = structlog.get_logger("settlement")


@dataclass(eq=False)
class Presence:
    cache: RoomCache
    registry: Registry
    seating: Seating
    fanout: Fanout
    guesses: GuessLimiter
    metrics: Metrics
    trimmer: MemoryTrimmer = field(default_factory=MemoryTrimmer)

    async def resume(
        self, s: Session, raw_cid: Any, token: str, *, at_connect: bool = False
    ) -> Ack:
        cid = normalise_connection_id(raw_cid)
        room = None
        if cid is not None:
            room, _ = await self.cache.get(cid, fresh=True)
        if room is None or cid is None:
            return await self.fanout.refuse(s, refusal("not_found"))
        party = next(
            (p for p in negotiation.PARTIES if token_matches(token, room.token_hashes.get(p))),
            None,
        )
        if party is None:
            return await self.fanout.refuse(s, refusal("bad_token"))
        async with self.cache.lock(cid):
            room, _ = await self.cache.get(cid)
            assert room is not None
            was_online = (await self.fanout.online(cid))[party]
            await self.seating.seat(s, room, party, publish=False)
            if not was_online:
                await self.fanout.publish(room)
            elif at_connect or s.view == "html":
                await self.fanout.send_one(s, room, await self.fanout.snapshot(room), party=party)
        return ok(connection_id=cid, party=party, state=await self.fanout.snapshot(room))

    async def connect(self, s: Session, auth: Any) -> None:
        """Connect-time `auth`: resume the seat it names, or say why not with an `error` event."""
        self.registry.sessions[s.sid] = s
        self.metrics.sockets.inc()
        if not isinstance(auth, dict):
            return
        cid, token = auth.get("connection_id"), auth.get("token")
        if cid is None and token is None:
            return
        if token is None and isinstance(cid, str) and s.view == "html":
            # The invite page of someone without a seat: follow the room, no error.
            known = normalise_connection_id(cid)
            try:
                room = (await self.cache.get(known))[0] if known else None
            except Unavailable as exc:  # the store is down: say so, no traceback
                log.warning("connect_unavailable", sid=s.sid, error=str(exc))
                await self._error(s, "unavailable")
                return
            if room is None:
                await self._error(s, "not_found")
            else:
                await self.seating.watch(s, room.state.connection_id)
            return
        if cid is None:
            await self._error(s, "token_without_room")
            return
        if not isinstance(token, str) or not isinstance(cid, str):
            await self._error(s, "bad_token")
            return
        if self.guesses.exhausted(s.remote):
            await self._error(s, "guesses")
            return
        try:
            ack = await self.resume(s, cid, token, at_connect=True)
        except Unavailable:
            await self._error(s, "unavailable")
            return
        if not ack["ok"]:
            if ack["error"]["code"] in ("not_found", "bad_token"):
                self.guesses.charge(s.remote)
            await self.fanout.error(s, ack["error"]["code"], ack["error"]["message"])

    async def _error(self, s: Session, name: str) -> None:
        await self.fanout.error(s, *EVENT_ERRORS[name])

    async def disconnect(self, s: Session) -> None:
        self.registry.sessions.pop(s.sid, None)
        self.metrics.sockets.dec()
        self.trimmer.disconnected()
        self.registry.unwatch(s)
        if s.seat is None:
            return
        cid, party = s.seat
        async with self.cache.lock(cid):
            await self.seating.unseat(s)
            if not (await self.fanout.online(cid))[party]:
                room, _ = await self.cache.get(cid)
                if room is not None:
                    await self.fanout.publish(room)
