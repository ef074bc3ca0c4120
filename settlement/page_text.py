"""The negotiation page's sentences, from one reader's side.

`party` is the reader: `"A"`, `"B"`, or `None` for a visitor without a seat,
who is told the status in words and whether a seat is free, never an amount,
a reason or the history. `money` formats a protocol amount string for the page.
Pure: a state snapshot and the event log in, English text out.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Money = Callable[[object], str]

STATUS_LABELS = {
    "awaiting_offer": "Waiting for an offer",
    "offer_pending": "Offer waiting for an answer",
    "disputed": "Disputed",
    "settled": "Settled",
}


def status_sentence(state: dict[str, Any], party: str | None, money: Money) -> str:
    """The current status in words, from this reader's point of view."""
    status = state.get("status")
    offer = state.get("offer") or {}
    amount = money(offer["amount"]) if offer.get("amount") else ""
    if party is None:
        return {
            "offer_pending": "Party A has made an offer; waiting for Party B's answer.",
            "disputed": "Party B disputed the offer; waiting for a new offer from Party A.",
            "settled": "Both parties agreed; the negotiation is over.",
        }.get(str(status), "Waiting for Party A's first offer.")
    if status == "settled":
        done = state.get("settlement") or {}
        agreed = money(done.get("amount", offer.get("amount", "0")))
        return f"You accepted {agreed}." if party == "B" else f"Party B accepted {agreed}."
    if status == "offer_pending":
        if party == "A":
            return (
                f"Your offer of {amount} is waiting for Party B's answer. You can still change it."
            )
        return f"Party A offers {amount}. Accept it, or dispute it with an optional reason."
    if status == "disputed":
        if party == "A":
            return f"Party B disputed your offer of {amount}. Make a new offer."
        return f"You disputed {amount}. Waiting for a new offer from Party A."
    if party == "A":
        return "Make an offer: type an amount and press Submit."
    return "Waiting for Party A's first offer."


def presence_lines(
    state: dict[str, Any], events: list[dict[str, Any]], party: str | None
) -> list[str]:
    """The counterparty's presence (both parties' for an unseated reader)."""
    parties = state.get("parties") or {}
    arrived = {e.get("party") for e in events if e.get("type") in ("created", "joined")}
    shown = [p for p in ("A", "B") if p != party] if party else ["A", "B"]
    lines = []
    for p in shown:
        info = parties.get(p) or {}
        if info.get("seated") and info.get("online"):
            lines.append(f"Party {p} is online.")
        elif info.get("seated"):
            lines.append(f"Party {p} is offline; their seat is kept.")
        elif p in arrived:
            lines.append(f"Party {p} left; the seat is free.")
        else:
            lines.append(f"Party {p} has not joined yet.")
    return lines


def last_reason(state: dict[str, Any]) -> str | None:
    response = state.get("last_response") or {}
    reason = response.get("reason") if response.get("decision") == "dispute" else None
    return str(reason) if reason else None


def answer_note(status: str) -> str:
    """Why B's Accept and Dispute cannot be used now ("" when they can)."""
    return {
        "awaiting_offer": "Nothing to answer yet: Party A has not made an offer.",
        "disputed": "You disputed this offer. You can answer again when Party A makes a new one.",
    }.get(status, "")


def disabled_reason(status: str) -> str:
    """Said when B presses an Accept or Dispute that cannot be used now."""
    return {
        "awaiting_offer": "Party A has not made an offer yet.",
        "disputed": "you disputed this offer; wait for Party A's new one.",
    }.get(status, "there is nothing to answer.")


def announcement(events: list[dict[str, Any]], party: str | None, money: Money) -> str:
    """What the last stored event changed, for the page's live region.

    `"Party B disputed: too high"` rather than the whole status again; a
    visitor hears no amount and no reason.
    """
    if not events:
        return ""
    event = events[-1]
    kind, who = event.get("type"), event.get("party")
    mine = party is not None and who == party
    name = "You" if mine else f"Party {who}"
    amount = money(event.get("amount", "0")) if party is not None else ""
    if kind == "created":
        return f"{name} opened the connection."
    if kind == "joined":
        return "You joined as Party " + str(who) + "." if mine else f"{name} joined."
    if kind == "left":
        return f"{name} left; the seat is free."
    if kind == "proposed":
        first = event.get("version") == 1
        if party is None:
            return f"{name} made {'an' if first else 'a new'} offer."
        if first:
            return f"{name} offered {amount}."
        return f"{name} changed {'your' if mine else 'the'} offer to {amount}."
    if kind == "disputed":
        reason = event.get("reason")
        if party is None or not reason:
            return f"{name} disputed the offer."
        return f"{name} disputed: {reason}"
    if kind == "accepted":
        if party is None:
            return f"{name} accepted the offer. Settled."
        return f"{name} accepted {amount}. Settled."
    return ""


def final_facts(
    state: dict[str, Any], events: list[dict[str, Any]], money: Money
) -> dict[str, Any]:
    """The final screen's facts; rounds and offers spelled out."""
    done = state.get("settlement") or {}
    disputes = sum(1 for e in events if e.get("type") == "disputed")
    offers = sum(1 for e in events if e.get("type") == "proposed") or int(done.get("version", 0))
    version = done.get("version", offers)
    if disputes:
        times = "once" if disputes == 1 else f"{disputes} times"
        rounds_text = f"{disputes + 1}: Party B disputed {times}, then accepted"
    else:
        rounds_text = "1: Party B accepted without a dispute"
    offers_text = f"{offers} from Party A; version {version} was accepted"
    return {
        "amount": money(done.get("amount", "0")),
        "currency": done.get("currency", state.get("currency", "")),
        "at": str(done.get("settled_at", "")),
        "rounds": disputes + 1,
        "rounds_text": rounds_text,
        "offers": offers,
        "offers_text": offers_text,
        "receipt_id": str(done.get("receipt_id", "")),
    }


def history_line(event: dict[str, Any], money: Money) -> dict[str, Any]:
    kind = event.get("type")
    who = f"Party {event.get('party', '?')}"
    reason = None
    if kind == "created":
        text = f"{who} opened the connection in {event.get('currency', '')}."
    elif kind == "joined":
        text = f"{who} joined."
    elif kind == "left":
        text = f"{who} left."
    elif kind == "proposed":
        verb = "offered" if event.get("version") == 1 else "changed the offer to"
        text = f"{who} {verb} {money(event.get('amount', '0'))} (version {event.get('version')})."
    elif kind == "disputed":
        reason = event.get("reason")
        text = f"{who} disputed version {event.get('version')}" + (":" if reason else ".")
    elif kind == "accepted":
        text = f"{who} accepted {money(event.get('amount', '0'))} (version {event.get('version')})."
    else:
        text = f"{who}: {kind}."
    return {"kind": kind, "text": text, "reason": reason, "at": str(event.get("at", ""))}
