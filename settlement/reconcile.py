"""What other nodes report, applied here (the `nodes.NodeEvents` of this node)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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

    async def changed(self, cid: str, seq: int, events: list[dict[str, Any]] | None = None) -> None:
        """Another node committed to this room: a cached copy behind it is stale.

        With the commit's `events`, a copy exactly one commit behind moves on by
        them (no store read for the next command here); otherwise it is dropped
        and read again when next needed. Either way the copy stays a guess: a
        command decided on it still commits only on the store's current seq.
        """
        cached = self.cache.cached(cid)
        if cached is None or cached.state.seq >= seq:
            return
        advanced = self.cache.advance(cid, cached, events) if events else False
        if not advanced:
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
