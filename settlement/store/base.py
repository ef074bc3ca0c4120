"""The store interface that every backend implements with the same schema and behaviour."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


class Conflict(Exception):
    """Another command took this room's next `seq` (or this key) first: reload, decide again."""


class Unavailable(Exception):
    """The store cannot commit right now; nothing changed."""


CREATE_SCOPE = "server"  # the idempotency scope of `create` (no room yet)


def join_scope(connection_id: str) -> str:
    """Idempotency scope of a `join` (before the sender holds a seat)."""
    return f"conn:{connection_id}"


def seat_scope(connection_id: str, party: str) -> str:
    """Idempotency scope of the commands of a seat."""
    return f"seat:{connection_id}:{party}"


def room_of_scope(scope: str) -> str:
    """The connection id in a `join_scope` or `seat_scope` ("" for any other scope)."""
    parts = scope.split(":")
    return parts[1] if len(parts) > 1 else ""


def room_scopes(connection_id: str) -> tuple[str, str, str]:
    """Every scope of a room's records (`create` is in CREATE_SCOPE)."""
    return (
        join_scope(connection_id),
        seat_scope(connection_id, "A"),
        seat_scope(connection_id, "B"),
    )


@dataclass(frozen=True)
class IdempotencyRecord:
    """A successful ack kept under its `request_id`, to be replayed byte for byte.

    Acks that carry a seat token are stored without it: `token_nonce` lets the
    server derive the same token again from its secret, so the database never
    holds a usable token.
    """

    scope: str
    request_id: str
    connection_id: str
    fingerprint: str
    ack: str
    token_nonce: str | None = None

    def row(self) -> tuple[str, str, str, str, str, str | None]:
        """The record in the `idempotency` table's column order."""
        return (
            self.scope,
            self.request_id,
            self.connection_id,
            self.fingerprint,
            self.ack,
            self.token_nonce,
        )


@dataclass(frozen=True)
class StoredRoom:
    events: list[dict[str, Any]]
    token_hashes: dict[str, str | None]
    # The room's idempotency records, so a retry is recognised without a read.
    idempotency: list[IdempotencyRecord] = field(default_factory=list)


@dataclass
class Commit:
    """Everything one command changes, written in one transaction (or none of it)."""

    connection_id: str
    base_seq: int  # the seq the decision was made on (0 for a new room)
    events: list[dict[str, Any]]
    status: str
    currency: str
    seats: dict[str, str | None] = field(default_factory=dict)  # party -> token hash
    idempotency: IdempotencyRecord | None = None


class Store(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def commit(self, change: Commit) -> None:
        """Durably apply `change`; raise Conflict or Unavailable and change nothing."""

    async def load_room(self, connection_id: str) -> StoredRoom | None: ...

    async def events(
        self, connection_id: str, after_seq: int, limit: int
    ) -> list[dict[str, Any]]: ...

    async def idempotency(self, scope: str, request_id: str) -> IdempotencyRecord | None:
        """A record by key; `scope` is "server" (`create`) or made by join_scope/seat_scope."""
        ...

    async def ping(self) -> bool: ...

    async def count_open_rooms(self) -> int: ...
