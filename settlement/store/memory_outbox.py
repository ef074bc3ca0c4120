"""The webhook outbox of the memory store: the queue rules of sqlite_outbox.py in a list
(the same contract tests, tests/store/test_outbox.py). One event loop serialises it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .base import OutboxRow, Outcome, WebhookClaim, WebhookRow, outbox_heads


@dataclass
class _Message:
    id: int
    row: OutboxRow
    state: str = "waiting"
    next_attempt: float | None = None
    attempts: int = 0
    first_attempt: float | None = None
    lease_owner: str | None = None
    lease_until: float = 0.0
    last_error: str | None = None


class MemoryWebhooks:
    def __init__(self, check: Callable[[], None], has_room: Callable[[str], bool]) -> None:
        self._check = check  # raises Unavailable while the store is "down"
        self._has_room = has_room
        self.messages: list[_Message] = []

    def _queue(self, m: _Message) -> list[_Message]:
        key = (m.row.connection_id, m.row.endpoint)
        return sorted(
            (x for x in self.messages if (x.row.connection_id, x.row.endpoint) == key),
            key=lambda x: x.row.seq,
        )

    def add(self, rows: list[OutboxRow]) -> None:
        """A commit's messages (called by the memory store inside its commit)."""
        for row, head in zip(rows, outbox_heads(rows), strict=True):
            m = _Message(len(self.messages) + 1, row)
            earlier = [x for x in self._queue(m) if x.row.seq < row.seq]
            if head and (not earlier or earlier[-1].state != "waiting"):
                m.next_attempt = row.created
            self.messages.append(m)

    async def claim(
        self, owner: str, now: float, lease: float, limit: int, skip: list[str]
    ) -> list[WebhookClaim]:
        self._check()
        due = [
            m
            for m in self.messages
            if m.state == "waiting"
            and m.next_attempt is not None
            and m.next_attempt <= now
            and m.lease_until <= now
            and m.row.endpoint not in skip
        ]
        out = []
        for m in sorted(due, key=lambda x: x.next_attempt or 0.0)[:limit]:
            m.lease_owner, m.lease_until = owner, now + lease
            m.attempts += 1
            m.first_attempt = m.first_attempt if m.first_attempt is not None else now
            r = m.row
            out.append(
                WebhookClaim(
                    m.id,
                    r.connection_id,
                    r.seq,
                    r.endpoint,
                    r.body,
                    m.attempts,
                    m.first_attempt,
                    owner,
                )
            )
        return out

    async def finish(
        self,
        claim: WebhookClaim,
        outcome: Outcome,
        now: float,
        next_attempt: float | None = None,
        error: str | None = None,
    ) -> bool:
        self._check()
        m = self.messages[claim.id - 1]
        if m.lease_owner != claim.lease or m.state != "waiting":
            return False
        m.state = "waiting" if outcome == "failed" else outcome
        m.next_attempt = next_attempt if outcome == "failed" else None
        m.lease_owner, m.lease_until, m.last_error = None, 0.0, error
        if m.state != "waiting":
            later = [x for x in self._queue(m) if x.row.seq > m.row.seq]
            if later and later[0].state == "waiting":
                later[0].next_attempt = now
        return True

    async def stats(self) -> tuple[int, float | None]:
        self._check()
        waiting = [m for m in self.messages if m.state == "waiting"]
        heads = [m.row.created for m in waiting if m.next_attempt is not None]
        return len(waiting), min(heads) if heads else None

    async def pending(self) -> list[WebhookRow]:
        self._check()
        rows = [
            WebhookRow(
                m.row.connection_id,
                m.row.seq,
                m.row.endpoint,
                m.state,
                m.attempts,
                m.next_attempt,
                m.row.created,
                m.last_error,
            )
            for m in self.messages
            if m.state in ("waiting", "abandoned")
        ]
        return sorted(rows, key=lambda r: (r.connection_id, r.endpoint, r.seq))

    def requeue(self, connection_id: str, now: float) -> int:
        mine = [m for m in self.messages if m.row.connection_id == connection_id]
        firsts: dict[str, int] = {}
        for m in mine:
            firsts[m.row.endpoint] = min(firsts.get(m.row.endpoint, m.row.seq), m.row.seq)
        for m in mine:
            m.state, m.attempts, m.first_attempt, m.last_error = "waiting", 0, None, None
            m.lease_owner, m.lease_until = None, 0.0
            m.next_attempt = now if firsts[m.row.endpoint] == m.row.seq else None
        return len(mine)

    async def redeliver(self, connection_id: str, now: float) -> int | None:
        self._check()
        return self.requeue(connection_id, now) if self._has_room(connection_id) else None
