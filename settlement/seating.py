"""Seats and presence on this node: who holds a seat, who watches a room, and
bringing both back in line when the seat changed elsewhere.

Seating a socket enters its Socket.IO rooms and counts it in the cluster's
presence; a presence change (first socket of a seat, last one gone) is a
snapshot with the same `seq`.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import negotiation
from .fanout import Fanout, Publisher
from .metrics import Metrics
from .negotiation import Party
from .nodes import Nodes
from .roomcache import CachedRoom, RoomCache
from .rooms import WATCHER, Registry, Session


@dataclass(eq=False)
class Seating:
    registry: Registry
    pub: Publisher
    nodes: Nodes
    cache: RoomCache
    fanout: Fanout
    metrics: Metrics

    async def seat(
        self, s: Session, room: CachedRoom, party: Party, *, publish: bool = True
    ) -> None:
        cid = room.state.connection_id
        await self.unwatch(s)
        was_online = (await self.fanout.online(cid))[party]
        s.token_hash = room.token_hashes.get(party)
        for name in self.registry.seat(s, cid, party):
            await self.pub.enter(s.sid, name)
        self.metrics.seated.inc()
        await self.nodes.seated(cid, party, +1)
        if s.view == "html":
            await self.nodes.add_audience(cid, party, s.locale)
        if publish and not was_online:
            await self.fanout.publish(room)  # presence changed: same seq, new `online`

    async def watch(self, s: Session, cid: str) -> None:
        """An html page without a seat (the invite link) follows the room live."""
        await self.pub.enter(s.sid, self.registry.watch(s, cid))
        await self.nodes.add_audience(cid, WATCHER, s.locale)

    async def unwatch(self, s: Session) -> None:
        name = self.registry.unwatch(s)
        if name is not None:
            await self.pub.leave(s.sid, name)

    async def unseat(self, s: Session) -> None:
        seat = s.seat
        for name in self.registry.unseat(s):
            await self.pub.leave(s.sid, name)
        self.metrics.seated.dec()
        if seat is not None:
            self.cache.demote(seat[0])
            await self.nodes.seated(seat[0], seat[1], -1)

    async def unseat_all(self, room: CachedRoom, party: Party) -> None:
        """After `leave`: every socket of that seat is unseated and told once more."""
        cid = room.state.connection_id
        leavers = self.registry.holders(cid, party)
        for leaver in leavers:
            await self.unseat(leaver)
        # Other nodes unseat their sockets of this seat *before* telling their
        # sockets (so none of them acts on the seat after seeing it free).
        await self.nodes.publish({"t": "unseat", "cid": cid, "party": party})
        await self.fanout.publish(room, local=True)
        await self._tell_leavers(room, leavers)

    async def reconcile(self, room: CachedRoom, *, local_publish: bool) -> None:
        """Unseat local sockets whose seat was left since; re-send the snapshot locally."""
        cid = room.state.connection_id
        leavers = [
            s
            for p in negotiation.PARTIES
            for s in self.registry.holders(cid, p)
            if room.token_hashes.get(p) != s.token_hash
        ]
        for leaver in leavers:
            await self.unseat(leaver)
        if local_publish:
            await self.fanout.publish(room, local=True)
        if leavers:
            await self._tell_leavers(room, leavers)

    async def _tell_leavers(self, room: CachedRoom, leavers: list[Session]) -> None:
        """Each unseated socket gets one last snapshot; a page goes on watching."""
        snapshot = await self.fanout.snapshot(room)
        for leaver in leavers:
            await self.fanout.send_one(leaver, room, snapshot, party=None)
            if leaver.view == "html":
                await self.watch(leaver, room.state.connection_id)
