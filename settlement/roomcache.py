"""This node's rooms: a bounded cache of folded rooms and a lock per room.

A cached room may trail another process that shares the store; the pipeline
treats a cached room as a guess (a commit on it conflicts, a refusal on it
is re-checked on fresh state), and a fresh read replaces it.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from . import negotiation
from .negotiation import RoomState
from .rooms import Registry
from .shapes import Event
from .store import IdempotencyRecord, Store

ROOM_CACHE = 1_000


@dataclass
class CachedRoom:
    state: RoomState
    events: list[Event]
    token_hashes: dict[str, str | None]
    receipt: dict[str, Any] | None = None
    # (scope, request_id) -> record: a retry is recognised without a store read.
    idem: dict[tuple[str, str], IdempotencyRecord] = field(default_factory=dict)


class RoomLock:
    """`async with`: the room's lock on this node, reference-counted so it is
    dropped only when nobody holds or awaits it (a released lock with waiters
    still serialises them). A class, not @asynccontextmanager: it runs for
    every command."""

    __slots__ = ("_locks", "_cid", "_entry")

    def __init__(self, locks: dict[str, list[Any]], cid: str) -> None:
        self._locks = locks
        self._cid = cid

    async def __aenter__(self) -> None:
        entry = self._locks.get(self._cid)
        if entry is None:
            entry = self._locks[self._cid] = [asyncio.Lock(), 0]
        entry[1] += 1
        self._entry = entry
        try:
            await entry[0].acquire()
        except BaseException:
            self._release_ref()
            raise

    async def __aexit__(self, *exc: object) -> None:
        self._entry[0].release()
        self._release_ref()

    def _release_ref(self) -> None:
        entry = self._entry
        entry[1] -= 1
        if entry[1] == 0:
            del self._locks[self._cid]


class RoomCache:
    """Rooms by connection id: every room with a socket here, plus ROOM_CACHE others."""

    def __init__(self, store: Store, registry: Registry, size: int = ROOM_CACHE) -> None:
        self.store = store
        self.registry = registry
        self.size = size
        self._rooms: OrderedDict[str, CachedRoom] = OrderedDict()
        self._locks: dict[str, list[Any]] = {}

    def lock(self, cid: str) -> RoomLock:
        return RoomLock(self._locks, cid)

    def cached(self, cid: str) -> CachedRoom | None:
        """The cached copy, if any, without a store read (and without touching its age)."""
        return self._rooms.get(cid)

    async def get(self, cid: str, *, fresh: bool = False) -> tuple[CachedRoom | None, bool]:
        """The room and whether it came from the cache (possibly stale across processes)."""
        if not fresh:
            cached = self._rooms.get(cid)
            if cached is not None:
                self._rooms.move_to_end(cid)
                return cached, True
        stored = await self.store.load_room(cid)
        if stored is None:
            self._rooms.pop(cid, None)
            return None, False
        room = CachedRoom(
            negotiation.fold(stored.events),
            stored.events,
            stored.token_hashes,
            idem={(r.scope, r.request_id): r for r in stored.idempotency},
        )
        self.remember(cid, room)
        return room, False

    def remember(self, cid: str, room: CachedRoom) -> None:
        self._rooms[cid] = room
        self._rooms.move_to_end(cid)
        self._trim()

    def drop(self, cid: str) -> None:
        self._rooms.pop(cid, None)

    def demote(self, cid: str) -> None:
        """No socket here holds the room any more: first to go when the cache is full."""
        if not self.registry.has_sockets(cid) and cid in self._rooms:
            self._rooms.move_to_end(cid, last=False)
            self._trim()

    def _trim(self) -> None:
        budget = 64
        while budget and len(self._rooms) > self.size + self.registry.room_count():
            budget -= 1
            oldest = next(iter(self._rooms))
            if self.registry.has_sockets(oldest):
                self._rooms.move_to_end(oldest)
            else:
                del self._rooms[oldest]
