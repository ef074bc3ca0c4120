"""The service of one node: its parts wired once, and the edge every command crosses.

`Service` builds the parts in dependency order (each gets what it uses at
construction) and answers for every command: it counts it for a graceful
shutdown, turns a store outage or an unexpected exception into an error ack,
and writes one log line and the metrics. The command itself runs in
`pipeline.Pipeline.run`; the parts are:

    roomcache  rooms cached on this node, a lock per room
    fanout     snapshots and fragments to each audience, error acks with state
    seating    seats, watchers, presence; unseating a seat left elsewhere
    presence   connect-time auth, resume, disconnect
    idempotency  request_id -> original ack
    reads      history, receipts, page data
    reconcile  what other nodes report (the `NodeEvents` of this node)
    nodes      one node (`LocalNode`) or a cluster (`cluster.Cluster`): one interface
"""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from typing import Any

import structlog

from . import logs, metrics, money
from .fanout import Fanout, Publisher
from .idempotency import Replays, fingerprint
from .ids import TokenMint
from .negotiation import Party
from .nodes import LocalNode, NodesFactory
from .pipeline import Pipeline
from .presence import Presence
from .reads import PageRoom, Reads
from .reconcile import Reconciler
from .roomcache import RoomCache
from .rooms import GuessLimiter, Registry, Session
from .seating import Seating
from .shapes import Ack, refusal
from .signing import Signer
from .store import Store, Unavailable

__all__ = ["PageRoom", "Publisher", "Service", "fingerprint"]

log = structlog.get_logger("settlement")


def _short(value: Any) -> str | None:
    return None if value is None else str(value)[:64]


class Service:
    def __init__(
        self,
        store: Store,
        publisher: Publisher,
        signer: Signer,
        mint: TokenMint,
        *,
        max_amount: Decimal = money.DEFAULT_MAXIMUM,
        metrics_: metrics.Metrics | None = None,
        nodes: NodesFactory = LocalNode,
        guesses: GuessLimiter | None = None,
        webhook_urls: tuple[str, ...] = (),
    ) -> None:
        self.store = store
        self.signer = signer
        self.metrics = metrics_ or metrics.Metrics()
        self.registry = Registry()
        self.guesses = guesses or GuessLimiter()
        # What other nodes report reaches this node's Reconciler (built below,
        # before `start` lets any report in).
        self.nodes = nodes(self)
        cache = RoomCache(store, self.registry)
        fanout = Fanout(publisher, self.registry, self.nodes, cache)
        seating = Seating(self.registry, publisher, self.nodes, cache, fanout, self.metrics)
        replays = Replays(store, cache, mint, fanout, seating)
        self.presence = Presence(cache, self.registry, seating, fanout, self.guesses, self.metrics)
        self.reads = Reads(store, cache, fanout, signer)
        self.reconciler = Reconciler(cache, self.registry, seating, fanout)
        self.pipeline = Pipeline(
            store,
            cache,
            fanout,
            seating,
            replays,
            self.presence,
            self.reads,
            self.nodes,
            mint,
            self.guesses,
            self.metrics,
            max_amount,
            webhook_urls,
        )
        self.fanout = fanout
        self.draining = False
        self._inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    # -- every command ---------------------------------------------------------

    async def handle(self, s: Session, event: str, payload: Any) -> Ack:
        """Answer one command with its ack; never raises."""
        started = time.perf_counter()
        seat = s.seat
        try:
            ack = await self.pipeline.run(s, event, payload)
        except Unavailable:
            ack = await self.fanout.refuse(s, refusal("unavailable"))
        except Exception:
            log.exception("command_failed", event_name=event, sid=s.sid)
            ack = await self.fanout.refuse(s, refusal("failed"))
        return self._account(s, event, payload, ack, started, seat)

    async def rate_limited(self, s: Session, event: Any, payload: Any) -> Ack:
        """The answer to a command over the socket's budget (it takes no token)."""
        started = time.perf_counter()
        ack = await self.fanout.refuse(s, refusal("rate_limited"))
        return self._account(s, str(event), payload, ack, started, s.seat)

    def _account(
        self,
        s: Session,
        event: str,
        payload: Any,
        ack: Ack,
        started: float,
        seat: tuple[str, Party] | None,
    ) -> Ack:
        """One log line and the metrics for one answered command."""
        elapsed = time.perf_counter() - started
        outcome = "ok" if ack["ok"] else ack["error"]["code"]
        self.metrics.command(
            event if event in metrics.KNOWN_EVENTS else "unknown", outcome, elapsed
        )
        seat = seat or s.seat
        logs.command_line(
            {
                "event_name": event[:40],
                "connection_id": seat[0] if seat else ack.get("connection_id"),
                "party": seat[1] if seat else ack.get("party"),
                "request_id": (
                    _short(payload.get("request_id")) if isinstance(payload, dict) else None
                ),
                "outcome": outcome,
                "latency_ms": round(elapsed * 1000, 3),
            }
        )
        return ack

    # -- graceful shutdown -----------------------------------------------------

    def begin(self) -> None:
        """A command was accepted for handling (it may still wait for its socket's turn)."""
        self._inflight += 1
        self._idle.clear()

    def end(self) -> None:
        self._inflight -= 1
        if self._inflight == 0:
            self._idle.set()

    async def drain(self, timeout: float = 10.0) -> None:
        """Graceful shutdown: refuse new commands, let those in flight commit and answer."""
        self.draining = True
        await asyncio.sleep(0)  # commands already dispatched get to start first
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            log.warning("drain_timeout", inflight=self._inflight)

    # -- sockets arriving and going, reads for HTTP ----------------------------

    async def connect(self, s: Session, auth: Any) -> None:
        await self.presence.connect(s, auth)

    async def disconnect(self, s: Session) -> None:
        await self.presence.disconnect(s)

    async def page_room(self, raw_cid: str) -> PageRoom | None:
        return await self.reads.page_room(raw_cid)

    async def http_receipt(self, raw_cid: str, token: str | None) -> tuple[int, dict[str, Any]]:
        return await self.reads.http_receipt(raw_cid, token)

    # -- nodes.NodeEvents: what other nodes report, to the reconciler ----------

    async def changed(self, cid: str, seq: int) -> None:
        await self.reconciler.changed(cid, seq)

    async def unseat(self, cid: str, party: str) -> None:
        await self.reconciler.unseat(cid, party)

    async def presence_lost(self, cid: str) -> None:
        await self.reconciler.presence_lost(cid)

    async def recovered(self) -> None:
        await self.reconciler.recovered()
