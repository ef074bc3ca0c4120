"""One command, top to bottom: the protocol's order of checks, then the commit.

    envelope -> idempotency -> shape -> seat -> decide (pure) -> seal
             -> commit -> remember -> publish -> ack

`run` reads in that order. A mutating command decides under its room's lock
on the room's state; its events, seat changes and idempotency record commit
in one transaction. A `Conflict` (another process took the seq first) drops
the cached room and the loop decides again on fresh state; a refusal made on
a cached room is re-checked on fresh state, where the very same request may
turn out to be committed already (then it is replayed). Nothing is acked or
broadcast before the commit returned.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from enum import Enum
from typing import Any

import structlog

from . import ledger, money, negotiation, webhooks
from .commands import READ_ONLY, SEATED, Payload, check_envelope, check_shape
from .fanout import Fanout
from .idempotency import Replays, record, scope_of
from .ids import TokenMint, new_connection_id, normalise_connection_id, token_hash
from .metrics import Metrics
from .negotiation import Party, Refusal
from .nodes import Nodes
from .presence import Presence
from .reads import Reads
from .roomcache import CachedRoom, RoomCache
from .rooms import GuessLimiter, Session
from .seating import Seating
from .shapes import Ack, Event, ok, refusal
from .store import Commit, Conflict, Store, Unavailable
from .store.base import CREATE_SCOPE

log = structlog.get_logger("settlement")

MAX_ATTEMPTS = 16

_second: tuple[int, str] = (-1, "")


def now_iso() -> str:
    """UTC ISO 8601 with milliseconds and Z (the formatted second is reused)."""
    global _second
    t = datetime.now(UTC)
    stamp = int(t.timestamp())
    if stamp != _second[0]:
        _second = (stamp, t.strftime("%Y-%m-%dT%H:%M:%S."))
    return f"{_second[1]}{t.microsecond // 1000:03d}Z"


def to_command(p: Payload) -> negotiation.Command:
    f = p.fields
    if p.event == "join":
        return negotiation.Join(f.get("party"), f.get("public_key"))
    if p.event == "propose":
        return negotiation.Propose(f["amount"], f.get("version"), f.get("signature"))
    if p.event == "respond":
        return negotiation.Respond(f["decision"], f["version"], f.get("reason"), f.get("signature"))
    return negotiation.Leave()


def seal(prev_hash: str, bodies: list[Event]) -> list[Event]:
    """Chain the decided event bodies onto the room's last hash."""
    sealed = []
    for body in bodies:
        event = ledger.seal(body, prev_hash)
        prev_hash = event["hash"]
        sealed.append(event)
    return sealed


class Again(Enum):
    """Why one attempt at a room command did not answer."""

    CONFLICT = "another process committed first: decide again on fresh state"
    DONE = "this very request was committed already: replay it"


@dataclass(eq=False)
class Pipeline:
    store: Store
    cache: RoomCache
    fanout: Fanout
    seating: Seating
    replays: Replays
    presence: Presence
    reads: Reads
    nodes: Nodes
    mint: TokenMint
    guesses: GuessLimiter
    metrics: Metrics
    max_amount: Decimal = money.DEFAULT_MAXIMUM
    webhook_urls: tuple[str, ...] = ()  # every event's message goes to each (webhooks.py)

    # -- the order of checks ---------------------------------------------------

    async def run(self, s: Session, event: str, payload: Any) -> Ack:
        """The ack of one command (store failures raise `Unavailable`)."""
        p = check_envelope(event, payload)
        if isinstance(p, Refusal):
            return await self.fanout.refuse(s, p)
        scope = None if p.event in READ_ONLY else scope_of(s, p)
        # A `create` on its way to a commit is not looked up first: the store's
        # unique key on its request_id finds a repeat (Conflict, then the replay),
        # which saves a database read per new connection. Refused, it is looked up.
        if scope is not None and p.request_id is not None and scope != CREATE_SCOPE:
            replay = await self.replays.replay(s, p, scope)
            if replay is not None:
                return replay
        refused = check_shape(p) or self._seat_check(s, p)
        if refused is not None:
            return await self._refuse_unless_replay(s, p, scope, refused)
        if p.event == "create":
            return await self._create(s, p)
        if p.event in ("join", "resume"):
            return await self._guarded(s, p, scope)
        if p.event == "history":
            return await self.reads.history(s, p.fields.get("after_seq", 0))
        if p.event == "receipt":
            return await self.reads.receipt(s)
        return await self._room_command(s, p, scope)

    @staticmethod
    def _seat_check(s: Session, p: Payload) -> Refusal | None:
        if p.event in SEATED:
            return refusal("not_seated") if s.seat is None else None
        return refusal("already_seated") if s.seat is not None else None

    async def _refuse_unless_replay(
        self, s: Session, p: Payload, scope: str | None, refused: Refusal
    ) -> Ack:
        """A `create` about to be refused: a repeat of one that was applied gets its ack."""
        if scope == CREATE_SCOPE and p.request_id is not None:
            replay = await self.replays.replay(s, p, scope)
            if replay is not None:
                return replay
        return await self.fanout.refuse(s, refused)

    async def _guarded(self, s: Session, p: Payload, scope: str | None) -> Ack:
        """join/resume: an address that keeps naming unknown rooms or wrong tokens waits."""
        if self.guesses.exhausted(s.remote):
            return await self.fanout.refuse(s, refusal("guesses"))
        if p.event == "resume":
            ack = await self.presence.resume(s, p.fields["connection_id"], p.fields["token"])
        else:
            ack = await self._room_command(s, p, scope)
        if not ack["ok"] and ack["error"]["code"] in ("not_found", "bad_token"):
            self.guesses.charge(s.remote)
        return ack

    # -- create ----------------------------------------------------------------

    async def _create(self, s: Session, p: Payload) -> Ack:
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
            events = seal(ledger.GENESIS_HASH, body)
            room = CachedRoom(negotiation.fold(events), events, {"A": None, "B": None})
            token, nonce = self.mint.new()
            room.token_hashes[party] = token_hash(token)
            online = {"A": party == "A", "B": party == "B"}
            snapshot = await self.fanout.snapshot(room, online=online)
            ack = ok(connection_id=cid, party=party, token="", state=snapshot)
            change = Commit(
                connection_id=cid,
                base_seq=0,
                events=events,
                status=room.state.status,
                currency=currency,
                seats={"A": room.token_hashes["A"], "B": room.token_hashes["B"]},
                idempotency=record(CREATE_SCOPE, p, cid, ack, nonce),
                outbox=webhooks.outbox_rows(events, lambda: None, self.webhook_urls),
            )
            try:
                await self.store.commit(change)
            except Conflict:
                if p.request_id is not None:
                    replay = await self.replays.replay(s, p, CREATE_SCOPE)
                    if replay is not None:
                        return replay
                continue  # an id collision: draw another
            ack["token"] = token
            self.metrics.rooms_created.inc()
            async with self.cache.lock(cid):
                self.cache.remember(cid, room)
                await self.seating.seat(s, room, party, publish=False)
                await self.fanout.publish(room)
            return ack
        raise Unavailable("could not allocate a connection id")

    # -- join / propose / respond / leave: retry on conflict -------------------

    async def _room_command(self, s: Session, p: Payload, scope: str | None) -> Ack:
        if p.event == "join":
            cid = normalise_connection_id(p.fields["connection_id"])
            actor: Party | None = None
            if cid is None:
                return await self.fanout.refuse(s, refusal("not_found"))
        else:
            assert s.seat is not None
            cid, actor = s.seat
        command = to_command(p)
        for attempt in range(MAX_ATTEMPTS):
            if attempt and scope is not None and p.request_id is not None:
                # Lost a race: perhaps to the same request_id (outside the lock: a
                # replayed join re-seats under it).
                replay = await self.replays.replay(s, p, scope)
                if replay is not None:
                    return replay
            async with self.cache.lock(cid):
                answer = await self._attempt(s, p, scope, cid, actor, command, attempt)
            if answer is Again.DONE:
                break
            if answer is not Again.CONFLICT:
                return answer
            # Another process keeps winning: back off a little, with jitter.
            await asyncio.sleep(random.uniform(0, 0.002 * attempt))
        if answer is Again.DONE and scope is not None:
            replay = await self.replays.replay(s, p, scope)  # outside the lock: a join re-seats
            if replay is not None:
                return replay
        raise Unavailable("the room kept changing; retry")

    async def _attempt(
        self,
        s: Session,
        p: Payload,
        scope: str | None,
        cid: str,
        actor: Party | None,
        command: negotiation.Command,
        attempt: int,
    ) -> Ack | Again:
        """Decide on the room and commit, under the room's lock (fresh after a conflict)."""
        room, from_cache = await self.cache.get(cid, fresh=attempt > 0)
        if room is None:
            return await self.fanout.refuse(s, refusal("not_found"))
        if actor is not None and room.token_hashes.get(actor) != s.token_hash:
            if from_cache:
                room, from_cache = await self.cache.get(cid, fresh=True)
            if room is None or room.token_hashes.get(actor) != s.token_hash:
                # The seat was left (on another node): this socket no longer holds it.
                await self.seating.unseat(s)
                return await self.fanout.refuse(s, refusal("seat_left"))
        decision = negotiation.decide(room.state, actor, command, now_iso(), self.max_amount)
        if isinstance(decision, Refusal) and from_cache:
            # The cache may trail another process: refuse only on fresh state
            # (where this very request may turn out to be committed already).
            room, _ = await self.cache.get(cid, fresh=True)
            if room is None:
                return await self.fanout.refuse(s, refusal("not_found"))
            if p.request_id is not None and (scope, p.request_id) in room.idem:
                return Again.DONE
            decision = negotiation.decide(room.state, actor, command, now_iso(), self.max_amount)
        if isinstance(decision, Refusal):
            return await self.fanout.refuse(s, decision)
        try:
            return await self._commit(s, p, scope, room, decision)
        except Conflict as exc:
            log.info("conflict_retry", connection_id=cid, attempt=attempt, detail=str(exc))
            self.cache.drop(cid)
            return Again.CONFLICT

    async def _commit(
        self, s: Session, p: Payload, scope: str | None, room: CachedRoom, bodies: list[Event]
    ) -> Ack:
        """Seal, commit, remember, then tell: the ack is built before, sent after."""
        state = room.state
        cid = state.connection_id
        events = seal(state.last_hash, bodies)
        new_state = state
        for event in events:
            new_state = negotiation.apply(new_state, event)
        hashes = dict(room.token_hashes)
        seats: dict[str, str | None] = {}
        nonce: str | None = None
        token = ""
        last = events[-1]
        online = await self.fanout.online(cid)
        if last["type"] == "joined":
            token, nonce = self.mint.new()
            seats[last["party"]] = hashes[last["party"]] = token_hash(token)
            online[last["party"]] = True
        elif last["type"] == "left":
            seats[last["party"]] = hashes[last["party"]] = None
            online[last["party"]] = False
        new_room = CachedRoom(new_state, room.events + events, hashes, idem=room.idem)
        snapshot = await self.fanout.snapshot(new_room, online=online)
        ack = self._ack(p.event, cid, last, snapshot)
        kept = record(scope, p, cid, ack, nonce)
        await self.store.commit(
            Commit(
                connection_id=cid,
                base_seq=state.seq,
                events=events,
                status=new_state.status,
                currency=new_state.currency,
                seats=seats,
                idempotency=kept,
                outbox=webhooks.outbox_rows(
                    events, lambda: self.reads.receipt_of(new_room), self.webhook_urls
                ),
            )
        )
        # Durable from here on: update what this node knows, then tell everyone.
        if kept is not None:
            new_room.idem[(kept.scope, kept.request_id)] = kept
        self.cache.remember(cid, new_room)
        await self.nodes.publish({"t": "changed", "cid": cid, "seq": new_state.seq})
        if last["type"] == "accepted":
            self.metrics.settlements.inc()
        if last["type"] == "joined":
            ack["token"] = token
            await self.seating.seat(s, new_room, last["party"], publish=False)
            await self.fanout.publish(new_room)
        elif last["type"] == "left":
            await self.seating.unseat_all(new_room, last["party"])
        else:
            await self.fanout.publish(new_room, snapshot=snapshot)  # the ack's: built once
        return ack

    @staticmethod
    def _ack(event: str, cid: str, last: Event, snapshot: Any) -> Ack:
        if event == "join":
            return ok(connection_id=cid, party=last["party"], token="", state=snapshot)
        if event == "leave":
            return ok()
        if event == "propose":
            return ok(version=last["version"], state=snapshot)
        return ok(state=snapshot)
