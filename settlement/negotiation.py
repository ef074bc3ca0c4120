"""The negotiation rules, pure: a room's state plus a command gives events or a refusal.

Nothing here knows about sockets, SQL or clocks: the caller passes `now`.
A room *is* its event log; `fold`/`apply` rebuild the state from it, and
`decide` returns the event bodies a command causes (not yet sealed into the
hash chain) or the `Refusal` that answers it. Checks run in the protocol's
order: seat (`wrong_party`), `settled`, values, then the room, and last the
party signatures of protocol 1.1 (`signature_required`, `bad_signature`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

from . import consent, money

Party = Literal["A", "B"]
PARTIES: tuple[Party, Party] = ("A", "B")

STATUS_WORDS = ("awaiting_offer", "offer_pending", "disputed", "settled")


@dataclass(frozen=True)
class Refusal:
    """A command that changes nothing; `code` is the protocol's error code."""

    code: str
    message: str


@dataclass(frozen=True)
class Create:
    party: Party
    currency: str
    public_key: str | None = None  # base64 of the seat's Ed25519 key (shape checked already)


@dataclass(frozen=True)
class Join:
    party: Party | None
    public_key: str | None = None


@dataclass(frozen=True)
class Leave:
    pass


@dataclass(frozen=True)
class Propose:
    amount: Any  # the raw JSON value; parsed here so the order of checks holds
    version: int | None = None  # the version this offer creates, if the client says
    signature: str | None = None


@dataclass(frozen=True)
class Respond:
    decision: Literal["accept", "dispute"]
    version: int
    reason: str | None
    signature: str | None = None


Command = Join | Leave | Propose | Respond


@dataclass(frozen=True)
class RoomState:
    """The folded state of one room after its last event."""

    connection_id: str
    currency: str
    seq: int
    last_hash: str
    status: str = "awaiting_offer"
    seated: dict[str, bool] = field(default_factory=lambda: {"A": False, "B": False})
    offer: dict[str, Any] | None = None
    last_response: dict[str, Any] | None = None
    settlement: dict[str, Any] | None = None
    proposals: int = 0
    # The current seat holders' public keys (base64) and their fingerprints.
    keys: dict[str, str | None] = field(default_factory=lambda: {"A": None, "B": None})
    key_ids: dict[str, str | None] = field(default_factory=lambda: {"A": None, "B": None})

    def snapshot(self, online: dict[str, bool]) -> dict[str, Any]:
        """The protocol's `state` object, with presence supplied by the caller."""
        return {
            "connection_id": self.connection_id,
            "seq": self.seq,
            "status": self.status,
            "currency": self.currency,
            "parties": {
                p: {
                    "seated": self.seated[p],
                    "online": bool(self.seated[p] and online.get(p)),
                    "key_id": self.key_ids[p],
                }
                for p in PARTIES
            },
            "offer": dict(self.offer) if self.offer else None,
            "last_response": dict(self.last_response) if self.last_response else None,
            "settlement": dict(self.settlement) if self.settlement else None,
        }


def apply(state: RoomState | None, event: dict[str, Any]) -> RoomState:
    """Fold one sealed event into the state (the first event must be `created`)."""
    kind = event["type"]
    if state is None:
        if kind != "created":
            raise ValueError("a room's first event must be 'created'")
        seated = {"A": False, "B": False}
        seated[event["party"]] = True
        key = event.get("public_key")
        return RoomState(
            connection_id=event["connection_id"],
            currency=event["currency"],
            seq=event["seq"],
            last_hash=event["hash"],
            seated=seated,
            keys={"A": None, "B": None, event["party"]: key},
            key_ids={"A": None, "B": None, event["party"]: consent.key_id(key)},
        )
    changes: dict[str, Any] = {"seq": event["seq"], "last_hash": event["hash"]}
    if kind in ("joined", "left"):
        party = event["party"]
        key = event.get("public_key") if kind == "joined" else None
        changes["seated"] = {**state.seated, party: kind == "joined"}
        changes["keys"] = {**state.keys, party: key}
        changes["key_ids"] = {**state.key_ids, party: consent.key_id(key)}
    elif kind == "proposed":
        changes["status"] = "offer_pending"
        changes["offer"] = {
            "amount": event["amount"],
            "version": event["version"],
            "proposed_at": event["at"],
            "hash": event["hash"],
        }
        changes["proposals"] = state.proposals + 1
    elif kind in ("disputed", "accepted"):
        response = {
            "decision": "dispute" if kind == "disputed" else "accept",
            "version": event["version"],
            "reason": event.get("reason"),
            "at": event["at"],
        }
        changes["last_response"] = response
        if kind == "disputed":
            changes["status"] = "disputed"
        else:
            changes["status"] = "settled"
            changes["settlement"] = {
                "amount": event["amount"],
                "currency": state.currency,
                "version": event["version"],
                "settled_at": event["at"],
                "receipt_id": event["hash"],
            }
    else:
        raise ValueError(f"unknown event type {kind!r}")
    # What dataclasses.replace does, without its per-field introspection.
    return RoomState(**{**state.__dict__, **changes})


def fold(events: Iterable[dict[str, Any]]) -> RoomState:
    """Rebuild a room's state from its whole log."""
    state: RoomState | None = None
    for event in events:
        state = apply(state, event)
    if state is None:
        raise ValueError("an empty log is not a room")
    return state


def _event(state: RoomState, kind: str, party: str, now: str, **fields: Any) -> dict[str, Any]:
    return {
        "connection_id": state.connection_id,
        "seq": state.seq + 1,
        "type": kind,
        "party": party,
        "at": now,
        **fields,
    }


def decide_create(connection_id: str, command: Create, now: str) -> list[dict[str, Any]]:
    """The first event of a new room (the currency was validated by the caller)."""
    return [
        {
            "connection_id": connection_id,
            "seq": 1,
            "type": "created",
            "party": command.party,
            "at": now,
            "currency": command.currency,
            "public_key": command.public_key,
        }
    ]


def free_seat(state: RoomState) -> Party | None:
    for party in PARTIES:
        if not state.seated[party]:
            return party
    return None


def decide(
    state: RoomState,
    actor: Party | None,
    command: Command,
    now: str,
    maximum: Decimal = money.DEFAULT_MAXIMUM,
) -> list[dict[str, Any]] | Refusal:
    """The events `command` causes in `state`, or why it is refused.

    `actor` is the seat of the socket sending it (None for `join`).
    """
    if isinstance(command, Join):
        return _decide_join(state, command, now)
    if actor is None:
        return Refusal("not_seated", "Join or resume a connection first.")
    if isinstance(command, Leave):
        return [_event(state, "left", actor, now)]
    if isinstance(command, Propose):
        return _decide_propose(state, actor, command, now, maximum)
    return _decide_respond(state, actor, command, now)


def _decide_join(state: RoomState, command: Join, now: str) -> list[dict[str, Any]] | Refusal:
    wanted = command.party
    free = free_seat(state)
    if free is None:
        return Refusal("room_full", "Both seats of this connection are taken.")
    if wanted is None:
        wanted = free
    elif state.seated[wanted]:
        return Refusal(
            "seat_taken",
            f"Party {wanted}'s seat is taken; Party {free}'s seat is free.",
        )
    return [_event(state, "joined", wanted, now, public_key=command.public_key)]


def _keyless_signature(state: RoomState, actor: Party, signature: str | None) -> Refusal | None:
    """A signature from a seat without a key is malformed input (`bad_request`).

    It needs the room, so it runs first in `decide`, right after the seat is known
    and before every other check (where the payload-shape step would have put it).
    """
    if signature is not None and state.keys[actor] is None:
        return Refusal(
            "bad_request",
            "This seat has no public key, so its commands cannot carry a signature "
            "(send public_key with create or join to sign).",
        )
    return None


def _check_signature(
    state: RoomState, actor: Party, signature: str | None, statement: dict[str, Any]
) -> Refusal | None:
    """The last checks: a signing seat must sign, and the signature must verify."""
    key = state.keys[actor]
    if key is None:
        return None
    if signature is None:
        return Refusal(
            "signature_required",
            f"Party {actor}'s seat has a key, so this command must carry its signature. "
            "If the key was lost (browser storage cleared), leave and join again for a new one.",
        )
    if not consent.verifies(key, signature, statement):
        return Refusal(
            "bad_signature",
            f"The signature does not verify with Party {actor}'s key for this statement "
            "(check the amount, version and offer it names).",
        )
    return None


def _decide_propose(
    state: RoomState, actor: Party, command: Propose, now: str, maximum: Decimal
) -> list[dict[str, Any]] | Refusal:
    keyless = _keyless_signature(state, actor, command.signature)
    if keyless is not None:
        return keyless
    if actor != "A":
        return Refusal("wrong_party", "Only Party A proposes amounts; Party B accepts or disputes.")
    if state.status == "settled":
        return Refusal("settled", "This connection is settled; the amount is final.")
    try:
        value = money.parse_amount(command.amount, state.currency, maximum)
    except money.MoneyError as err:
        return Refusal(err.code, err.message)
    version = (state.offer["version"] if state.offer else 0) + 1
    if command.version is not None and command.version != version:
        return Refusal(
            "stale_offer",
            f"This proposal would create version {version}, not {command.version}: "
            "the offer changed. Look at it and propose again.",
        )
    amount = money.normalise(value, state.currency)
    statement = consent.propose_statement(state.connection_id, state.currency, amount, version)
    refusal = _check_signature(state, actor, command.signature, statement)
    if refusal is not None:
        return refusal
    return [
        _event(
            state,
            "proposed",
            actor,
            now,
            amount=amount,
            version=version,
            signature=command.signature,
        )
    ]


def _decide_respond(
    state: RoomState, actor: Party, command: Respond, now: str
) -> list[dict[str, Any]] | Refusal:
    keyless = _keyless_signature(state, actor, command.signature)
    if keyless is not None:
        return keyless
    if actor != "B":
        return Refusal("wrong_party", "Only Party B accepts or disputes; Party A proposes.")
    if state.status == "settled":
        return Refusal("settled", "This connection is settled; the amount is final.")
    offer = state.offer
    if offer is None:
        return Refusal("no_offer", "There is no offer to answer yet.")
    if command.version != offer["version"]:
        return Refusal(
            "stale_offer",
            f"The offer changed: version {offer['version']} is now {offer['amount']} "
            f"{state.currency}. Look at it and answer again.",
        )
    if state.status == "disputed":
        return Refusal(
            "already_responded",
            "You already disputed this offer; wait for Party A to propose a new amount.",
        )
    statement = consent.respond_statement(
        command.decision, state.connection_id, state.currency, offer, command.reason
    )
    refusal = _check_signature(state, actor, command.signature, statement)
    if refusal is not None:
        return refusal
    signature = command.signature
    if command.decision == "dispute":
        return [
            _event(
                state,
                "disputed",
                actor,
                now,
                version=offer["version"],
                reason=command.reason,
                signature=signature,
            )
        ]
    return [
        _event(
            state,
            "accepted",
            actor,
            now,
            version=offer["version"],
            amount=offer["amount"],
            signature=signature,
        )
    ]
