"""The protocol's shapes at the service's boundary, one function per kind of ack,
and the table of messages the shell (not the pure rules) answers with.

The rules in `negotiation.py` keep their own refusal texts beside the rule
they explain; every other refusal the service gives is named here once.
"""

from __future__ import annotations

from typing import Any, TypedDict

from .negotiation import Refusal

#: A stored event as history returns it: strings, integers or null only.
Event = dict[str, Any]


class PartyView(TypedDict):
    seated: bool
    online: bool
    key_id: str | None  # 1.1: the fingerprint of the seat's key


class Snapshot(TypedDict):
    """The `state` object (see PROTOCOL.md, Events)."""

    connection_id: str
    seq: int
    status: str
    currency: str
    parties: dict[str, PartyView]
    offer: dict[str, Any] | None
    last_response: dict[str, Any] | None
    settlement: dict[str, Any] | None


class ErrorBody(TypedDict):
    code: str
    message: str


class Ack(TypedDict, total=False):
    """Every ack: `ok`, then the fields of its command, or `error` (and `state`)."""

    ok: bool
    error: ErrorBody
    state: Snapshot
    connection_id: str
    party: str
    token: str
    version: int
    events: list[Event]
    more: bool
    receipt: dict[str, Any]


#: Refusals the service gives, by name (the code is the protocol's).
MESSAGES: dict[str, Refusal] = {
    r.code if name is None else name: r
    for name, r in (
        (None, Refusal("not_found", "No connection has that id.")),
        (None, Refusal("not_seated", "Join or resume a connection first.")),
        ("seat_left", Refusal("not_seated", "This seat was left; join again.")),
        (
            None,
            Refusal("already_seated", "This socket already holds a seat; leave it first."),
        ),
        (
            None,
            Refusal(
                "bad_token",
                "That seat token is not valid for this connection (left or revoked?).",
            ),
        ),
        (
            None,
            Refusal(
                "idempotency_mismatch",
                "This request_id was already used for a different command or payload.",
            ),
        ),
        (None, Refusal("not_settled", "There is no receipt until B accepts.")),
        (None, Refusal("rate_limited", "Too many commands; slow down and try again shortly.")),
        (
            "guesses",
            Refusal(
                "rate_limited",
                "Too many unknown connection ids or wrong tokens from your address; "
                "wait a little and check the id.",
            ),
        ),
        (
            None,
            Refusal(
                "unavailable",
                "The store could not commit this command right now. "
                "Retry with the same request_id (a repeat is never applied twice).",
            ),
        ),
        (
            "failed",
            Refusal(
                "unavailable",
                "The server could not complete this command; retry with the same request_id.",
            ),
        ),
        (
            "undecodable",
            Refusal("bad_request", "The frame is not a Socket.IO event of [name, payload]."),
        ),
        (
            "draining",
            Refusal("unavailable", "The server is restarting; retry with the same request_id."),
        ),
    )
}

#: `error` events (not tied to a command), by name: (code, message).
EVENT_ERRORS: dict[str, tuple[str, str]] = {
    "not_found": ("not_found", "No connection has that id."),
    "token_without_room": ("not_found", "A token needs the connection_id it belongs to."),
    "bad_token": ("bad_token", "That seat token is not valid for this connection."),
    "guesses": ("rate_limited", "Too many failed resumes from your address."),
    "unavailable": ("unavailable", "The store is not answering; reconnect shortly."),
}

#: HTTP error bodies of the receipt route, by status.
HTTP_ERRORS: dict[int, ErrorBody] = {
    404: {"code": "not_found", "message": "No connection has that id."},
    401: {"code": "bad_token", "message": "A current seat token of this connection is required."},
    409: {"code": "not_settled", "message": "This connection is not settled yet."},
}


def refusal(name: str) -> Refusal:
    """The service's refusal called `name` (a code, or one of the names above)."""
    return MESSAGES[name]


def ok(**fields: Any) -> Ack:
    return {"ok": True, **fields}  # type: ignore[typeddict-item]


def error_ack(refused: Refusal, state: Snapshot | None = None) -> Ack:
    """The one way an error ack is built: `state` whenever the socket is seated."""
    ack: Ack = {"ok": False, "error": {"code": refused.code, "message": refused.message}}
    if state is not None:
        ack["state"] = state
    return ack
