"""Command handlers: check, load the room, decide, seal, commit, then tell.

Every mutating command runs under the room's lock on this node, decides on
the room's state, and commits its events, seat changes and idempotency record
in one transaction. A `Conflict` (another process took the seq first) drops
the cached room and decides again on fresh state. Acks and broadcasts are
sent only after the commit returned.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Protocol

import orjson
import structlog

from . import ledger, logs, metrics, money, negotiation
from .cluster import Cluster
from .commands import READ_ONLY, SEATED, Payload, check_envelope, check_shape
from .ids import TokenMint, new_connection_id, normalise_connection_id, token_hash, token_matches
from .negotiation import Party, Refusal, RoomState
from .rooms import WATCHER, GuessLimiter, MemoryTrimmer, Registry, Session
from .signing import Signer
from .store import Commit, Conflict, IdempotencyRecord, Store, Unavailable
from .store.base import CREATE_SCOPE, join_scope, room_of_scope, seat_scope

log = structlog.get_logger("settlement")

HISTORY_PAGE = 500
MAX_ATTEMPTS = 16
ROOM_CACHE = 1_000


class Publisher(Protocol):
    async def enter(self, sid: str, room: str) -> None: ...

    async def leave(self, sid: str, room: str) -> None: ...

    async def emit(self, event: str, data: Any, *, room: str, local: bool = False) -> None: ...


@dataclass
class CachedRoom:
    state: RoomState
    events: list[dict[str, Any]]
    token_hashes: dict[str, str | None]
    receipt: dict[str, Any] | None = None
    # (scope, request_id) -> record: a retry is recognised without a store read.
    idem: dict[tuple[str, str], IdempotencyRecord] = field(default_factory=dict)


@dataclass
class PageRoom:
    state: dict[str, Any]
    events: list[dict[str, Any]]


@dataclass
class _Outcome:
    ack: dict[str, Any]
    seat: tuple[str, Party] | None = None  # seat the sender after commit
    leave: bool = False
    cached: CachedRoom | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class _RoomLock:
    """`async with`: the room's lock on this node, reference-counted so it is
    dropped only when nobody holds or awaits it (a released lock with waiters
    still serialises them). A class, not @asynccontextmanager: it runs for
    every command."""

    __slots__ = ("_locks", "_cid", "_entry")

    def __init__(self, locks: dict[str, list[Any]], cid: str) -> None:
        self._locks = locks
        self._cid = cid

    async def __aenter__(self) -> None:
        entry = self._locks.get(self._cid)
        if entry is None:
            entry = self._locks[self._cid] = [asyncio.Lock(), 0]
        entry[1] += 1
        self._entry = entry
        try:
            await entry[0].acquire()
        except BaseException:
            self._release_ref()
            raise

    async def __aexit__(self, *exc: object) -> None:
        self._entry[0].release()
        self._release_ref()

    def _release_ref(self) -> None:
        entry = self._entry
        entry[1] -= 1
        if entry[1] == 0:
            del self._locks[self._cid]


_second: tuple[int, str] = (-1, "")


def now_iso() -> str:
    """UTC ISO 8601 with milliseconds and Z (the formatted second is reused)."""
    global _second
    t = datetime.now(UTC)
    stamp = int(t.timestamp())
    if stamp != _second[0]:
        _second = (stamp, t.strftime("%Y-%m-%dT%H:%M:%S."))
    return f"{_second[1]}{t.microsecond // 1000:03d}Z"


def _short(value: Any) -> str | None:
    return None if value is None else str(value)[:64]


def ok(**fields: Any) -> dict[str, Any]:
    return {"ok": True, **fields}


def fingerprint(p: Payload) -> str:
    # Any JSON value may reach here (a mismatching retry can carry floats or huge
    # integers): the standard library's sorted, compact JSON, not RFC 8785, and
    # orjson where it writes the very same bytes (stored fingerprints stay valid).
    body = {"event": p.event, "payload": p.fields}
    if ledger.plain_json(p.fields, 2**63 - 1, bools=True):
        return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()
    text = json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


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
        cluster: Cluster | None = None,
        guesses: GuessLimiter | None = None,
    ) -> None:
        self.store = store
        self.cluster = cluster
        if cluster is not None:
            cluster.on_changed = self._remote_changed
            cluster.on_unseat = self._remote_unseat
            cluster.on_presence_lost = self._republish
            cluster.on_recovered = self.resync_local
        self.pub = publisher
        self.signer = signer
        self.mint = mint
        self.max_amount = max_amount
        self.metrics = metrics_ or metrics.Metrics()
        self.registry = Registry()
        self.guesses = guesses or GuessLimiter()
        self.trimmer = MemoryTrimmer()
        self.draining = False
        self._inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._rooms: OrderedDict[str, CachedRoom] = OrderedDict()
        self._locks: dict[str, list[Any]] = {}

    # -- rooms: cache, locks ------------------------------------------------

    def _room_lock(self, cid: str) -> _RoomLock:
        return _RoomLock(self._locks, cid)

    async def _room(self, cid: str, *, fresh: bool = False) -> tuple[CachedRoom | None, bool]:
        """The room and whether it came from the cache (possibly stale across processes)."""
        if not fresh:
            cached = self._rooms.get(cid)
            if cached is not None:
                self._rooms.move_to_end(cid)
                return cached, True
        stored = await self.store.load_room(cid)
        if stored is None:
            self._rooms.pop(cid, None)
            return None, False
        room = CachedRoom(
            negotiation.fold(stored.events),
            stored.events,
            stored.token_hashes,
            idem={(r.scope, r.request_id): r for r in stored.idempotency},
        )
        self._remember(cid, room)
        return room, False

    def _remember(self, cid: str, room: CachedRoom) -> None:
        self._rooms[cid] = room
        self._rooms.move_to_end(cid)
        self._trim()

    def _trim(self) -> None:
        """Keep every room with a socket here, plus at most ROOM_CACHE others."""
        budget = 64
        while budget and len(self._rooms) > ROOM_CACHE + self.registry.room_count():
            budget -= 1
            oldest = next(iter(self._rooms))
            if self.registry.has_sockets(oldest):
                self._rooms.move_to_end(oldest)
            else:
                del self._rooms[oldest]

    async def _online(self, cid: str) -> dict[str, bool]:
        local = self.registry.online(cid)
        if self.cluster is None:
            return local
        return await self.cluster.online(cid, local)

    async def _snapshot(
        self, room: CachedRoom, *, online: dict[str, bool] | None = None
    ) -> dict[str, Any]:
        if online is None:
            online = await self._online(room.state.connection_id)
        return room.state.snapshot(online)

    async def _state_of(self, s: Session) -> dict[str, Any] | None:
        if s.seat is None:
            return None
        try:
            room, _ = await self._room(s.seat[0])
        except Unavailable:
            return None
        return await self._snapshot(room) if room else None

    async def _refuse(self, s: Session, refusal: Refusal) -> dict[str, Any]:
        ack: dict[str, Any] = {
            "ok": False,
            "error": {"code": refusal.code, "message": refusal.message},
        }
        state = await self._state_of(s)
        if state is not None:
            ack["state"] = state
        return ack

    # -- the command pipeline ------------------------------------------------

    async def handle(self, s: Session, event: str, payload: Any) -> dict[str, Any]:
        """Answer one command with its ack; never raises."""
        started = time.perf_counter()
        seat = s.seat
        try:
            ack = await self._handle(s, event, payload)
        except Unavailable:
            ack = await self._refuse(
                s,
                Refusal(
                    "unavailable",
                    "The store could not commit this command right now. "
                    "Retry with the same request_id (a repeat is never applied twice).",
                ),
            )
        except Exception:
            log.exception("command_failed", event_name=event, sid=s.sid)
            ack = await self._refuse(
                s,
                Refusal(
                    "unavailable",
                    "The server could not complete this command; retry with the same request_id.",
                ),
            )
        return self._account(s, event, payload, ack, started, seat)

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

    async def rate_limited(self, s: Session, event: Any, payload: Any) -> dict[str, Any]:
        """The answer to a command over the socket's budget (it takes no token)."""
        started = time.perf_counter()
        ack = await self._refuse(
            s, Refusal("rate_limited", "Too many commands; slow down and try again shortly.")
        )
        return self._account(s, str(event), payload, ack, started, s.seat)

    def _account(
        self,
        s: Session,
        event: str,
        payload: Any,
        ack: dict[str, Any],
        started: float,
        seat: tuple[str, Party] | None,
    ) -> dict[str, Any]:
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

    async def _handle(self, s: Session, event: str, payload: Any) -> dict[str, Any]:
        env = check_envelope(event, payload)
        if isinstance(env, Refusal):
            return await self._refuse(s, env)
        p = env
        scope = None if p.event in READ_ONLY else self._scope(s, p)
        # A `create` on its way to a commit is not looked up first: the store's
        # unique key on its request_id finds a repeat (Conflict, then the replay),
        # which saves a database read per new connection. Refused, it is looked up.
        if scope is not None and p.request_id is not None and scope != CREATE_SCOPE:
            replay = await self._replay(s, p, scope)
            if replay is not None:
                return replay
        shape = check_shape(p)
        if shape is not None:
            return await self._refuse_unless_replay(s, p, scope, shape)
        if p.event in SEATED:
            if s.seat is None:
                return await self._refuse(
                    s, Refusal("not_seated", "Join or resume a connection first.")
                )
        elif s.seat is not None:
            return await self._refuse_unless_replay(
                s,
                p,
                scope,
                Refusal("already_seated", "This socket already holds a seat; leave it first."),
            )
        if p.event == "create":
            return await self._create(s, p)
        if p.event in ("join", "resume"):
            return await self._guarded(s, p, scope)
        if p.event == "history":
            return await self._history(s, p.fields.get("after_seq", 0))
        if p.event == "receipt":
            return await self._receipt(s)
        return await self._room_command(s, p, scope)

    async def _refuse_unless_replay(
        self, s: Session, p: Payload, scope: str | None, refusal: Refusal
    ) -> dict[str, Any]:
        """A `create` about to be refused: a repeat of one that was applied gets its ack."""
        if scope == CREATE_SCOPE and p.request_id is not None:
            replay = await self._replay(s, p, scope)
            if replay is not None:
                return replay
        return await self._refuse(s, refusal)

    async def _guarded(self, s: Session, p: Payload, scope: str | None) -> dict[str, Any]:
        """join/resume: an address that keeps naming unknown rooms or wrong tokens waits."""
        if self.guesses.exhausted(s.remote):
            return await self._refuse(
                s,
                Refusal(
                    "rate_limited",
                    "Too many unknown connection ids or wrong tokens from your address; "
                    "wait a little and check the id.",
                ),
            )
        if p.event == "resume":
            ack = await self._resume(s, p.fields["connection_id"], p.fields["token"])
        else:
            ack = await self._room_command(s, p, scope)
        if not ack["ok"] and ack["error"]["code"] in ("not_found", "bad_token"):
            self.guesses.charge(s.remote)
        return ack

    def _scope(self, s: Session, p: Payload) -> str | None:
        if p.event == "create":
            return CREATE_SCOPE
        if p.event == "join":
            cid = normalise_connection_id(p.fields.get("connection_id"))
            return join_scope(cid) if cid else None
        seat = s.seat or (s.last_seat if p.event == "leave" else None)
        return seat_scope(*seat) if seat else None

    async def _replay(self, s: Session, p: Payload, scope: str) -> dict[str, Any] | None:
        assert p.request_id is not None
        rec = await self._lookup(scope, p.request_id)
        if rec is None:
            return None
        if rec.fingerprint != fingerprint(p):
            return await self._refuse(
                s,
                Refusal(
                    "idempotency_mismatch",
                    "This request_id was already used for a different command or payload.",
                ),
            )
        ack: dict[str, Any] = orjson.loads(rec.ack)
        if rec.token_nonce is not None:
            token = self.mint.from_nonce(rec.token_nonce)
            ack["token"] = token
            if s.seat is None:
                await self._reseat(s, ack["connection_id"], ack["party"], token)
        return ack

    async def _lookup(self, scope: str, request_id: str) -> IdempotencyRecord | None:
        """A stored ack: from the room's cached records, or (for `create`) the store.

        A cached room may trail another process; a miss there is caught when
        the commit conflicts (or a refusal is re-checked) and the room reloads.
        """
        if scope == CREATE_SCOPE:
            return await self.store.idempotency(scope, request_id)
        cid = room_of_scope(scope)
        room, _ = await self._room(cid)
        return room.idem.get((scope, request_id)) if room is not None else None

    async def _reseat(self, s: Session, cid: str, party: Party, token: str) -> None:
        """A replayed create/join seats the socket again, unless the token was revoked."""
        async with self._room_lock(cid):
            room, _ = await self._room(cid, fresh=True)
            if room is None or not token_matches(token, room.token_hashes.get(party)):
                return
            await self._seat(s, room, party)

    # -- create / join / propose / respond / leave ----------------------------

    async def _create(self, s: Session, p: Payload) -> dict[str, Any]:
        currency = p.fields.get("currency", money.DEFAULT_CURRENCY)
        try:
            money.currency_exponent(currency)
        except money.MoneyError as err:
            return await self._refuse_unless_replay(
                s, p, CREATE_SCOPE, Refusal(err.code, err.message)
            )
        party: Party = p.fields["party"]
        for _ in range(MAX_ATTEMPTS):
            cid = new_connection_id()
            create = negotiation.Create(party, currency, p.fields.get("public_key"))
            body = negotiation.decide_create(cid, create, now_iso())
            events = self._seal(ledger.GENESIS_HASH, body)
            room = CachedRoom(negotiation.fold(events), events, {"A": None, "B": None})
            token, nonce = self.mint.new()
            room.token_hashes[party] = token_hash(token)
            online = {"A": party == "A", "B": party == "B"}
            ack = ok(
                connection_id=cid,
                party=party,
                token="",
                state=await self._snapshot(room, online=online),
            )
            try:
                await self.store.commit(
                    Commit(
                        connection_id=cid,
                        base_seq=0,
                        events=events,
                        status=room.state.status,
                        currency=currency,
                        seats={"A": room.token_hashes["A"], "B": room.token_hashes["B"]},
                        idempotency=self._record(CREATE_SCOPE, p, cid, ack, nonce),
                    )
                )
            except Conflict:
                if p.request_id is not None:
                    replay = await self._replay(s, p, CREATE_SCOPE)
                    if replay is not None:
                        return replay
                continue  # an id collision: draw another
            ack["token"] = token
            self.metrics.rooms_created.inc()
            async with self._room_lock(cid):
                self._remember(cid, room)
                await self._seat(s, room, party, publish=False)
                await self._publish(room)
            return ack
        raise Unavailable("could not allocate a connection id")

    def _seal(self, prev_hash: str, bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
        sealed = []
        for body in bodies:
            event = ledger.seal(body, prev_hash)
            prev_hash = event["hash"]
            sealed.append(event)
        return sealed

    def _record(
        self, scope: str | None, p: Payload, cid: str, ack: dict[str, Any], nonce: str | None = None
    ) -> IdempotencyRecord | None:
        if scope is None or p.request_id is None:
            return None
        return IdempotencyRecord(
            scope, p.request_id, cid, fingerprint(p), orjson.dumps(ack).decode(), nonce
        )

    def _command(self, p: Payload) -> negotiation.Command:
        f = p.fields
        if p.event == "join":
            return negotiation.Join(f.get("party"), f.get("public_key"))
        if p.event == "propose":
            return negotiation.Propose(f["amount"], f.get("version"), f.get("signature"))
        if p.event == "respond":
            return negotiation.Respond(
                f["decision"], f["version"], f.get("reason"), f.get("signature")
            )
        return negotiation.Leave()

    async def _room_command(self, s: Session, p: Payload, scope: str | None) -> dict[str, Any]:
        if p.event == "join":
            cid = normalise_connection_id(p.fields["connection_id"])
            actor: Party | None = None
            if cid is None:
                return await self._refuse(s, Refusal("not_found", "No connection has that id."))
        else:
            assert s.seat is not None
            cid, actor = s.seat
        command = self._command(p)
        replay_now = False
        for attempt in range(MAX_ATTEMPTS):
            if attempt and scope is not None and p.request_id is not None:
                # Lost a race: perhaps to the same request_id (outside the lock: a
                # replayed join re-seats under it).
                replay = await self._replay(s, p, scope)
                if replay is not None:
                    return replay
            async with self._room_lock(cid):
                room, from_cache = await self._room(cid, fresh=attempt > 0)
                if room is None:
                    return await self._refuse(s, Refusal("not_found", "No connection has that id."))
                if actor is not None and room.token_hashes.get(actor) != s.token_hash:
                    if from_cache:
                        room, from_cache = await self._room(cid, fresh=True)
                    if room is None or room.token_hashes.get(actor) != s.token_hash:
                        # The seat was left (on another node): this socket no longer holds it.
                        await self._unseat(s)
                        return await self._refuse(
                            s, Refusal("not_seated", "This seat was left; join again.")
                        )
                decision = negotiation.decide(
                    room.state, actor, command, now_iso(), self.max_amount
                )
                if isinstance(decision, Refusal) and from_cache:
                    # The cache may trail another process: refuse only on fresh state
                    # (where this very request may turn out to be committed already).
                    room, _ = await self._room(cid, fresh=True)
                    if room is None:
                        return await self._refuse(
                            s, Refusal("not_found", "No connection has that id.")
                        )
                    if p.request_id is not None and (scope, p.request_id) in room.idem:
                        replay_now = True
                        break
                    decision = negotiation.decide(
                        room.state, actor, command, now_iso(), self.max_amount
                    )
                if isinstance(decision, Refusal):
                    return await self._refuse(s, decision)
                try:
                    return await self._commit(s, p, scope, room, decision)
                except Conflict as exc:
                    log.info("conflict_retry", connection_id=cid, attempt=attempt, detail=str(exc))
                    self._rooms.pop(cid, None)
            # Another process keeps winning: back off a little, with jitter.
            await asyncio.sleep(random.uniform(0, 0.002 * attempt))
        if replay_now and scope is not None:
            replay = await self._replay(s, p, scope)  # outside the lock: a join re-seats
            if replay is not None:
                return replay
        raise Unavailable("the room kept changing; retry")

    async def _commit(
        self,
        s: Session,
        p: Payload,
        scope: str | None,
        room: CachedRoom,
        bodies: list[dict[str, Any]],
    ) -> dict[str, Any]:
        state = room.state
        cid = state.connection_id
        events = self._seal(state.last_hash, bodies)
        new_state = state
        for event in events:
            new_state = negotiation.apply(new_state, event)
        hashes = dict(room.token_hashes)
        seats: dict[str, str | None] = {}
        nonce: str | None = None
        token = ""
        last = events[-1]
        online = await self._online(cid)
        if last["type"] == "joined":
            token, nonce = self.mint.new()
            seats[last["party"]] = hashes[last["party"]] = token_hash(token)
            online[last["party"]] = True
        elif last["type"] == "left":
            seats[last["party"]] = hashes[last["party"]] = None
            online[last["party"]] = False
        new_room = CachedRoom(new_state, room.events + events, hashes, idem=room.idem)
        snapshot = new_state.snapshot(online)
        if p.event == "join":
            ack = ok(connection_id=cid, party=last["party"], token="", state=snapshot)
        elif p.event == "leave":
            ack = ok()
        elif p.event == "propose":
            ack = ok(version=last["version"], state=snapshot)
        else:
            ack = ok(state=snapshot)
        record = self._record(scope, p, cid, ack, nonce)
        await self.store.commit(
            Commit(
                connection_id=cid,
                base_seq=state.seq,
                events=events,
                status=new_state.status,
                currency=new_state.currency,
                seats=seats,
                idempotency=record,
            )
        )
        # Durable from here on: update what this node knows, then tell everyone.
        if record is not None:
            new_room.idem[(record.scope, record.request_id)] = record
        self._remember(cid, new_room)
        if self.cluster is not None:
            await self.cluster.publish({"t": "changed", "cid": cid, "seq": new_state.seq})
        if last["type"] == "accepted":
            self.metrics.settlements.inc()
        if last["type"] == "joined":
            ack["token"] = token
            await self._seat(s, new_room, last["party"], publish=False)
            await self._publish(new_room)
        elif last["type"] == "left":
            await self._unseat_all(new_room, last["party"])
        else:
            await self._publish(new_room, snapshot=snapshot)  # the ack's snapshot: built once
        return ack

    # -- seats, presence, fan-out --------------------------------------------

    async def _seat(
        self, s: Session, room: CachedRoom, party: Party, *, publish: bool = True
    ) -> None:
        cid = room.state.connection_id
        await self._unwatch(s)
        was_online = (await self._online(cid))[party]
        s.token_hash = room.token_hashes.get(party)
        for name in self.registry.seat(s, cid, party):
            await self.pub.enter(s.sid, name)
        self.metrics.seated.inc()
        if self.cluster is not None:
            await self.cluster.seated(cid, party, +1)
            if s.view == "html":
                await self.cluster.add_audience(cid, party, s.locale)
        if publish and not was_online:
            await self._publish(room)  # presence changed: same seq, new `online`

    async def _watch(self, s: Session, cid: str) -> None:
        """An html page without a seat (the invite link) follows the room live."""
        await self.pub.enter(s.sid, self.registry.watch(s, cid))
        if self.cluster is not None:
            await self.cluster.add_audience(cid, WATCHER, s.locale)

    async def _unwatch(self, s: Session) -> None:
        name = self.registry.unwatch(s)
        if name is not None:
            await self.pub.leave(s.sid, name)

    async def _unseat(self, s: Session) -> None:
        seat = s.seat
        for name in self.registry.unseat(s):
            await self.pub.leave(s.sid, name)
        self.metrics.seated.dec()
        if seat is not None and not self.registry.has_sockets(seat[0]) and seat[0] in self._rooms:
            self._rooms.move_to_end(seat[0], last=False)  # first to go when the cache is full
            self._trim()
        if self.cluster is not None and seat is not None:
            await self.cluster.seated(seat[0], seat[1], -1)

    async def _unseat_all(self, room: CachedRoom, party: Party) -> None:
        """After `leave`: every socket of that seat is unseated and told once more."""
        cid = room.state.connection_id
        leavers = self.registry.holders(cid, party)
        for leaver in leavers:
            await self._unseat(leaver)
        if self.cluster is None:
            await self._publish(room)
        else:
            # Other nodes unseat their sockets of this seat *before* telling their
            # sockets (so none of them acts on the seat after seeing it free).
            await self.cluster.publish({"t": "unseat", "cid": cid, "party": party})
            await self._publish(room, local=True)
        snapshot = await self._snapshot(room)
        for leaver in leavers:
            await self._send_one(leaver, room, snapshot, party=None)
            if leaver.view == "html":
                await self._watch(leaver, cid)  # its page goes on following the room

    # -- other nodes ----------------------------------------------------------

    async def _remote_changed(self, cid: str, seq: int) -> None:
        """Another node committed to this room: a cached copy behind it is stale."""
        cached = self._rooms.get(cid)
        if cached is not None and cached.state.seq < seq:
            self._rooms.pop(cid, None)

    async def _remote_unseat(self, cid: str, party: str) -> None:
        """A seat was left on another node: unseat this node's sockets of it, then tell."""
        async with self._room_lock(cid):
            room, _ = await self._room(cid, fresh=True)
            if room is not None:
                await self._reconcile(room, local_publish=True)

    async def _reconcile(self, room: CachedRoom, *, local_publish: bool) -> None:
        """Unseat local sockets whose seat was left since; re-send the snapshot locally."""
        cid = room.state.connection_id
        leavers = [
            s
            for p in negotiation.PARTIES
            for s in self.registry.holders(cid, p)
            if room.token_hashes.get(p) != s.token_hash
        ]
        for leaver in leavers:
            await self._unseat(leaver)
        if local_publish:
            await self._publish(room, local=True)
        if leavers:
            snapshot = await self._snapshot(room)
            for leaver in leavers:
                await self._send_one(leaver, room, snapshot, party=None)
                if leaver.view == "html":
                    await self._watch(leaver, cid)

    async def _republish(self, cid: str) -> None:
        room, _ = await self._room(cid, fresh=True)
        if room is not None:
            await self._publish(room)

    async def resync_local(self) -> None:
        """Re-send current snapshots to this node's sockets (after a message-queue outage)."""
        for cid in self.registry.rooms():
            try:
                room, _ = await self._room(cid, fresh=True)
            except Unavailable:
                continue
            if room is not None:
                async with self._room_lock(cid):
                    await self._reconcile(room, local_publish=True)

    async def _publish(
        self, room: CachedRoom, *, local: bool = False, snapshot: dict[str, Any] | None = None
    ) -> None:
        """One snapshot per change to every socket of the room, rendered once per audience."""
        cid = room.state.connection_id
        if snapshot is None:
            snapshot = await self._snapshot(room)
        try:
            await self.pub.emit("state", snapshot, room=f"{cid}:json", local=local)
            audiences = set(self.registry.audiences(cid))
            if self.cluster is not None and not local:
                audiences |= await self.cluster.audiences(cid)
            for party, locale in sorted(audiences):
                reader = None if party == WATCHER else party
                html = self._render(snapshot, room.events, reader, locale)
                await self.pub.emit(
                    "html",
                    {"seq": snapshot["seq"], "html": html},
                    room=f"{cid}:html:{party}:{locale}",
                    local=local,
                )
        except Exception:  # the commit stands; clients re-sync by seq on reconnect
            log.exception("publish_failed", connection_id=cid)

    async def _send_one(
        self,
        s: Session,
        room: CachedRoom,
        snapshot: dict[str, Any],
        *,
        party: str | None,
        local: bool = True,
    ) -> None:
        if s.view == "html":
            html = self._render(snapshot, room.events, party, s.locale)
            data: Any = {"seq": snapshot["seq"], "html": html}
            await self.pub.emit("html", data, room=s.sid, local=local)
        else:
            await self.pub.emit("state", snapshot, room=s.sid, local=local)

    @staticmethod
    def _render(
        snapshot: dict[str, Any], events: list[dict[str, Any]], party: str | None, locale: str
    ) -> str:
        from . import views

        return views.render_fragments(snapshot, events, party, locale)

    # -- resume, presence at connect and disconnect ---------------------------

    async def _resume(
        self, s: Session, raw_cid: Any, token: str, *, at_connect: bool = False
    ) -> dict[str, Any]:
        cid = normalise_connection_id(raw_cid)
        room = None
        if cid is not None:
            room, _ = await self._room(cid, fresh=True)
        if room is None or cid is None:
            return await self._refuse(s, Refusal("not_found", "No connection has that id."))
        party = next(
            (p for p in negotiation.PARTIES if token_matches(token, room.token_hashes.get(p))),
            None,
        )
        if party is None:
            return await self._refuse(
                s,
                Refusal(
                    "bad_token",
                    "That seat token is not valid for this connection (left or revoked?).",
                ),
            )
        async with self._room_lock(cid):
            room, _ = await self._room(cid)
            assert room is not None
            was_online = (await self._online(cid))[party]
            await self._seat(s, room, party, publish=False)
            if not was_online:
                await self._publish(room)
            elif at_connect or s.view == "html":
                await self._send_one(s, room, await self._snapshot(room), party=party)
        return ok(connection_id=cid, party=party, state=await self._snapshot(room))

    async def connect(self, s: Session, auth: Any) -> None:
        """Connect-time `auth`: resume the seat it names, or say why not with an `error` event."""
        self.registry.sessions[s.sid] = s
        self.metrics.sockets.inc()
        if not isinstance(auth, dict):
            return
        cid, token = auth.get("connection_id"), auth.get("token")
        if cid is None and token is None:
            return
        if token is None and isinstance(cid, str) and s.view == "html":
            # The invite page of someone without a seat: follow the room, no error.
            known = normalise_connection_id(cid)
            room = (await self._room(known))[0] if known else None
            if room is None:
                await self._error(s, "not_found", "No connection has that id.")
            else:
                await self._watch(s, room.state.connection_id)
            return
        if cid is None:
            await self._error(s, "not_found", "A token needs the connection_id it belongs to.")
            return
        if not isinstance(token, str) or not isinstance(cid, str):
            await self._error(s, "bad_token", "That seat token is not valid for this connection.")
            return
        if self.guesses.exhausted(s.remote):
            await self._error(s, "rate_limited", "Too many failed resumes from your address.")
            return
        try:
            ack = await self._resume(s, cid, token, at_connect=True)
        except Unavailable:
            await self._error(s, "unavailable", "The store is not answering; reconnect shortly.")
            return
        if not ack["ok"]:
            if ack["error"]["code"] in ("not_found", "bad_token"):
                self.guesses.charge(s.remote)
            await self._error(s, ack["error"]["code"], ack["error"]["message"])

    async def _error(self, s: Session, code: str, message: str) -> None:
        await self.pub.emit("error", {"code": code, "message": message}, room=s.sid, local=True)

    async def disconnect(self, s: Session) -> None:
        self.registry.sessions.pop(s.sid, None)
        self.metrics.sockets.dec()
        self.trimmer.disconnected()
        self.registry.unwatch(s)
        if s.seat is None:
            return
        cid, party = s.seat
        async with self._room_lock(cid):
            await self._unseat(s)
            if not (await self._online(cid))[party]:
                room, _ = await self._room(cid)
                if room is not None:
                    await self._publish(room)

    # -- reads ---------------------------------------------------------------

    async def _history(self, s: Session, after_seq: int) -> dict[str, Any]:
        assert s.seat is not None
        after_seq = min(after_seq, 2**62)  # a JSON integer may exceed what the store holds
        events = await self.store.events(s.seat[0], after_seq, HISTORY_PAGE + 1)
        return ok(events=events[:HISTORY_PAGE], more=len(events) > HISTORY_PAGE)

    async def _receipt(self, s: Session) -> dict[str, Any]:
        assert s.seat is not None
        room, _ = await self._room(s.seat[0])
        if room is None:
            return await self._refuse(s, Refusal("not_found", "No connection has that id."))
        receipt = self.receipt_of(room)
        if receipt is None:
            return await self._refuse(
                s, Refusal("not_settled", "There is no receipt until B accepts.")
            )
        return ok(receipt=receipt)

    def receipt_of(self, room: CachedRoom) -> dict[str, Any] | None:
        if room.state.status != "settled":
            return None
        if room.receipt is None:
            room.receipt = self.signer.sign_receipt(ledger.build_receipt(room.events))
        return room.receipt

    async def page_room(self, raw_cid: str) -> PageRoom | None:
        cid = normalise_connection_id(raw_cid)
        if cid is None:
            return None
        room, _ = await self._room(cid)
        if room is None:
            return None
        return PageRoom(await self._snapshot(room), list(room.events))

    async def http_receipt(self, raw_cid: str, token: str | None) -> tuple[int, dict[str, Any]]:
        cid = normalise_connection_id(raw_cid)
        room = None
        if cid is not None:
            room, _ = await self._room(cid, fresh=True)
        if room is None:
            return 404, {"error": {"code": "not_found", "message": "No connection has that id."}}
        if not token or not any(
            token_matches(token, room.token_hashes.get(p)) for p in negotiation.PARTIES
        ):
            return 401, {
                "error": {
                    "code": "bad_token",
                    "message": "A current seat token of this connection is required.",
                }
            }
        receipt = self.receipt_of(room)
        if receipt is None:
            return 409, {
                "error": {"code": "not_settled", "message": "This connection is not settled yet."}
            }
        return 200, receipt
