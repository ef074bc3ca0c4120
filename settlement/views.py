"""Browser pages and the HTML fragments the server pushes to them.

The negotiation page is rendered for nobody in particular (the seat token lives
only in the browser's storage); the socket then resumes the seat and the
server sends `render_fragments(...)` for that party, which the page swaps in by
element id (htmx out-of-band swaps, see `static/app.js` and `docs/browser.md`).
A reader without a seat (`party=None`: the invite link, a visitor) is shown
whether a seat is free and the status in words, never amounts, reasons or the
history.

The pages' text is English, so they are `lang="en"` and amounts are written the
English way (`$1,250.50`) whatever the browser's language.

Everything here is pure formatting: a state snapshot and the event log in, HTML
out. Amounts stay `Decimal` from the protocol's exact strings, never floats.
"""

from __future__ import annotations

import copy
import functools
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
from settlement import page_text as text

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = ROOT / "templates"
STATIC = ROOT / "static"
DEFAULT_LOCALE = "en_US"
#: The languages the pages' text is written in, by language subtag. Only English
#: today; a translation would add its catalogue and an entry here.
PAGE_LOCALES = {"en": "en_US"}

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
    context.update(lang=_lang(locale), page="negotiation", oob=False)
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


def render_fragments(
    state: dict[str, Any], events: list[dict[str, Any]], party: str | None, locale: str
) -> str:
    """The out-of-band fragments that bring a negotiation page up to date for `party`.

    Pure and synchronous: the server calls it once per audience per change.
    """
    context = view_model(state, events, party, locale)
    context["oob"] = True
    context["timeline"] = _timeline(state, events, party, locale)
    return _ENV.get_template("fragments/all.html").render(context)


def _timeline(
    state: dict[str, Any], events: list[dict[str, Any]], party: str | None, locale: str
) -> Any:
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


def view_model(
    state: dict[str, Any], events: list[dict[str, Any]], party: str | None, locale: str
) -> dict[str, Any]:
    """Everything the page and fragment templates show, already in words.

    `party=None` is a reader without a seat: no amount, reason or history.
    """
    currency = str(state.get("currency") or "USD")
    other = {"A": "B", "B": "A"}.get(party or "")
    status = str(state.get("status") or "awaiting_offer")
    settled = status == "settled"

    def money(amount: object) -> str:
        return format_amount(str(amount), currency, locale)

    offer = state.get("offer") if party else None
    parties = state.get("parties") or {}
    free = [p for p in ("A", "B") if not (parties.get(p) or {}).get("seated")]
    audience = party or "none"
    exponent = _exponent(currency)
    show_invite = bool(party) and not settled and bool(free)
    return {
        "connection_id": state.get("connection_id", ""),
        "seq": int(state.get("seq") or 0),
        "party": party,
        "other": other,
        "currency": currency,
        "currency_name": _currency_name(currency, locale),
        "exponent": exponent,
        "amount_example": _example("1,250", exponent),
        "amount_plain": _example("1250", exponent),
        "status": status,
        "status_label": text.STATUS_LABELS.get(status, status),
        "status_text": text.status_sentence(state, party, money),
        "presence": text.presence_lines(state, events, party),
        "offer": offer and {"amount": money(offer["amount"]), "version": offer["version"]},
        "last_reason": text.last_reason(state) if party and status == "disputed" else None,
        "can_answer": status == "offer_pending" and offer is not None,
        "answer_note": text.answer_note(status),
        "disabled_reason": text.disabled_reason(status),
        "free_seats": free,
        "audience": audience,
        # A visitor's join offer lists the free seats, so its key names them.
        "controls_key": f"{audience}:{'settled' if settled else 'open'}"
        + ("" if party else ":" + "".join(free)),
        "show_invite": show_invite,
        "invite_path": f"/c/{state.get('connection_id', '')}",
        "final": _final(state, events, money, locale) if settled and party else None,
        "history": [_history_line(e, money, locale) for e in events] if party else None,
        "announce": text.announcement(events, party, money),
    }


def _example(whole: str, exponent: int) -> str:
    return whole + ("." + "50".ljust(exponent, "0") if exponent else "")


def _final(
    state: dict[str, Any], events: list[dict[str, Any]], money: Any, locale: str
) -> dict[str, Any]:
    facts = text.final_facts(state, events, money)
    facts["at_text"] = format_time(facts["at"], locale)
    return facts


def _history_line(event: dict[str, Any], money: Any, locale: str) -> dict[str, Any]:
    line = text.history_line(event, money)
    line["at_text"] = format_time(line["at"], locale)
    return line


# --------------------------------------------------------------------------- formatting


# Every change re-renders the page's history and timeline, one line per event:
# Babel formats an amount in ~0.3 ms and a time in ~0.25 ms, so a room with 500
# offers took 430 ms of the event loop per command. Both are pure, so they are
# remembered (the next render of that room: the new line only).
@functools.lru_cache(maxsize=65_536)
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
    return str(pattern.apply(value, loc, currency=currency, currency_digits=False))


@functools.lru_cache(maxsize=65_536)
def format_time(iso: str, locale: str) -> str:
    """A protocol timestamp (`2026-11-23T10:15:02.123Z`) for a reader, in UTC."""
    try:
        moment = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except ValueError:
        return iso
    return f"{format_datetime(moment, 'medium', tzinfo=UTC, locale=_locale(locale))} UTC"


def negotiate_locale(accept_language: str | None) -> str:
    """The Babel locale the pages use for an Accept-Language header.

    The pages' text exists in English only, so every reader gets `en_US`
    (`lang="en"`, `$1,250.50`) whatever the browser's language: a German
    browser is not shown German number formats inside English sentences. The
    header is still read, so that a translation only needs an entry in
    `PAGE_LOCALES`.
    """
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
            ranked.append((-quality, index, tag.split("-")[0].lower()))
    for _, _, language in sorted(ranked):
        if language in PAGE_LOCALES:
            return PAGE_LOCALES[language]
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


def _currency_name(code: str, locale: str) -> str:
    try:
        return str(get_currency_name(code, locale=_locale(locale)))
    except (ValueError, UnknownLocaleError):
        return code


def _lang(locale: str) -> str:
    """The page's `lang`: the language of its text (`en`), not a region."""
    return locale.partition("_")[0]
