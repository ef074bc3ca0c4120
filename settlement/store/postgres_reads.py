"""The PostgreSQL store's reads, each one statement on a connection it is given
(postgres.py acquires it and retries a stale one)."""

from __future__ import annotations

from typing import Any

import asyncpg
import orjson

from .base import CREATE_SCOPE, IdempotencyRecord, StoredRoom, room_of_scope

MAX_SEQ = 2**63 - 1
ROOM = "SELECT room FROM rooms WHERE connection_id = $1"  # the room's number (schema 5)
IDEMPOTENCY_COLUMNS = ("scope", "request_id", "connection_id", "fingerprint", "ack", "token_nonce")
# A room in one statement (one round trip; one statement sees one snapshot, so
# the events, seats and records agree): each as arrays, None for no such room.
LOAD_ROOM = (
    "WITH r AS (SELECT room FROM rooms WHERE connection_id = $1) SELECT "
    "(SELECT array_agg(body ORDER BY seq) FROM events WHERE room = (SELECT room FROM r))"
    " AS events, "
    "(SELECT array_agg(party ORDER BY party) FROM seats WHERE room = (SELECT room FROM r))"
    " AS parties, "
    "(SELECT array_agg(token_hash ORDER BY party) FROM seats WHERE room = (SELECT room FROM r))"
    " AS token_hashes, "
    + ", ".join(
        f"(SELECT array_agg({c} ORDER BY scope, request_id) FROM idempotency "
        f"WHERE room = (SELECT room FROM r)) AS {c}"
        for c in IDEMPOTENCY_COLUMNS
    )
)


async def load_room(conn: asyncpg.Connection, connection_id: str) -> StoredRoom | None:
    row = await conn.fetchrow(LOAD_ROOM, connection_id)
    if row is None or row["events"] is None:
        return None
    hashes: dict[str, str | None] = {"A": None, "B": None}
    hashes.update(zip(row["parties"] or (), row["token_hashes"] or (), strict=True))
    columns = [row[name] or () for name in IDEMPOTENCY_COLUMNS]
    records = [IdempotencyRecord(*fields) for fields in zip(*columns, strict=True)]
    return StoredRoom([orjson.loads(body) for body in row["events"]], hashes, records)


async def events(
    conn: asyncpg.Connection, connection_id: str, after_seq: int, limit: int
) -> list[dict[str, Any]]:
    after = max(min(after_seq, MAX_SEQ), -MAX_SEQ)
    lim = None if limit < 0 else min(limit, MAX_SEQ)  # SQLite: a negative limit is none
    rows = await conn.fetch(
        f"SELECT body FROM events WHERE room = ({ROOM}) AND seq > $2 ORDER BY seq LIMIT $3",
        connection_id,
        after,
        lim,
    )
    return [orjson.loads(r["body"]) for r in rows]


async def idempotency(
    conn: asyncpg.Connection, scope: str, request_id: str
) -> IdempotencyRecord | None:
    if scope == CREATE_SCOPE:  # its own index; other scopes name their room
        row = await conn.fetchrow(
            "SELECT connection_id, fingerprint, ack, token_nonce FROM idempotency "
            "WHERE scope = $1 AND request_id = $2",
            scope,
            request_id,
        )
    else:
        row = await conn.fetchrow(
            "SELECT connection_id, fingerprint, ack, token_nonce FROM idempotency "
            f"WHERE room = ({ROOM.replace('$1', '$3')}) "
            "AND scope = $1 AND request_id = $2",
            scope,
            request_id,
            room_of_scope(scope),
        )
    if row is None:
        return None
    return IdempotencyRecord(
        scope,
        request_id,
        row["connection_id"],
        row["fingerprint"],
        row["ack"],
        row["token_nonce"],
    )


async def ping(conn: asyncpg.Connection, timeout: float) -> bool:
    return bool(await conn.fetchval("SELECT 1", timeout=timeout) == 1)


async def count_open_rooms(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM rooms WHERE status != 'settled'"))
