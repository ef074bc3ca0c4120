"""Delivering the webhook outbox, off the command path.

One loop per node claims due messages from the store (a lease: one node at a
time holds a message), posts each in its own task with one aiohttp session,
and records the outcome. It wakes when this node commits messages
(`wake`), when one of its own deliveries finishes, when a retry it scheduled
is due, and at least every `poll` seconds for the work of other nodes, for
leases that ran out (a node that died) and for `--redeliver`.

A message is the head of its (endpoint, connection) queue; the store hands out
only heads, so the order per queue holds whatever else fails. At most
PER_ENDPOINT deliveries per endpoint run at once (and MAX_INFLIGHT in all), so
an endpoint that hangs ties up its own slots only.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import time
from collections import Counter

import aiohttp
import structlog

from . import webhooks
from .metrics import Metrics
from .store import Store, Unavailable, WebhookClaim

log = structlog.get_logger("settlement.webhooks")

TIMEOUT = 10.0  # seconds for the whole exchange of one attempt
LEASE = 20.0  # seconds a claim holds a message: above TIMEOUT, below the 30 s takeover
POLL = 1.0  # seconds between looks at the store when nothing wakes the loop
MAX_INFLIGHT = 64
PER_ENDPOINT = 16
MAX_RESPONSE = 64 * 1024  # bytes of an answer read (and ignored) before the exchange ends


class Deliverer:
    """Made before the store (whose commits call `wake`), started once it is open."""

    def __init__(
        self,
        secret: str,
        *,
        retry_base: float = 1.0,
        retry_for: float = 72 * 3600.0,
        poll: float = POLL,
        lease: float = LEASE,
    ) -> None:
        self.key = webhooks.parse_secret(secret)
        self.retry_base = retry_base
        self.retry_for = retry_for
        self.poll = poll
        self.lease = lease
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._claims = 0
        self._wake = asyncio.Event()
        self._inflight: dict[asyncio.Task[None], WebhookClaim] = {}
        self._per_endpoint: Counter[str] = Counter()
        self._next_due = float("inf")  # the earliest retry this node scheduled
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.Task[None] | None = None

    def wake(self) -> None:
        """Look at the store now (a commit wrote messages; safe to call from any callback)."""
        self._wake.set()

    async def start(self, store: Store, metrics: Metrics) -> None:
        self.store = store
        self.metrics = metrics
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=TIMEOUT),
            connector=aiohttp.TCPConnector(limit=MAX_INFLIGHT),
        )
        self._loop = asyncio.create_task(self._run(), name="webhook-deliverer")
        log.info("webhooks_started", owner=self.owner)

    async def close(self) -> None:
        """Stop claiming; deliveries in flight are cut and their messages released."""
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop
            self._loop = None
        tasks = list(self._inflight)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- the loop -------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self._claim_some()
            except Unavailable as exc:
                log.warning("webhooks_store_unavailable", error=str(exc))
            except Exception:
                log.exception("webhooks_claim_failed")
            timeout = max(0.0, min(self.poll, self._next_due - time.time()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    async def _claim_some(self) -> None:
        """Claim while there is room: PER_ENDPOINT at a time, so that one endpoint
        with many due messages cannot take every slot in one claim."""
        while (room := MAX_INFLIGHT - len(self._inflight)) > 0:
            now = time.time()
            if self._next_due <= now:
                self._next_due = float("inf")  # the store hands it out now if still due
            skip = [url for url, n in self._per_endpoint.items() if n >= PER_ENDPOINT]
            self._claims += 1
            lease = f"{self.owner}:{self._claims}"
            want = min(room, PER_ENDPOINT)
            claims = await self.store.webhooks.claim(lease, now, self.lease, want, skip)
            for claim in claims:
                self._per_endpoint[claim.endpoint] += 1
                task = asyncio.create_task(self._deliver(claim))
                self._inflight[task] = claim
                task.add_done_callback(self._done)
            if len(claims) < want:
                return

    def _done(self, task: asyncio.Task[None]) -> None:
        claim = self._inflight.pop(task)
        self._per_endpoint[claim.endpoint] -= 1
        if self._per_endpoint[claim.endpoint] <= 0:
            del self._per_endpoint[claim.endpoint]
        self._wake.set()  # a slot is free, and the next message of its queue may be due

    # -- one message ----------------------------------------------------------

    async def _deliver(self, claim: WebhookClaim) -> None:
        msg_id = webhooks.message_id(claim.connection_id, claim.seq)
        started = time.time()
        try:
            if claim.attempts > 1 and started > claim.first_attempt + self.retry_for:
                # Claimed after its window closed (every node was down, say): no attempt.
                await self._abandon(claim, msg_id, started, "the retry window closed")
                return
            error = await self._post(claim, msg_id)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):  # shutting down: let another node go on
                await asyncio.shield(
                    self.store.webhooks.finish(claim, "failed", time.time(), time.time(), "stopped")
                )
            raise
        except Unavailable as exc:
            log.warning("webhook_outcome_not_recorded", id=msg_id, error=str(exc))
            return
        now = time.time()
        try:
            if error is None:
                await self.store.webhooks.finish(claim, "delivered", now)
                self.metrics.webhook_outcome("delivered")
                log.info("webhook_delivered", id=msg_id, endpoint=claim.endpoint)
                return
            self.metrics.webhook_outcome("failed")
            next_at = now + webhooks.retry_wait(claim.attempts, self.retry_base)
            if next_at > claim.first_attempt + self.retry_for:
                await self._abandon(claim, msg_id, now, error)
                return
            if await self.store.webhooks.finish(claim, "failed", now, next_at, error):
                self._next_due = min(self._next_due, next_at)
            log.info(
                "webhook_failed",
                id=msg_id,
                endpoint=claim.endpoint,
                attempt=claim.attempts,
                error=error,
                retry_in=round(next_at - now, 3),
            )
        except Unavailable as exc:
            # Not recorded: the lease runs out and the message is tried again (same id).
            log.warning("webhook_outcome_not_recorded", id=msg_id, error=str(exc))

    async def _abandon(self, claim: WebhookClaim, msg_id: str, now: float, error: str) -> None:
        if await self.store.webhooks.finish(claim, "abandoned", now, None, error):
            self.metrics.webhook_outcome("abandoned")
            log.warning(
                "webhook_abandoned",
                id=msg_id,
                connection_id=claim.connection_id,
                endpoint=claim.endpoint,
                attempts=claim.attempts,
                error=error,
            )

    async def _post(self, claim: WebhookClaim, msg_id: str) -> str | None:
        """One attempt; None when it succeeded, else what went wrong."""
        assert self._session is not None
        payload = claim.body.encode()
        sent = webhooks.headers(self.key, msg_id, int(time.time()), payload)
        try:
            async with self._session.post(
                claim.endpoint, data=payload, headers=sent, allow_redirects=False
            ) as response:
                await response.content.read(MAX_RESPONSE)
                if 200 <= response.status < 300:
                    return None
                return f"HTTP {response.status}"
        except TimeoutError:
            return f"no answer within {TIMEOUT:g} s"
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            return f"{type(exc).__name__}: {exc}"[:500]


async def refresh_metrics(store: Store, metrics: Metrics) -> None:
    """`settlement_webhook_waiting` and the oldest waiting message's age, from the store."""
    waiting, oldest = await store.webhooks.stats()
    metrics.webhook_waiting.set(waiting)
    metrics.webhook_oldest.set(max(0.0, time.time() - oldest) if oldest is not None else 0)
