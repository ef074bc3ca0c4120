"""The webhook outbox in SQLite (schema 5): the table, and the queue's statements.

Messages are written by the group commit's trigger (sqlite.py, `INBOX`) in the
same statement as their events. Each (room, endpoint) is a queue in `seq`
order: only its head has a `next_attempt`; the messages behind it have NULL
there and are made due, one at a time, when the one before them is done
(delivered or abandoned). So a claim reads only due heads, however many
messages wait behind an endpoint that is down. Every SQLite write is
serialised, so "is the message before me still waiting?" (at insert) and "make
the next one due" (at finish) cannot miss each other.

Claims and finishes run on the store's writer thread and connection, between
group commits, with `synchronous = NORMAL`: no fsync of their own (the next
command's commit syncs them). A lease or a "delivered" lost to a power cut
costs one more delivery of the same message with the same `webhook-id`, which
receivers de-duplicate; the messages themselves are written with the events,
under `synchronous = FULL`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any, TypeVar

import orjson

from .base import Outcome, WebhookClaim, WebhookRow

T = TypeVar("T")

WEBHOOKS = """
CREATE TABLE IF NOT EXISTS webhooks (
    room INTEGER NOT NULL,
    connection_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    endpoint TEXT NOT NULL,
    body TEXT NOT NULL,
    created REAL NOT NULL,
    state TEXT NOT NULL DEFAULT 'waiting',
    next_attempt REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    first_attempt REAL,
    lease_owner TEXT,
    lease_until REAL NOT NULL DEFAULT 0,
    last_error TEXT,
    UNIQUE (room, endpoint, seq)
);
CREATE INDEX IF NOT EXISTS webhooks_waiting ON webhooks (next_attempt) WHERE state = 'waiting';
"""

# The trigger's statement (inside `INBOX`): rows of [cid, seq, endpoint, body, created, head].
INBOX_OUTBOX = """
  INSERT INTO webhooks (room, connection_id, seq, endpoint, body, created, next_attempt)
    SELECT o.room, o.cid, o.seq, o.endpoint, o.body, o.created,
      CASE WHEN o.head AND coalesce((
        SELECT p.state FROM webhooks AS p
        WHERE p.room = o.room AND p.endpoint = o.endpoint AND p.seq < o.seq
        ORDER BY p.seq DESC LIMIT 1), '') != 'waiting' THEN o.created END
    FROM (SELECT (SELECT room FROM rooms WHERE connection_id = value->>0) AS room,
      value->>0 AS cid, value->>1 AS seq, value->>2 AS endpoint, value->>3 AS body,
      value->>4 AS created, value->>5 AS head FROM json_each(NEW.outbox)) AS o;
"""

CLAIM = """
UPDATE webhooks SET lease_owner = :lease, lease_until = :now + :ttl,
  attempts = attempts + 1, first_attempt = coalesce(first_attempt, :now)
WHERE rowid IN (
  SELECT rowid FROM webhooks
  WHERE state = 'waiting' AND next_attempt <= :now AND lease_until <= :now
    AND endpoint NOT IN (SELECT value FROM json_each(:skip))
  ORDER BY next_attempt LIMIT :limit)
RETURNING rowid, connection_id, seq, endpoint, body, attempts, first_attempt
"""

FINISH = """
UPDATE webhooks SET state = :state, next_attempt = :next, lease_owner = NULL,
  lease_until = 0, last_error = :error
WHERE rowid = :id AND lease_owner = :lease AND state = 'waiting'
"""

PROMOTE = """
UPDATE webhooks SET next_attempt = :now WHERE state = 'waiting' AND rowid = (
  SELECT rowid FROM webhooks
  WHERE room = (SELECT room FROM webhooks WHERE rowid = :id)
    AND endpoint = :endpoint AND seq > :seq
  ORDER BY seq LIMIT 1)
"""

REQUEUE = """
UPDATE webhooks SET state = 'waiting', attempts = 0, first_attempt = NULL, lease_owner = NULL,
  lease_until = 0, last_error = NULL,
  next_attempt = CASE WHEN seq = (
    SELECT min(w.seq) FROM webhooks AS w
    WHERE w.room = webhooks.room AND w.endpoint = webhooks.endpoint) THEN :now END
WHERE room = :room
"""

PENDING = """
SELECT connection_id, seq, endpoint, state, attempts, next_attempt, created, last_error
FROM webhooks WHERE state IN ('waiting', 'abandoned') ORDER BY connection_id, endpoint, seq
"""


def _unsynced(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    """`fn` in one transaction without an fsync of its own (see the module's doc)."""
    conn.execute("PRAGMA synchronous = NORMAL")
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn(conn)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return result
    finally:
        conn.execute("PRAGMA synchronous = FULL")


def claim_rows(
    conn: sqlite3.Connection, lease: str, now: float, ttl: float, limit: int, skip: list[str]
) -> list[WebhookClaim]:
    def run(c: sqlite3.Connection) -> list[WebhookClaim]:
        rows = c.execute(
            CLAIM,
            {
                "lease": lease,
                "now": now,
                "ttl": ttl,
                "limit": limit,
                "skip": orjson.dumps(skip).decode(),
            },
        ).fetchall()
        return [
            WebhookClaim(row[0], row[1], row[2], row[3], row[4], row[5], row[6], lease)
            for row in rows
        ]

    return _unsynced(conn, run)


def finish_row(
    conn: sqlite3.Connection,
    item: WebhookClaim,
    outcome: Outcome,
    now: float,
    next_attempt: float | None,
    error: str | None,
) -> bool:
    def run(c: sqlite3.Connection) -> bool:
        state = "waiting" if outcome == "failed" else outcome
        changed = c.execute(
            FINISH,
            {
                "state": state,
                "next": next_attempt if outcome == "failed" else None,
                "error": error,
                "id": item.id,
                "lease": item.lease,
            },
        ).rowcount
        if changed and state != "waiting":
            c.execute(
                PROMOTE, {"now": now, "id": item.id, "endpoint": item.endpoint, "seq": item.seq}
            )
        return bool(changed)

    return _unsynced(conn, run)


def read_stats(conn: sqlite3.Connection) -> tuple[int, float | None]:
    (count,) = conn.execute("SELECT count(*) FROM webhooks WHERE state = 'waiting'").fetchone()
    (oldest,) = conn.execute(
        "SELECT min(created) FROM webhooks WHERE state = 'waiting' AND next_attempt IS NOT NULL"
    ).fetchone()
    return int(count), oldest


def read_pending(conn: sqlite3.Connection) -> list[WebhookRow]:
    return [WebhookRow(*row) for row in conn.execute(PENDING).fetchall()]


def requeue(conn: sqlite3.Connection, connection_id: str, now: float) -> int | None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        found = conn.execute(
            "SELECT room FROM rooms WHERE connection_id = ?", (connection_id,)
        ).fetchone()
        count = None
        if found is not None:
            count = conn.execute(REQUEUE, {"now": now, "room": found[0]}).rowcount
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return count


Runner = Callable[..., Any]  # runs fn(conn, *args) on a store thread; awaitable result


class SQLiteWebhooks:
    """The `WebhookQueue` of a SQLite store: writes on its writer, reads on its reader."""

    def __init__(self, write: Runner, read: Runner) -> None:
        self._write = write
        self._read = read

    async def claim(
        self, owner: str, now: float, lease: float, limit: int, skip: list[str]
    ) -> list[WebhookClaim]:
        result: list[WebhookClaim] = await self._write(claim_rows, owner, now, lease, limit, skip)
        return result

    async def finish(
        self,
        claim: WebhookClaim,
        outcome: Outcome,
        now: float,
        next_attempt: float | None = None,
        error: str | None = None,
    ) -> bool:
        result: bool = await self._write(finish_row, claim, outcome, now, next_attempt, error)
        return result

    async def stats(self) -> tuple[int, float | None]:
        result: tuple[int, float | None] = await self._read(read_stats)
        return result

    async def pending(self) -> list[WebhookRow]:
        result: list[WebhookRow] = await self._read(read_pending)
        return result

    async def redeliver(self, connection_id: str, now: float) -> int | None:
        result: int | None = await self._write(requeue, connection_id, now)
        return result
