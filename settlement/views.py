"""Browser pages and the HTML fragments the server pushes to them.

The negotiation page is rendered for nobody in particular (the seat token lives
only in the tab's `sessionStorage`); the socket then resumes the seat and the
server sends `render_fragments(...)` for that party, which the page swaps in by
element id (htmx out-of-band swaps, see `static/app.js` and `docs/browser.md`).

Everything here is pure formatting: a state snapshot and the event log in, HTML
out. Amounts stay `Decimal` from the protocol's exact strings, never floats.
"""

from __future__ import annotations

import copy
import re
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from functools import cache
from pathlib import Path
from typing import Any

import aiohttp_jinja2
import jinja2
from aiohttp import web
from babel import Locale
from babel.core import UnknownLocaleError
from babel.dates import format_datetime
from babel.numbers import get_currency_name, parse_pattern
from iso4217 import Currency

from settlement import appkeys

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = ROOT / "templates"
STATIC = ROOT / "static"
DEFAULT_LOCALE = "en_US"

#: Shown first in the landing page's Currency select; every other active code follows.
COMMON_CURRENCIES = (
    "USD", "EUR", "GBP", "JPY", "CHF", "CAD", "AUD", "CNY", "HKD", "SGD",
    "SEK", "NOK", "DKK", "PLN", "INR", "BRL", "MXN", "ZAR", "NZD", "KWD",
)  # fmt: skip

_ID_RE = re.compile(r"[0-9A-Za-z-]{1,20}")
_LANG_RE = re.compile(r"[A-Za-z]{1,8}(?:-[A-Za-z0-9]{1,8})*")

_ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATES),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


# --------------------------------------------------------------------------- setup


def setup(app: web.Application) -> None:
    """Templates (autoescaped), `/static/`, and the two page routes."""
    aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    app.router.add_get("/", landing_page, name="landing")
    app.router.add_get("/c/{connection_id}", negotiation_page, name="negotiation")
    app.router.add_static("/static/", STATIC, name="static", append_version=False)


def _page(
    request: web.Request, name: str, context: dict[str, Any], status: int = 200
) -> web.Response:
    response = aiohttp_jinja2.render_template(name, request, context, status=status)
    response.headers["Cache-Control"] = "no-store"
    return response


async def landing_page(request: web.Request) -> web.Response:
    locale = negotiate_locale(request.headers.get("Accept-Language"))
    left = request.query.get("left")
    left_id = left if left and _ID_RE.fullmatch(left) and left != "1" else None
    return _page(
        request,
        "landing.html",
        {
            "lang": _lang(locale),
            "page": "landing",
            "left": left is not None,
            "left_id": left_id,
            "currencies": currency_options(locale),
        },
    )


async def negotiation_page(request: web.Request) -> web.Response:
    locale = negotiate_locale(request.headers.get("Accept-Language"))
    connection_id = request.match_info["connection_id"]
    room = await request.app[appkeys.SERVICE].page_room(connection_id)
    if room is None:
        return _page(
            request,
            "not_found.html",
            {"lang": _lang(locale), "page": "not_found", "connection_id": connection_id[:40]},
            status=404,
        )
    context = view_model(room.state, room.events, None, locale)
    page_url = str(request.url.with_query(None).with_fragment(None))
    context.update(lang=_lang(locale), page="negotiation", oob=False, page_url=page_url)
    return _page(request, "negotiation.html", context)


def unavailable_page(request: web.Request, retry_after: int) -> web.Response:
    """503: the store is not answering. The page reloads itself (a meta refresh: no
    script, so the CSP holds) every `retry_after` seconds until it can be shown."""
    locale = negotiate_locale(request.headers.get("Accept-Language"))
    context = {
        "lang": _lang(locale),
        "page": "unavailable",
        "retry_after": retry_after,
        "again_url": str(request.rel_url),
    }
    response = _page(request, "unavailable.html", context, status=503)
    response.headers["Retry-After"] = str(retry_after)
    return response


# --------------------------------------------------------------------------- fragments


def render_fragments(state: dict, events: list[dict], party: str | None, locale: str) -> str:
    """The out-of-band fragments that bring a negotiation page up to date for `party`.

    Pure and synchronous: the server calls it once per audience per change.
    """
    context = view_model(state, events, party, locale)
    context["oob"] = True
    context["timeline"] = _timeline(state, events, party, locale)
    return _ENV.get_template("fragments/all.html").render(context)


def _timeline(state: dict, events: list[dict], party: str | None, locale: str) -> Any:
    """The negotiation as a picture (settlement/timeline.py), for a seated party only; the
    page itself is rendered for nobody, so it has none until the seat's fragments come."""
    from settlement import timeline

    currency = str(state.get("currency") or "USD")
    return timeline.for_party(
        events,
        party,
        lambda amount: format_amount(str(amount), currency, locale),
        lambda at: format_time(at, locale),
    )


def view_model(state: dict, events: list[dict], party: str | None, locale: str) -> dict[str, Any]:
    """Everything the page and fragment templates show, already in words."""
    currency = str(state.get("currency") or "USD")
    other = {"A": "B", "B": "A"}.get(party or "")
    status = str(state.get("status") or "awaiting_offer")
    settled = status == "settled"

    def money(amount: object) -> str:
        return format_amount(str(amount), currency, locale)

    offer = state.get("offer")
    parties = state.get("parties") or {}
    free = [p for p in ("A", "B") if not (parties.get(p) or {}).get("seated")]
    audience = party or "none"
    return {
        "connection_id": state.get("connection_id", ""),
        "party": party,
        "other": other,
        "currency": currency,
        "currency_name": _currency_name(currency, locale),
        "exponent": _exponent(currency),
        "amount_example": "1250"
        + ("." + "50".ljust(_exponent(currency), "0") if _exponent(currency) else ""),
        "status": status,
        "status_label": STATUS_LABELS.get(status, status),
        "status_text": status_sentence(state, party, money),
        "presence": presence_lines(state, events, party),
        "offer": offer and {"amount": money(offer["amount"]), "version": offer["version"]},
        "last_reason": _last_reason(state) if status == "disputed" else None,
        "can_answer": status == "offer_pending" and offer is not None,
        "answer_note": _answer_note(status),
        "free_seats": free,
        "audience": audience,
        "controls_key": f"{audience}:{'settled' if settled else 'open'}",
        "final": _final(state, events, money, locale) if settled else None,
        "history": [_history_line(e, money, locale) for e in events],
    }


STATUS_LABELS = {
    "awaiting_offer": "Waiting for an offer",
    "offer_pending": "Offer waiting for an answer",
    "disputed": "Disputed",
    "settled": "Settled",
}


def status_sentence(state: dict, party: str | None, money: Any) -> str:
    """The current status in words, from this reader's point of view."""
    status = state.get("status")
    offer = state.get("offer") or {}
    amount = money(offer["amount"]) if offer.get("amount") else ""
    if status == "settled":
        done = state.get("settlement") or {}
        return f"Settled at {money(done.get('amount', offer.get('amount', '0')))}. This is final."
    if status == "offer_pending":
        if party == "A":
            return (
                f"Your offer of {amount} is waiting for Party B's answer. You can still change it."
            )
        if party == "B":
            return f"Party A offers {amount}. Accept it, or dispute it with an optional reason."
        return f"Party A offers {amount}; waiting for Party B's answer."
    if status == "disputed":
        if party == "A":
            return f"Party B disputed your offer of {amount}. Make a new offer."
        if party == "B":
            return f"You disputed {amount}. Waiting for a new offer from Party A."
        return f"Party B disputed {amount}; waiting for a new offer from Party A."
    if party == "A":
        return "Make an offer: type an amount and press Submit."
    return "Waiting for Party A's first offer."


def presence_lines(state: dict, events: list[dict], party: str | None) -> list[str]:
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


def _last_reason(state: dict) -> str | None:
    response = state.get("last_response") or {}
    reason = response.get("reason") if response.get("decision") == "dispute" else None
    return str(reason) if reason else None


def _answer_note(status: str) -> str:
    return {
        "awaiting_offer": "Nothing to answer yet: Party A has not made an offer.",
        "disputed": "You disputed this offer. You can answer again when Party A makes a new one.",
    }.get(status, "")


def _final(state: dict, events: list[dict], money: Any, locale: str) -> dict[str, Any]:
    done = state.get("settlement") or {}
    answers = sum(1 for e in events if e.get("type") in ("disputed", "accepted"))
    offers = sum(1 for e in events if e.get("type") == "proposed")
    return {
        "amount": money(done.get("amount", "0")),
        "currency": done.get("currency", state.get("currency", "")),
        "at": str(done.get("settled_at", "")),
        "at_text": format_time(str(done.get("settled_at", "")), locale),
        "rounds": max(answers, 1),
        "offers": offers or done.get("version", 0),
        "receipt_id": str(done.get("receipt_id", "")),
    }


def _history_line(event: dict, money: Any, locale: str) -> dict[str, Any]:
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
    at = str(event.get("at", ""))
    return {
        "kind": kind,
        "text": text,
        "reason": reason,
        "at": at,
        "at_text": format_time(at, locale),
    }


# --------------------------------------------------------------------------- formatting


def format_amount(amount: str, currency: str, locale: str) -> str:
    """`"1250.50"`, `"USD"` -> `"$1,250.50"` (en_US) or `"1.250,50 $"` (de_DE).

    The fraction digits are exactly those of the protocol's normalised string,
    i.e. ISO 4217's minor unit (not CLDR's, which differs for e.g. IQD).
    """
    try:
        value = Decimal(amount)
    except (InvalidOperation, ValueError):
        return f"{amount} {currency}"
    digits = len(amount.partition(".")[2])
    loc = _locale(locale)
    pattern = copy.copy(parse_pattern(loc.currency_formats["standard"].pattern))
    pattern.frac_prec = (digits, digits)
    return pattern.apply(value, loc, currency=currency, currency_digits=False)


def format_time(iso: str, locale: str) -> str:
    """A protocol timestamp (`2026-11-23T10:15:02.123Z`) for a reader, in UTC."""
    try:
        moment = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except ValueError:
        return iso
    return f"{format_datetime(moment, 'medium', tzinfo=UTC, locale=_locale(locale))} UTC"


def negotiate_locale(accept_language: str | None) -> str:
    """The best Babel locale name for an Accept-Language header (fallback `en_US`)."""
    if not accept_language:
        return DEFAULT_LOCALE
    ranked: list[tuple[float, int, str]] = []
    for index, part in enumerate(accept_language[:500].split(",")[:20]):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key.strip() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        tag = tag.strip()
        if quality > 0 and _LANG_RE.fullmatch(tag):
            ranked.append((-quality, index, tag))
    for _, _, tag in sorted(ranked):
        try:
            return str(_locale_from_tag(tag))
        except (ValueError, UnknownLocaleError):
            continue
    return DEFAULT_LOCALE


def currency_options(locale: str) -> dict[str, list[tuple[str, str]]]:
    """Common currencies first, then every other active ISO 4217 code with a minor unit."""
    codes = _active_codes()
    common = [c for c in COMMON_CURRENCIES if c in codes]
    rest = sorted(codes - set(common))

    def label(code: str) -> str:
        return f"{code} – {_currency_name(code, locale)}"

    return {"common": [(c, label(c)) for c in common], "other": [(c, label(c)) for c in rest]}


@cache
def _active_codes() -> frozenset[str]:
    return frozenset(c.code for c in Currency if c.exponent is not None)


def _exponent(currency: str) -> int:
    for c in Currency:
        if c.code == currency and c.exponent is not None:
            return int(c.exponent)
    return 2


@cache
def _locale(name: str) -> Locale:
    try:
        return Locale.parse(name)
    except (ValueError, UnknownLocaleError):
        return Locale.parse(DEFAULT_LOCALE)


@cache
def _locale_from_tag(tag: str) -> Locale:
    return Locale.parse(tag, sep="-")


def _currency_name(code: str, locale: str) -> str:
    try:
        return str(get_currency_name(code, locale=_locale(locale)))
    except (ValueError, UnknownLocaleError):
        return code


def _lang(locale: str) -> str:
    return locale.replace("_", "-")
