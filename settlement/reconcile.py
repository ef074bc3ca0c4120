"""What other nodes report, applied here (the `nodes.NodeEvents` of this node)."""

from __future__ import annotations

from dataclasses import dataclass

from .fanout import Fanout
from .roomcache import RoomCache
from .rooms import Registry
from .seating import Seating
from .store import Unavailable


@dataclass(eq=False)
class Reconciler:
    cache: RoomCache
    registry: Registry
    seating: Seating
    fanout: Fanout

    async def changed(self, cid: str, seq: int) -> None:
        """Another node committed to this room: a cached copy behind it is stale."""
        cached = self.cache.cached(cid)
        if cached is not None and cached.state.seq < seq:
            self.cache.drop(cid)

    async def unseat(self, cid: str, party: str) -> None:
        """A seat was left on another node: unseat this node's sockets of it, then tell."""
        async with self.cache.lock(cid):
            room, _ = await self.cache.get(cid, fresh=True)
            if room is not None:
                await self.seating.reconcile(room, local_publish=True)

    async def presence_lost(self, cid: str) -> None:
        room, _ = await self.cache.get(cid, fresh=True)
        if room is not None:
            await self.fanout.publish(room)

    async def recovered(self) -> None:
        """Re-send current snapshots to this node's sockets (after a message-queue outage)."""
        for cid in self.registry.rooms():
            try:
                room, _ = await self.cache.get(cid, fresh=True)
            except Unavailable:
                continue
            if room is not None:
                async with self.cache.lock(cid):
                    await self.seating.reconcile(room, local_publish=True)
