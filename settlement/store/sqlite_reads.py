"""SQLite's reads, each on the reader thread's own connection (`SQLiteStore._run_reader`)."""

from __future__ import annotations

import sqlite3
from typing import Any

import orjson

from .base import CREATE_SCOPE, IdempotencyRecord, StoredRoom, room_of_scope, room_scopes


def load_room(conn: sqlite3.Connection, connection_id: str) -> StoredRoom | None:
    conn.execute("BEGIN")  # one consistent snapshot for events and seats
    try:
        found = conn.execute(
            "SELECT room FROM rooms WHERE connection_id = ?", (connection_id,)
        ).fetchone()
        if found is None:
            return None
        room = found[0]
        rows = conn.execute(
            "SELECT body FROM events WHERE room = ? ORDER BY seq", (room,)
        ).fetchall()
        if not rows:
            return None
        seats = conn.execute(
            "SELECT party, token_hash FROM seats WHERE room = ?", (room,)
        ).fetchall()
        keys = conn.execute(
            "SELECT scope, request_id, connection_id, fingerprint, ack, token_nonce "
            "FROM idempotency WHERE room = ? AND scope IN (?, ?, ?)",
            (room, *room_scopes(connection_id)),
        ).fetchall()
    finally:
        conn.execute("COMMIT")
    hashes: dict[str, str | None] = {"A": None, "B": None}
    hashes.update({party: token_hash for party, token_hash in seats})
    records = [IdempotencyRecord(*row) for row in keys]
    return StoredRoom([orjson.loads(body) for (body,) in rows], hashes, records)


def events(
    conn: sqlite3.Connection, connection_id: str, after_seq: int, limit: int
) -> list[dict[str, Any]]:
    rows = conn.execute(
        "SELECT body FROM events WHERE room = (SELECT room FROM rooms WHERE connection_id = ?) "
        "AND seq > ? ORDER BY seq LIMIT ?",
        (connection_id, after_seq, limit),
    ).fetchall()
    return [orjson.loads(body) for (body,) in rows]


def idempotency(conn: sqlite3.Connection, scope: str, request_id: str) -> IdempotencyRecord | None:
    if scope == CREATE_SCOPE:
        row = conn.execute(
            "SELECT connection_id, fingerprint, ack, token_nonce FROM idempotency "
            f"WHERE scope = '{CREATE_SCOPE}' AND request_id = ?",
            (request_id,),
        ).fetchone()
    else:
        row = conn.execute(
            "SELECT connection_id, fingerprint, ack, token_nonce FROM idempotency "
            "WHERE room = (SELECT room FROM rooms WHERE connection_id = ?) "
            "AND scope = ? AND request_id = ?",
            (room_of_scope(scope), scope, request_id),
        ).fetchone()
    if row is None:
        return None
    return IdempotencyRecord(scope, request_id, row[0], row[1], row[2], row[3])


def count_open(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT COUNT(*) FROM rooms WHERE status != 'settled'").fetchone()[0])
