"""Idempotency keys: a command repeated with its `request_id` gets the original ack.

The key's scope is the seat for seated commands, the connection for `join`
and the whole server for `create` (`store.base` names them). A record is
written in the transaction of the events it caused; acks carrying a seat
token are kept without it and the token is derived again on replay.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import orjson

from . import ledger
from .commands import Payload
from .fanout import Fanout
from .ids import TokenMint, normalise_connection_id, token_matches
from .negotiation import Party
from .roomcache import RoomCache
from .rooms import Session
from .seating import Seating
from .shapes import Ack, refusal
from .store import IdempotencyRecord, Store
from .store.base import CREATE_SCOPE, join_scope, room_of_scope, seat_scope


def fingerprint(p: Payload) -> str:
    # Any JSON value may reach here (a mismatching retry can carry floats or huge
    # integers): the standard library's sorted, compact JSON, not RFC 8785, and
    # orjson where it writes the very same bytes (stored fingerprints stay valid).
    body = {"event": p.event, "payload": p.fields}
    if ledger.plain_json(p.fields, 2**63 - 1, bools=True):
        return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()
    text = json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def scope_of(s: Session, p: Payload) -> str | None:
    """The key's scope for this socket's command (None: nothing to key it by)."""
    if p.event == "create":
        return CREATE_SCOPE
    if p.event == "join":
        cid = normalise_connection_id(p.fields.get("connection_id"))
        return join_scope(cid) if cid else None
    seat = s.seat or (s.last_seat if p.event == "leave" else None)
    return seat_scope(*seat) if seat else None


def record(
    scope: str | None, p: Payload, cid: str, ack: Ack, nonce: str | None = None
) -> IdempotencyRecord | None:
    """The record to commit with the command's events (None: no key to keep)."""
    if scope is None or p.request_id is None:
        return None
    return IdempotencyRecord(
        scope, p.request_id, cid, fingerprint(p), orjson.dumps(ack).decode(), nonce
    )


@dataclass(eq=False)
class Replays:
    """Find a command's stored ack and hand it back, re-seating a replayed create/join."""

    store: Store
    cache: RoomCache
    mint: TokenMint
    fanout: Fanout
    seating: Seating

    async def replay(self, s: Session, p: Payload, scope: str) -> Ack | None:
        """The original ack (or `idempotency_mismatch`), or None for a new key."""
        assert p.request_id is not None
        rec = await self.lookup(scope, p.request_id)
        if rec is None:
            return None
        if rec.fingerprint != fingerprint(p):
            return await self.fanout.refuse(s, refusal("idempotency_mismatch"))
        ack: Ack = orjson.loads(rec.ack)
        if rec.token_nonce is not None:
            token = self.mint.from_nonce(rec.token_nonce)
            ack["token"] = token
            if s.seat is None:
                await self._reseat(s, ack["connection_id"], ack["party"], token)  # type: ignore[arg-type]
        return ack

    async def lookup(self, scope: str, request_id: str) -> IdempotencyRecord | None:
        """A stored ack: from the room's cached records, or (for `create`) the store.

        A cached room may trail another process; a miss there is caught when
        the commit conflicts (or a refusal is re-checked) and the room reloads.
        """
        if scope == CREATE_SCOPE:
            return await self.store.idempotency(scope, request_id)
        room, _ = await self.cache.get(room_of_scope(scope))
        return room.idem.get((scope, request_id)) if room is not None else None

    async def _reseat(self, s: Session, cid: str, party: Party, token: str) -> None:
        """A replayed create/join seats the socket again, unless the token was revoked."""
        async with self.cache.lock(cid):
            room, _ = await self.cache.get(cid, fresh=True)
            if room is None or not token_matches(token, room.token_hashes.get(party)):
                return
            await self.seating.seat(s, room, party)
