"""A store in this process's memory: the same contract as SQLite and PostgreSQL, kept
by the same store test suite, and nothing durable. It is the in-process test
seam for the command pipeline, never a database URL the server accepts
(it forgets everything when the process ends).

Several `Service`s may share one `MemoryStore`, or several stores one
`MemoryData`, like nodes sharing a database: a commit made on a stale room
conflicts exactly as it would there. `down = True` makes every call raise
`Unavailable`, like a stopped database.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from .base import Commit, Conflict, IdempotencyRecord, StoredRoom, Unavailable, room_scopes
from .memory_outbox import MemoryWebhooks


@dataclass
class _Room:
    events: list[dict[str, Any]] = field(default_factory=list)
    seats: dict[str, str | None] = field(default_factory=lambda: {"A": None, "B": None})
    status: str = "awaiting_offer"


@dataclass
class MemoryData:
    """What a database would hold; shared by the stores opened on it."""

    rooms: dict[str, _Room] = field(default_factory=dict)
    keys: dict[tuple[str, str], IdempotencyRecord] = field(default_factory=dict)
    outbox: MemoryWebhooks | None = None  # made by the first store opened on it
    down: bool = False
    commits: int = 0  # commits applied, for tests that count round trips


INT64 = range(-(2**63), 2**63)


def _fits(value: Any) -> bool:
    """What a 64-bit integer column (and JSON in SQLite/PostgreSQL) can hold."""
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, dict):
            return all(_fits(v) for v in value.values())
        if isinstance(value, list):
            return all(_fits(v) for v in value)
        return True
    return value in INT64


class MemoryStore:
    def __init__(self, data: MemoryData | None = None) -> None:
        self.data = data or MemoryData()
        self.rooms = self.data.rooms
        self.keys = self.data.keys
        if self.data.outbox is None:
            self.data.outbox = MemoryWebhooks(self._check, self.rooms.__contains__)
        self.webhooks = self.data.outbox

    @property
    def down(self) -> bool:
        return self.data.down

    @down.setter
    def down(self, value: bool) -> None:
        self.data.down = value

    def _check(self) -> None:
        if self.data.down:
            raise Unavailable("the memory store is marked down")

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def commit(self, change: Commit) -> None:
        self._check()
        if not all(_fits(e) for e in change.events):
            raise Unavailable("a value is out of the store's range")
        room = self.rooms.get(change.connection_id)
        if change.base_seq == 0 and room is not None:
            raise Conflict(f"room {change.connection_id} exists")
        if change.base_seq and (room is None or len(room.events) != change.base_seq):
            raise Conflict(f"room {change.connection_id} is not at seq {change.base_seq}")
        key = None
        if change.idempotency is not None:
            key = (change.idempotency.scope, change.idempotency.request_id)
            if key in self.keys:
                raise Conflict(f"request_id {key[1]!r} is already used in {key[0]}")
        # Nothing above changed anything: now apply it whole.
        room = room or _Room()
        room.events.extend(copy.deepcopy(change.events))
        room.seats.update(change.seats)
        room.status = change.status
        self.rooms[change.connection_id] = room
        if key is not None and change.idempotency is not None:
            self.keys[key] = change.idempotency
        self.webhooks.add(change.outbox)
        self.data.commits += 1

    async def load_room(self, connection_id: str) -> StoredRoom | None:
        self._check()
        room = self.rooms.get(connection_id)
        if room is None:
            return None
        scopes = room_scopes(connection_id)
        return StoredRoom(
            copy.deepcopy(room.events),
            dict(room.seats),
            [r for (scope, _), r in self.keys.items() if scope in scopes],
        )

    async def events(self, connection_id: str, after_seq: int, limit: int) -> list[dict[str, Any]]:
        self._check()
        room = self.rooms.get(connection_id)
        if room is None:
            return []
        return copy.deepcopy([e for e in room.events if e["seq"] > after_seq][:limit])

    async def idempotency(self, scope: str, request_id: str) -> IdempotencyRecord | None:
        self._check()
        return self.keys.get((scope, request_id))

    async def ping(self) -> bool:
        return not self.down

    async def count_open_rooms(self) -> int:
        self._check()
        return sum(1 for r in self.rooms.values() if r.status != "settled")
