"""One load-generator process: drives its share of the pairs with lean sockets.

The orchestrator (`bench/__main__.py`) starts several of these with
multiprocessing (spawn) and talks to each over a Pipe, one request and one
reply at a time:

- `open`: connect `2 * pairs` sockets, A of each pair to `url`, B to `url_b`
  (default `url`; bench/cluster.py puts B on another node);
- `run`: drive every pair (signing every command when `sign`, protocol 1.1) through whole negotiations from `t_start` until
  `t1` (monotonic clock, shared by all processes on Linux), as fast as
  possible (`interval` None) or one command every `interval` seconds per pair;
  only what happens inside `[t0, t1]` is counted; a pair that is mid-way at
  `t1` finishes its negotiation (uncounted) so that its seats are free again;
- `seat`: each pair creates and joins one room, then stays idle (scale run);
- `close`: drop every socket; `exit`: stop.

Every loop is bounded: a negotiation has a deadline, a run has a deadline.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import resource
import secrets
import time
from collections import Counter
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import aiohttp
import orjson

from settlement.consent import PartyKey, propose_statement, respond_statement

from .lean import LeanError, LeanSocket, ws_url

PROPOSALS = 3  # "a few proposals" before B answers; then dispute, one modification, accept
NEGOTIATION_TIMEOUT = 30.0
OPEN_CONCURRENCY = 64
# One negotiation: create, join, PROPOSALS x propose, dispute, propose, accept, leave x2.
COMMANDS_PER_NEGOTIATION = 2 + PROPOSALS + 1 + 1 + 1 + 2
_STATE_PREFIX = '42/settlement,["state",'


class BenchFailure(Exception):
    """An error ack nobody expected (the negotiation script never breaks a rule)."""


def raise_nofile() -> tuple[int, int]:
    """Raise the soft open-file limit to the hard one (10,000 sockets need >1,024 fds)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


@dataclass(eq=False)
class Pair:
    a: LeanSocket
    b: LeanSocket
    amounts: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    # amount string -> perf_counter() when A sent that propose (latency runs)
    pending: dict[str, float] = field(default_factory=dict)
    dead: bool = False
    # Protocol 1.1 keys of A and B, made once per pair (`--sign`).
    keys: tuple[PartyKey, PartyKey] | None = None


@dataclass
class RunStats:
    t0: float
    t1: float
    ok: int = 0
    negotiations: int = 0
    rtts: list[float] = field(default_factory=list)  # ms, acks received inside the window
    latencies: list[float] = field(default_factory=list)  # ms, propose -> B's state
    errors: Counter[str] = field(default_factory=Counter)
    cpu: list[float] = field(default_factory=list)


class Worker:
    def __init__(self, conn: Connection, index: int) -> None:
        self.conn = conn
        self.index = index
        self.pairs: list[Pair] = []
        self.session: aiohttp.ClientSession | None = None
        self._ids = itertools.count(1)
        self._prefix = f"{secrets.token_hex(6)}w{index}-"
        self.stats: RunStats | None = None
        self.latency_mode = False
        self.sign = False

    def rid(self) -> str:
        return f"{self._prefix}{next(self._ids):012d}"  # >= 22 chars: fine for create/join

    # -- control -------------------------------------------------------------

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        try:
            while True:
                msg: dict[str, Any] = await loop.run_in_executor(None, self.conn.recv)
                op = msg["op"]
                try:
                    if op == "exit":
                        self.conn.send({"ok": True})
                        return
                    if op == "open":
                        reply = await self.open(msg["url"], msg["pairs"], msg.get("url_b"))
                    elif op == "run":
                        reply = await self.run(msg)
                    elif op == "seat":
                        reply = await self.seat_all()
                    elif op == "close":
                        reply = await self.close_all()
                    else:
                        reply = {"ok": False, "error": f"unknown op {op!r}"}
                except Exception as exc:  # reported, never swallowed
                    reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
                reply.setdefault("ok", True)
                reply["rss"] = _rss()
                self.conn.send(reply)
        finally:
            await self.close_all()
            await self.session.close()

    async def open(self, url: str, pairs: int, url_b: str | None = None) -> dict[str, Any]:
        assert self.session is not None
        session = self.session
        targets = (ws_url(url), ws_url(url_b or url))
        sem = asyncio.Semaphore(OPEN_CONCURRENCY)
        started = time.monotonic()

        async def one(i: int) -> LeanSocket:
            sock = LeanSocket(on_event=None)
            async with sem:
                await sock.connect(session, targets[i % 2])  # even: A, odd: B
            return sock

        socks = await asyncio.gather(*(one(i) for i in range(2 * pairs)))
        self.pairs = [Pair(socks[i], socks[i + 1]) for i in range(0, len(socks), 2)]
        for pair in self.pairs:
            pair.b.on_event = self._on_b_event(pair)
        return {"sockets": len(socks), "seconds": time.monotonic() - started}

    async def close_all(self) -> dict[str, Any]:
        socks = [s for p in self.pairs for s in (p.a, p.b)]
        self.pairs = []
        sem = asyncio.Semaphore(256)

        async def one(s: LeanSocket) -> None:
            async with sem:
                await s.close()

        await asyncio.gather(*(one(s) for s in socks), return_exceptions=True)
        return {"closed": len(socks)}

    # -- the negotiation script ------------------------------------------------

    def _on_b_event(self, pair: Pair) -> Any:
        def on_event(data: str) -> None:
            if not self.latency_mode or not pair.pending:
                return
            now = time.perf_counter()
            if not data.startswith(_STATE_PREFIX):
                return
            state = orjson.loads(data[len(_STATE_PREFIX) : -1])
            offer = state.get("offer")
            if offer is None:
                return
            sent = pair.pending.pop(offer["amount"], None)
            stats = self.stats
            if sent is not None and stats is not None:
                stats.latencies.append((now - sent) * 1000.0)

        return on_event

    async def _step(
        self,
        sock: LeanSocket,
        event: str,
        payload: dict[str, Any],
        pace: Any,
        pair: Pair | None = None,
    ) -> dict[str, Any]:
        if pace is not None:
            await pace()
        stats = self.stats
        assert stats is not None
        sent = time.perf_counter()
        if pair is not None and self.latency_mode and stats.t0 <= time.monotonic() <= stats.t1:
            pair.pending[payload["amount"]] = sent  # B's `state` with this offer closes it
        ack = await sock.call(event, payload)
        now = time.monotonic()
        if not ack.get("ok"):
            code = (ack.get("error") or {}).get("code", "?")
            stats.errors[f"{event}:{code}"] += 1
            raise BenchFailure(f"{event} refused: {code}")
        if stats.t0 <= now <= stats.t1:
            stats.ok += 1
            stats.rtts.append((time.perf_counter() - sent) * 1000.0)
        return ack

    async def negotiate(self, pair: Pair, pace: Any) -> None:
        a, b, step = pair.a, pair.b, self._step
        if self.sign and pair.keys is None:
            pair.keys = (PartyKey(), PartyKey())
        ka, kb = pair.keys if self.sign and pair.keys else (None, None)
        create: dict[str, Any] = {"party": "A", "request_id": self.rid()}
        join: dict[str, Any] = {"request_id": self.rid()}
        if ka is not None and kb is not None:
            create["public_key"], join["public_key"] = ka.public_key, kb.public_key
        created = await step(a, "create", create, pace)
        cid = created["connection_id"]
        currency = created["state"]["currency"]
        await step(b, "join", {"connection_id": cid, **join}, pace)
        version = 0
        offer: dict[str, Any] = {}
        for i in range(PROPOSALS + 1):
            if i == PROPOSALS:  # B disputes the last offer; A modifies once more
                dispute: dict[str, Any] = {
                    "decision": "dispute",
                    "version": version,
                    "reason": "too high",
                    "request_id": self.rid(),
                }
                if kb is not None:
                    statement = respond_statement("dispute", cid, currency, offer, "too high")
                    dispute["signature"] = kb.sign(statement)
                await step(b, "respond", dispute, pace)
            amount = f"{next(pair.amounts)}.00"
            propose: dict[str, Any] = {"amount": amount, "request_id": self.rid()}
            if ka is not None:
                propose["version"] = version + 1
                propose["signature"] = ka.sign(
                    propose_statement(cid, currency, amount, version + 1)
                )
            ack = await step(a, "propose", propose, pace, pair)
            version = ack["version"]
            # The ceiling (bench/ceiling.py) speaks protocol 1.0: no offer hash. The
            # client signs all the same, so both servers see the same frames.
            offer = {"hash": "", **ack["state"]["offer"]}
        accept: dict[str, Any] = {
            "decision": "accept",
            "version": version,
            "request_id": self.rid(),
        }
        if kb is not None:
            accept["signature"] = kb.sign(respond_statement("accept", cid, currency, offer))
        await step(b, "respond", accept, pace)
        await step(a, "leave", {"request_id": self.rid()}, pace)
        await step(b, "leave", {"request_id": self.rid()}, pace)

    async def _pair_loop(self, pair: Pair, t_start: float, interval: float | None) -> None:
        stats = self.stats
        assert stats is not None
        pace = None
        if interval is not None:
            # Open-loop pacing: command k of this pair is due at start + phase + k*interval.
            due = t_start + interval * (secrets.randbelow(1_000_000) / 1_000_000)

            async def pace() -> None:
                nonlocal due
                delay = due - time.monotonic()
                due += interval
                if delay > 0:
                    await asyncio.sleep(delay)

        await _sleep_until(t_start)
        while time.monotonic() < stats.t1 and not pair.dead:
            try:
                async with asyncio.timeout(NEGOTIATION_TIMEOUT):
                    await self.negotiate(pair, pace)
            except (BenchFailure, LeanError, TimeoutError) as exc:
                if isinstance(exc, TimeoutError):
                    stats.errors["timeout"] += 1
                elif isinstance(exc, LeanError):
                    stats.errors["link"] += 1
                pair.dead = True  # seats may be held: this pair stops here
                return
            if stats.t0 <= time.monotonic() <= stats.t1:
                stats.negotiations += 1

    async def run(self, msg: dict[str, Any]) -> dict[str, Any]:
        t_start, t0, t1 = msg["t_start"], msg["t0"], msg["t1"]
        interval: float | None = msg.get("interval")
        self.latency_mode = bool(msg.get("latency"))
        self.sign = bool(msg.get("sign"))
        self.stats = stats = RunStats(t0=t0, t1=t1)

        async def mark(at: float) -> None:
            await _sleep_until(at)
            stats.cpu.append(time.process_time())

        marks = [asyncio.ensure_future(mark(t0)), asyncio.ensure_future(mark(t1))]
        live = [p for p in self.pairs if not p.dead]
        try:
            async with asyncio.timeout(t1 - time.monotonic() + NEGOTIATION_TIMEOUT + 5):
                await asyncio.gather(*(self._pair_loop(p, t_start, interval) for p in live))
                await asyncio.gather(*marks)
        except TimeoutError:
            stats.errors["run_timeout"] += 1
        for p in self.pairs:
            p.pending.clear()
        self.latency_mode = False
        cpu = stats.cpu[1] - stats.cpu[0] if len(stats.cpu) == 2 else float("nan")
        return {
            "ok_acks": stats.ok,
            "negotiations": stats.negotiations,
            "rtts": stats.rtts,
            "latencies": stats.latencies,
            "errors": dict(stats.errors),
            "cpu_s": cpu,
            "dead_pairs": sum(p.dead for p in self.pairs),
        }

    async def seat_all(self) -> dict[str, Any]:
        """Idle run: every pair creates and joins one room and stays there."""
        self.stats = stats = RunStats(t0=0.0, t1=float("inf"))
        sem = asyncio.Semaphore(OPEN_CONCURRENCY)
        started = time.monotonic()

        async def one(pair: Pair) -> None:
            async with sem:
                created = await self._step(
                    pair.a, "create", {"party": "A", "request_id": self.rid()}, None
                )
                await self._step(
                    pair.b,
                    "join",
                    {"connection_id": created["connection_id"], "request_id": self.rid()},
                    None,
                )

        try:
            async with asyncio.timeout(120):
                await asyncio.gather(*(one(p) for p in self.pairs))
        except (BenchFailure, LeanError, TimeoutError) as exc:
            stats.errors[type(exc).__name__] += 1
        return {
            "ok_acks": stats.ok,
            "errors": dict(stats.errors),
            "seconds": time.monotonic() - started,
        }


async def _sleep_until(at: float) -> None:
    delay = at - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)


def _rss() -> int:
    with open(f"/proc/{os.getpid()}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def worker_main(conn: Connection, index: int) -> None:
    """Entry point of a spawned worker process."""
    raise_nofile()
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:  # pragma: no cover
        pass
    asyncio.run(Worker(conn, index).serve())
