"""The webhook outbox in PostgreSQL (migration 3): the queue's statements.

A commit's messages are written by `settlement_commit` (postgres_commit.py)
with its events. The same queues as in SQLite (sqlite_outbox.py): per (connection, endpoint)
in `seq` order, only the head has a `next_attempt`. Several nodes claim with
`FOR UPDATE SKIP LOCKED` and an expiring lease (`lease_until`), so each
message is held by one node at a time and a dead node's messages are claimed
again once their lease ran out.

"Is the message before me still waiting?" (a commit) and "make the next one
due" (a finish) must not miss each other under READ COMMITTED: both hold the
room's row lock, the commit by its `UPDATE rooms`, the finish by `FOR SHARE`,
so one waits for the other and then sees what it wrote.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeVar

import asyncpg

from .base import Outcome, WebhookClaim, WebhookRow

T = TypeVar("T")

MIGRATION = """
CREATE TABLE webhooks (
    id BIGSERIAL PRIMARY KEY,
    connection_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    endpoint TEXT NOT NULL,
    body TEXT NOT NULL,
    created DOUBLE PRECISION NOT NULL,
    state TEXT NOT NULL DEFAULT 'waiting',
    next_attempt DOUBLE PRECISION,
    attempts INTEGER NOT NULL DEFAULT 0,
    first_attempt DOUBLE PRECISION,
    lease_owner TEXT,
    lease_until DOUBLE PRECISION NOT NULL DEFAULT 0,
    last_error TEXT,
    UNIQUE (connection_id, endpoint, seq)
);
CREATE INDEX webhooks_waiting ON webhooks (next_attempt) WHERE state = 'waiting';
"""

CLAIM = """
UPDATE webhooks SET lease_owner = $1, lease_until = $2 + $3,
  attempts = attempts + 1, first_attempt = coalesce(first_attempt, $2)
WHERE id IN (
  SELECT id FROM webhooks
  WHERE state = 'waiting' AND next_attempt <= $2 AND lease_until <= $2
    AND NOT (endpoint = ANY($5::text[]))
  ORDER BY next_attempt LIMIT $4
  FOR UPDATE SKIP LOCKED)
RETURNING id, connection_id, seq, endpoint, body, attempts, first_attempt
"""

FINISH = """
UPDATE webhooks SET state = $1, next_attempt = $2, lease_owner = NULL, lease_until = 0,
  last_error = $3
WHERE id = $4 AND lease_owner = $5 AND state = 'waiting'
RETURNING 1
"""

PROMOTE = """
UPDATE webhooks SET next_attempt = $4 WHERE state = 'waiting' AND id = (
  SELECT id FROM webhooks WHERE connection_id = $1 AND endpoint = $2 AND seq > $3
  ORDER BY seq LIMIT 1)
"""

REQUEUE = """
UPDATE webhooks SET state = 'waiting', attempts = 0, first_attempt = NULL, lease_owner = NULL,
  lease_until = 0, last_error = NULL,
  next_attempt = CASE WHEN seq = (
    SELECT min(w.seq) FROM webhooks AS w
    WHERE w.connection_id = webhooks.connection_id AND w.endpoint = webhooks.endpoint)
    THEN $2::float8 END
WHERE connection_id = $1
"""

PENDING = """
SELECT connection_id, seq, endpoint, state, attempts, next_attempt, created, last_error
FROM webhooks WHERE state IN ('waiting', 'abandoned') ORDER BY connection_id, endpoint, seq
"""


Connection = Callable[[], AbstractAsyncContextManager[asyncpg.Connection]]
Retry = Callable[[Callable[[], Awaitable[Any]]], Awaitable[Any]]


class PostgresWebhooks:
    """The `WebhookQueue` of a PostgreSQL store (its pool, its retry and error rules)."""

    def __init__(self, connection: Connection, retry: Retry) -> None:
        self._connection = connection
        self._retry = retry

    async def claim(
        self, owner: str, now: float, lease: float, limit: int, skip: list[str]
    ) -> list[WebhookClaim]:
        async def op() -> list[WebhookClaim]:
            async with self._connection() as conn:
                rows = await conn.fetch(CLAIM, owner, now, lease, limit, skip)
            return [WebhookClaim(r[0], r[1], r[2], r[3], r[4], r[5], r[6], owner) for r in rows]

        result: list[WebhookClaim] = await self._retry(op)
        return result

    async def finish(
        self,
        claim: WebhookClaim,
        outcome: Outcome,
        now: float,
        next_attempt: float | None = None,
        error: str | None = None,
    ) -> bool:
        state = "waiting" if outcome == "failed" else outcome

        async def op() -> bool:
            async with self._connection() as conn, conn.transaction():
                await conn.execute(
                    "SELECT 1 FROM rooms WHERE connection_id = $1 FOR SHARE", claim.connection_id
                )
                changed = await conn.fetchval(
                    FINISH,
                    state,
                    next_attempt if outcome == "failed" else None,
                    error,
                    claim.id,
                    claim.lease,
                )
                if changed and state != "waiting":
                    await conn.execute(PROMOTE, claim.connection_id, claim.endpoint, claim.seq, now)
            return bool(changed)

        result: bool = await self._retry(op)
        return result

    async def stats(self) -> tuple[int, float | None]:
        async def op() -> tuple[int, float | None]:
            async with self._connection() as conn:
                row = await conn.fetchrow(
                    "SELECT count(*) AS n, min(created) FILTER (WHERE next_attempt IS NOT NULL) "
                    "AS oldest FROM webhooks WHERE state = 'waiting'"
                )
            assert row is not None
            return int(row["n"]), row["oldest"]

        result: tuple[int, float | None] = await self._retry(op)
        return result

    async def pending(self) -> list[WebhookRow]:
        async def op() -> list[WebhookRow]:
            async with self._connection() as conn:
                rows = await conn.fetch(PENDING)
            return [WebhookRow(*tuple(r)) for r in rows]

        result: list[WebhookRow] = await self._retry(op)
        return result

    async def redeliver(self, connection_id: str, now: float) -> int | None:
        async def op() -> int | None:
            async with self._connection() as conn, conn.transaction():
                found = await conn.fetchval(
                    "SELECT 1 FROM rooms WHERE connection_id = $1 FOR UPDATE", connection_id
                )
                if found is None:
                    return None
                status = await conn.execute(REQUEUE, connection_id, now)
            return int(status.split()[-1])

        result: int | None = await self._retry(op)
        return result
