"""Black-box helpers for the settlement protocol tests.

Everything here is written from /work/shared/PROTOCOL.md alone: a thin bot over
`socketio.AsyncClient`, plus checks for the shapes, the hash chain and the
receipt signature that the protocol text defines.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

import rfc8785
import socketio

NS = "/settlement"
CALL_TIMEOUT = 5.0

# Crockford base32 alphabet: digits and upper-case letters without I, L, O, U.
CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
CONNECTION_ID_RE = re.compile(
    r"^[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}$"
)
AT_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
HEX64_RE = re.compile(r"^[0-9a-f]{64}$")
ZERO_HASH = "0" * 64

STATE_KEYS = {
    "connection_id",
    "seq",
    "status",
    "currency",
    "parties",
    "offer",
    "last_response",
    "settlement",
}
OFFER_KEYS = {"amount", "version", "proposed_at", "hash"}  # `hash`: protocol 1.1
PARTY_KEYS = {"seated", "online", "key_id"}  # `key_id`: protocol 1.1
RESPONSE_KEYS = {"decision", "version", "reason", "at"}
SETTLEMENT_KEYS = {"amount", "currency", "version", "settled_at", "receipt_id"}
STATUSES = {"awaiting_offer", "offer_pending", "disputed", "settled"}

EVENT_BASE_KEYS = {"connection_id", "seq", "type", "party", "at", "prev_hash", "hash"}
EVENT_EXTRA_KEYS = {
    "created": {"currency", "public_key"},
    "joined": {"public_key"},
    "left": set(),
    "proposed": {"amount", "version", "signature"},
    "disputed": {"version", "reason", "signature"},
    "accepted": {"version", "amount", "signature"},
}
RECEIPT_KEYS = {
    "connection_id",
    "currency",
    "amount",
    "version",
    "settled_at",
    "events",
    "receipt_id",
    "signature",
}

# Every error code PROTOCOL.md lists (its "Error codes" section).
ERROR_CODES = {
    "bad_request",
    "invalid_amount",
    "invalid_currency",
    "not_found",
    "room_full",
    "seat_taken",
    "already_seated",
    "bad_token",
    "not_seated",
    "wrong_party",
    "no_offer",
    "stale_offer",
    "already_responded",
    "settled",
    "not_settled",
    "idempotency_mismatch",
    "rate_limited",
    "unavailable",
    # Protocol 1.1, "Error codes added".
    "signature_required",
    "bad_signature",
}


def rid() -> str:
    """A fresh request id long enough for `create` and `join` (32 chars)."""
    return uuid.uuid4().hex


def canonical(obj: Any) -> bytes:
    """RFC 8785 canonical JSON, as UTF-8 bytes."""
    return rfc8785.dumps(obj)


def simple_canonical(obj: Any) -> bytes:
    """The protocol's own description of the canonical form for event values."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8"
    )


def event_hash(event: dict[str, Any]) -> str:
    body = {k: v for k, v in event.items() if k != "hash"}
    return hashlib.sha256(event["prev_hash"].encode("utf-8") + canonical(body)).hexdigest()


def assert_chain(events: list[dict[str, Any]], first_prev: str = ZERO_HASH) -> None:
    """Every event's hash follows the protocol rule and links to the one before."""
    prev = first_prev
    for ev in events:
        assert ev["prev_hash"] == prev, f"broken link at seq {ev['seq']}"
        body = {k: v for k, v in ev.items() if k != "hash"}
        # For strings/ints/null both canonical forms agree; check both to be sure.
        assert canonical(body) == simple_canonical(body)
        assert ev["hash"] == event_hash(ev), f"hash mismatch at seq {ev['seq']}"
        assert HEX64_RE.match(ev["hash"])
        prev = ev["hash"]


def assert_event_shape(ev: dict[str, Any], connection_id: str) -> None:
    assert ev["type"] in EVENT_EXTRA_KEYS, ev
    assert set(ev) == EVENT_BASE_KEYS | EVENT_EXTRA_KEYS[ev["type"]], ev
    assert ev["connection_id"] == connection_id
    assert ev["party"] in ("A", "B")
    assert isinstance(ev["seq"], int) and not isinstance(ev["seq"], bool)
    assert AT_RE.match(ev["at"]), ev["at"]
    for key, value in ev.items():
        assert value is None or isinstance(value, (str, int)), (key, value)
        assert not isinstance(value, (bool, float)), (key, value)


def assert_state_shape(state: dict[str, Any]) -> None:
    assert set(state) == STATE_KEYS, sorted(state)
    assert CONNECTION_ID_RE.match(state["connection_id"]), state["connection_id"]
    assert isinstance(state["seq"], int) and not isinstance(state["seq"], bool)
    assert state["status"] in STATUSES
    assert isinstance(state["currency"], str)
    assert set(state["parties"]) == {"A", "B"}
    for p in ("A", "B"):
        assert set(state["parties"][p]) == PARTY_KEYS
        key_id = state["parties"][p]["key_id"]
        assert key_id is None or re.fullmatch(r"[0-9a-f]{16}", key_id), key_id
        assert isinstance(state["parties"][p]["seated"], bool)
        assert isinstance(state["parties"][p]["online"], bool)
    if state["offer"] is not None:
        assert set(state["offer"]) == OFFER_KEYS, state["offer"]
        assert AT_RE.match(state["offer"]["proposed_at"])
    if state["last_response"] is not None:
        assert set(state["last_response"]) == RESPONSE_KEYS, state["last_response"]
        assert AT_RE.match(state["last_response"]["at"])
    if state["settlement"] is not None:
        assert set(state["settlement"]) == SETTLEMENT_KEYS, state["settlement"]
        assert AT_RE.match(state["settlement"]["settled_at"])
        assert HEX64_RE.match(state["settlement"]["receipt_id"])


def assert_error(ack: Any, code: str, *, seated: bool | None = None) -> dict[str, Any]:
    """An error ack of the protocol's shape with this code.

    seated=True: `state` must be present; seated=False: it must be absent.
    """
    assert isinstance(ack, dict), ack
    assert ack.get("ok") is False, ack
    assert isinstance(ack.get("error"), dict), ack
    assert ack["error"].get("code") == code, ack
    assert set(ack["error"]) == {"code", "message"}, ack
    assert isinstance(ack["error"]["message"], str) and ack["error"]["message"].strip(), ack
    assert set(ack) <= {"ok", "error", "state"}, ack
    if seated is True:
        assert "state" in ack, f"error ack of a seated socket lacks state: {ack}"
        assert_state_shape(ack["state"])
    elif seated is False:
        assert "state" not in ack, f"error ack of an unseated socket has state: {ack}"
    return ack


def assert_ok(ack: Any, keys: set[str] | None = None) -> dict[str, Any]:
    assert isinstance(ack, dict), ack
    assert ack.get("ok") is True, ack
    if keys is not None:
        assert set(ack) == keys, sorted(ack)
    if "state" in ack:
        assert_state_shape(ack["state"])
    return ack


def b64decode_std(value: str) -> bytes:
    """Standard, padded base64, strictly."""
    assert re.fullmatch(r"[A-Za-z0-9+/]*={0,2}", value), value
    assert len(value) % 4 == 0, value
    return base64.b64decode(value, validate=True)


def verify_signature(receipt: dict[str, Any], keys_doc: dict[str, Any]) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    sig = receipt["signature"]
    assert set(sig) == {"alg", "key_id", "value"}, sig
    assert sig["alg"] == "ed25519"
    matching = [k for k in keys_doc["keys"] if k["key_id"] == sig["key_id"]]
    assert matching, f"key_id {sig['key_id']} not listed by /api/keys"
    raw_key = b64decode_std(matching[0]["public_key"])
    assert len(raw_key) == 32
    raw_sig = b64decode_std(sig["value"])
    assert len(raw_sig) == 64
    body = {k: v for k, v in receipt.items() if k != "signature"}
    Ed25519PublicKey.from_public_bytes(raw_key).verify(raw_sig, canonical(body))


class RecordingClient(socketio.AsyncClient):
    """AsyncClient that also keeps the raw text of every ack packet it receives."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.raw_acks: list[str] = []

    async def _handle_eio_message(self, data: Any) -> None:  # type: ignore[override]
        if isinstance(data, str):
            m = re.match(r"^3" + re.escape(NS) + r",(\d+)(.*)$", data, re.S)
            if m:
                self.raw_acks.append(m.group(2))
        await super()._handle_eio_message(data)


class Bot:
    """One Socket.IO client on /settlement that records what the server pushes."""

    def __init__(self, url: str, name: str = "bot") -> None:
        self.url = url
        self.name = name
        self.sio: RecordingClient | None = None
        self.states: list[dict[str, Any]] = []
        self.htmls: list[dict[str, Any]] = []
        self.errors: list[dict[str, Any]] = []
        self.cond = asyncio.Condition()
        # Seat details, filled in by create/join/resume helpers.
        self.connection_id: str | None = None
        self.party: str | None = None
        self.token: str | None = None
        self.disconnects = 0

    # -- connection -------------------------------------------------------
    async def connect(
        self, auth: dict[str, Any] | None = None, *, reconnection: bool = False
    ) -> Bot:
        sio = RecordingClient(
            reconnection=reconnection, reconnection_delay=0.2, reconnection_delay_max=0.5
        )
        self.sio = sio

        async def on_state(data: Any) -> None:
            await self._push(self.states, data)

        async def on_html(data: Any) -> None:
            await self._push(self.htmls, data)

        async def on_error(data: Any) -> None:
            await self._push(self.errors, data)

        def on_disconnect(*_: Any) -> None:
            self.disconnects += 1

        sio.on("state", on_state, namespace=NS)
        sio.on("html", on_html, namespace=NS)
        sio.on("error", on_error, namespace=NS)
        sio.on("disconnect", on_disconnect, namespace=NS)
        await sio.connect(
            self.url,
            namespaces=[NS],
            transports=["websocket"],
            auth=auth,
            wait_timeout=5,
        )
        return self

    async def _push(self, target: list[Any], data: Any) -> None:
        async with self.cond:
            target.append(data)
            self.cond.notify_all()

    @property
    def connected(self) -> bool:
        return bool(self.sio and self.sio.connected and NS in self.sio.namespaces)

    async def close(self) -> None:
        if self.sio is not None:
            try:
                await self.sio.disconnect()
            except Exception:  # noqa: BLE001 - teardown
                pass

    # -- commands ---------------------------------------------------------
    async def call(self, event: str, payload: Any = None, within: float = CALL_TIMEOUT) -> Any:
        assert self.sio is not None
        return await self.sio.call(event, payload, namespace=NS, timeout=within)

    async def call_raw(self, event: str, payload: Any = None) -> tuple[Any, str]:
        """A call plus the raw JSON text of its ack (not safe with concurrent calls)."""
        assert self.sio is not None
        before = len(self.sio.raw_acks)
        ack = await self.call(event, payload)
        new = self.sio.raw_acks[before:]
        assert len(new) == 1, new
        return ack, new[0]

    async def create(self, party: str = "A", currency: str | None = None, **extra: Any) -> dict:
        payload: dict[str, Any] = {"party": party, "request_id": rid()}
        if currency is not None:
            payload["currency"] = currency
        payload.update(extra)
        ack = assert_ok(await self.call("create", payload))
        self._seat(ack)
        self.token = ack["token"]
        return ack

    async def join(self, connection_id: str, party: str | None = None, **extra: Any) -> dict:
        payload: dict[str, Any] = {"connection_id": connection_id, "request_id": rid()}
        if party is not None:
            payload["party"] = party
        payload.update(extra)
        ack = assert_ok(await self.call("join", payload))
        self._seat(ack)
        self.token = ack["token"]
        return ack

    async def resume(self, connection_id: str, token: str) -> dict:
        ack = assert_ok(await self.call("resume", {"connection_id": connection_id, "token": token}))
        self._seat(ack)
        self.token = token
        return ack

    async def propose(self, amount: Any, **extra: Any) -> Any:
        return await self.call("propose", {"amount": amount, **extra})

    async def respond(self, decision: str, version: Any, **extra: Any) -> Any:
        return await self.call("respond", {"decision": decision, "version": version, **extra})

    async def history(self, after_seq: int | None = None) -> Any:
        payload: dict[str, Any] = {}
        if after_seq is not None:
            payload["after_seq"] = after_seq
        return await self.call("history", payload)

    async def all_events(self) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        after: int | None = None
        for _ in range(1000):
            ack = assert_ok(await self.history(after))
            events.extend(ack["events"])
            if not ack.get("more"):
                return events
            after = ack["events"][-1]["seq"]
        raise AssertionError("history never ended")

    def _seat(self, ack: dict[str, Any]) -> None:
        self.connection_id = ack["connection_id"]
        self.party = ack["party"]

    # -- waiting ----------------------------------------------------------
    async def wait_for(
        self,
        kind: str,
        pred: Callable[[Any], bool] = lambda _: True,
        within: float = 5.0,
        start: int = 0,
    ) -> Any:
        """First item of `kind` ("state", "html", "error") from index `start` matching `pred`."""
        target = {"state": self.states, "html": self.htmls, "error": self.errors}[kind]
        deadline = time.monotonic() + within

        def find() -> Any:
            for item in target[start:]:
                if pred(item):
                    return item
            return None

        async with self.cond:
            while True:
                found = find()
                if found is not None:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"{self.name}: no {kind} matching within {within}s; got {target[start:]!r}"
                    )
                try:
                    await asyncio.wait_for(self.cond.wait(), left)
                except TimeoutError:
                    pass

    async def wait_state_seq(self, seq: int, within: float = 5.0) -> dict[str, Any]:
        return await self.wait_for("state", lambda s: s.get("seq") == seq, within)

    async def settle(self, seconds: float = 0.3) -> None:
        """Give in-flight pushes a moment to arrive."""
        await asyncio.sleep(seconds)
