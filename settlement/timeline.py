"""The negotiation as a picture: offers and answers as steps, for the page and the receipt.

Pure formatting from the event log: each step has a sentence (what a screen reader
reads, the list is an `<ol>`), and each offer a bar whose length is its share of the
largest offer (`templates/fragments/timeline_list.html` draws it as inline SVG).
`money` and `when` format an amount string and a timestamp for the reader.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any

Format = Callable[[str], str]


def timeline(events: list[dict[str, Any]], money: Format, when: Format) -> dict[str, Any]:
    """The offers and answers as steps, oldest first; `settled` when the last is the
    acceptance, `waiting` when an offer waits for its answer."""
    top = max(
        (_decimal(e.get("amount")) for e in events if e.get("type") == "proposed"),
        default=Decimal(0),
    )
    # An offer nobody answered that is not the latest one was replaced by A.
    answered = {e.get("version") for e in events if e.get("type") in ("disputed", "accepted")}
    offered = [e.get("version") for e in events if e.get("type") == "proposed"]
    replaced = set(offered[:-1]) - answered
    steps = [
        step
        for step in (_step(event, money, when, top, replaced) for event in events)
        if step is not None
    ]
    last = steps[-1]["kind"] if steps else None
    return {"steps": steps, "settled": last == "accept", "waiting": last == "offer"}


def for_party(
    events: list[dict[str, Any]], party: str | None, money: Format, when: Format
) -> dict[str, Any] | None:
    """The negotiation page's timeline: only for a seated party (a visitor must never see
    amounts), else None."""
    if party not in ("A", "B"):
        return None
    return timeline(events, money, when)


def _step(
    event: dict[str, Any], money: Format, when: Format, top: Decimal, replaced: set[object]
) -> dict[str, Any] | None:
    kind = event.get("type")
    if kind not in ("proposed", "disputed", "accepted"):
        return None
    version = event.get("version")
    who = f"Party {event.get('party')}"
    amount = str(event.get("amount", ""))
    shown = money(amount) if amount else ""
    at = str(event.get("at", ""))
    signature = event.get("signature")
    step: dict[str, Any] = {
        "version": version,
        "party": event.get("party"),
        "at": at,
        "at_text": when(at),
        "signed": isinstance(signature, str) and bool(signature),
        "amount": shown,
        "note": "",
        "bar": None,
        "reason": None,
    }
    if kind == "proposed":
        verb = "offered" if version == 1 else "changed the offer to"
        step.update(
            kind="offer",
            label=f"Version {version}",
            text=f"{who} {verb} {shown}.",
            bar=_bar(_decimal(amount), top),
        )
        if version in replaced:
            step["note"] = "Replaced before Party B answered."
        return step
    if kind == "disputed":
        reason = event.get("reason")
        step.update(
            kind="dispute",
            label="Disputed",
            amount="",
            text=f"{who} disputed version {version}"
            + (", saying:" if reason else ", giving no reason."),
            reason=str(reason) if reason else None,
        )
        return step
    step.update(
        kind="accept",
        label="Accepted",
        text=f"{who} accepted version {version}: {shown}. Settled.",
    )
    return step


def _decimal(value: object) -> Decimal:
    try:
        return Decimal(str(value))
    except (InvalidOperation, ValueError):
        return Decimal(0)


def _bar(amount: Decimal, top: Decimal) -> str:
    """The bar's length in percent of the largest offer (SVG geometry, not money)."""
    if top <= 0 or amount <= 0:
        return "0"
    share = (amount * 100 / top).quantize(Decimal("0.1"))
    return str(max(share, Decimal("1.0")))
