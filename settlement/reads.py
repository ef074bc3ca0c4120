"""Reads that change nothing: history pages, receipts (socket and HTTP), page data."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import ledger, negotiation
from .fanout import Fanout
from .ids import normalise_connection_id, token_matches
from .roomcache import CachedRoom, RoomCache
from .rooms import Session
from .shapes import HTTP_ERRORS, Ack, Event, Snapshot, ok, refusal
from .signing import Signer
from .store import Store

HISTORY_PAGE = 500


@dataclass
class PageRoom:
    state: Snapshot
    events: list[Event]


@dataclass(eq=False)
class Reads:
    store: Store
    cache: RoomCache
    fanout: Fanout
    signer: Signer

    async def history(self, s: Session, after_seq: int) -> Ack:
        assert s.seat is not None
        after_seq = min(after_seq, 2**62)  # a JSON integer may exceed what the store holds
        events = await self.store.events(s.seat[0], after_seq, HISTORY_PAGE + 1)
        return ok(events=events[:HISTORY_PAGE], more=len(events) > HISTORY_PAGE)

    async def receipt(self, s: Session) -> Ack:
        assert s.seat is not None
        room, _ = await self.cache.get(s.seat[0])
        if room is None:
            return await self.fanout.refuse(s, refusal("not_found"))
        receipt = self.receipt_of(room)
        if receipt is None:
            return await self.fanout.refuse(s, refusal("not_settled"))
        return ok(receipt=receipt)

    def receipt_of(self, room: CachedRoom) -> dict[str, Any] | None:
        """The signed receipt of a settled room (made once, then kept with the room)."""
        if room.state.status != "settled":
            return None
        if room.receipt is None:
            room.receipt = self.signer.sign_receipt(ledger.build_receipt(room.events))
        return room.receipt

    async def page_room(self, raw_cid: str) -> PageRoom | None:
        cid = normalise_connection_id(raw_cid)
        if cid is None:
            return None
        room, _ = await self.cache.get(cid)
        if room is None:
            return None
        return PageRoom(await self.fanout.snapshot(room), list(room.events))

    async def http_receipt(self, raw_cid: str, token: str | None) -> tuple[int, dict[str, Any]]:
        cid = normalise_connection_id(raw_cid)
        room = None
        if cid is not None:
            room, _ = await self.cache.get(cid, fresh=True)
        if room is None:
            return 404, {"error": HTTP_ERRORS[404]}
        if not token or not any(
            token_matches(token, room.token_hashes.get(p)) for p in negotiation.PARTIES
        ):
            return 401, {"error": HTTP_ERRORS[401]}
        receipt = self.receipt_of(room)
        if receipt is None:
            return 409, {"error": HTTP_ERRORS[409]}
        return 200, receipt
