"""The store interface that every backend implements with the same schema and behaviour."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol


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
    outbox: list[OutboxRow] = field(default_factory=list)  # webhook messages of `events`


@dataclass(frozen=True)
class OutboxRow:
    """One webhook message (an event for one endpoint), written with its event."""

    connection_id: str
    seq: int
    endpoint: str
    body: str  # the exact bytes (UTF-8) every attempt sends
    created: float  # Unix seconds at commit


def outbox_heads(rows: list[OutboxRow]) -> list[bool]:
    """For each row: is it the first of its (connection, endpoint) in `rows`? Only such a
    row can be due at once (if no earlier message of its queue still waits); the others
    wait behind it (`next_attempt` NULL) until the one before them is done."""
    seen: set[tuple[str, str]] = set()
    heads = []
    for row in rows:
        key = (row.connection_id, row.endpoint)
        heads.append(key not in seen)
        seen.add(key)
    return heads


@dataclass(frozen=True)
class WebhookClaim:
    """A message leased to one node for one attempt."""

    id: int
    connection_id: str
    seq: int
    endpoint: str
    body: str
    attempts: int  # this attempt included
    first_attempt: float  # the retry window runs from here
    lease: str  # the claim's token: finishing needs it (a lost lease finishes nothing)


@dataclass(frozen=True)
class WebhookRow:
    """A message as `python -m settlement webhooks` lists it."""

    connection_id: str
    seq: int
    endpoint: str
    state: str  # waiting | delivered | abandoned
    attempts: int
    next_attempt: float | None  # None: waits behind an earlier message of its queue
    created: float
    last_error: str | None


Outcome = Literal["delivered", "failed", "abandoned"]


class WebhookQueue(Protocol):
    """The outbox: messages per (endpoint, connection) in seq order, leased to one node
    at a time. Times are Unix seconds given by the caller."""

    async def claim(
        self, owner: str, now: float, lease: float, limit: int, skip: list[str]
    ) -> list[WebhookClaim]:
        """Lease up to `limit` due heads of their queues (none of the `skip` endpoints)."""
        ...

    async def finish(
        self,
        claim: WebhookClaim,
        outcome: Outcome,
        now: float,
        next_attempt: float | None = None,
        error: str | None = None,
    ) -> bool:
        """Record an attempt's outcome if the lease still holds (False: it was lost).
        `failed` waits until `next_attempt`; `delivered`/`abandoned` makes the next
        message of the queue due at `now`."""
        ...

    async def stats(self) -> tuple[int, float | None]:
        """(messages waiting, `created` of the oldest head waiting or None)."""
        ...

    async def pending(self) -> list[WebhookRow]:
        """Every message waiting or abandoned, by connection, endpoint and seq."""
        ...

    async def redeliver(self, connection_id: str, now: float) -> int | None:
        """Queue every message of a connection again with a new retry window; how many
        (None: no such connection)."""
        ...


class Store(Protocol):
    @property
    def webhooks(self) -> WebhookQueue:
        """The webhook outbox, in the same database."""
        ...

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
