"""The readable receipt, the in-browser verifier page, and the negotiation timeline.

`GET /c/{id}/receipt` is a shell that shows no amounts: the receipt is for the
parties only, and the server cannot tell who opened a link. The page's script
(`static/receipt.js`) takes the seat token this browser holds for the
connection and fetches `GET /c/{id}/receipt/fragment` with
`Authorization: Bearer <token>`, which the server answers exactly as the JSON
receipt route (404, 401, 409) or with the receipt drawn as HTML. `GET /verify`
checks a receipt file in the browser (`static/verify.js`), with no upload.

Everything here formats; the receipt itself comes from `Service.http_receipt`.
Amounts stay the protocol's exact strings (`Decimal` where arithmetic is needed).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import Any

import aiohttp_jinja2
import jinja2
from aiohttp import web
from babel.numbers import get_currency_name

from settlement import appkeys, timeline, views
from settlement.ids import normalise_connection_id

#: The receipt and verifier pages are written in English, so they format in English.
LOCALE = "en_US"
LANG = "en"
PARTIES = ("A", "B")

_ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(views.TEMPLATES),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def setup(app: web.Application) -> None:
    """The receipt page, its parties-only fragment, and the verifier page."""
    app.router.add_get("/c/{connection_id}/receipt", receipt_page, name="receipt")
    app.router.add_get("/c/{connection_id}/receipt/fragment", receipt_fragment)
    app.router.add_get("/verify", verify_page, name="verify")


# --------------------------------------------------------------------------- routes


def _no_store(response: web.Response) -> web.Response:
    response.headers["Cache-Control"] = "no-store"
    return response


async def receipt_page(request: web.Request) -> web.Response:
    """The shell: the connection id and a note for visitors, never an amount."""
    raw = request.match_info["connection_id"]
    room = await request.app[appkeys.SERVICE].page_room(raw)
    if room is None:
        context = {"lang": LANG, "page": "not_found", "connection_id": raw[:40]}
        return _no_store(
            aiohttp_jinja2.render_template("not_found.html", request, context, status=404)
        )
    context = {"lang": LANG, "page": "receipt", "connection_id": room.state["connection_id"]}
    return _no_store(aiohttp_jinja2.render_template("receipt.html", request, context))


async def receipt_fragment(request: web.Request) -> web.Response:
    """The readable receipt for a bearer of a current seat token; else why not."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    bearer = token.strip() if scheme.lower() == "bearer" else ""
    status, body = await request.app[appkeys.SERVICE].http_receipt(
        request.match_info["connection_id"], bearer or None
    )
    if status == 200:
        html = _ENV.get_template("receipt_body.html").render(receipt_model(body))
    else:
        code = str((body.get("error") or {}).get("code", ""))
        cid = normalise_connection_id(request.match_info["connection_id"]) or ""
        html = _ENV.get_template("receipt_refused.html").render(
            code=code, status=status, connection_id=cid
        )
    response = web.Response(text=html, status=status, content_type="text/html")
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="settlement"'
    return _no_store(response)


async def verify_page(request: web.Request) -> web.Response:
    context = {"lang": LANG, "page": "verify"}
    return _no_store(aiohttp_jinja2.render_template("verify.html", request, context))


# --------------------------------------------------------------------------- fingerprints


def fingerprint(public_key_b64: object) -> str | None:
    """`key_id` of a base64 raw 32-byte key in four groups (`3f9a-0c41-b2d7-e815`); None
    when there is no usable key."""
    if not isinstance(public_key_b64, str):
        return None
    try:
        raw = base64.b64decode(public_key_b64, validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(raw) != 32:
        return None
    return group_key_id(hashlib.sha256(raw).hexdigest()[:16])


def group_key_id(key_id: str) -> str:
    """`3f9a0c41b2d7e815` -> `3f9a-0c41-b2d7-e815`, for reading aloud."""
    return "-".join(key_id[i : i + 4] for i in range(0, len(key_id), 4))


def seat_key_at(events: list[dict[str, Any]], index: int, party: str) -> object:
    """The `public_key` of `party`'s seat as it was at `events[index]`: that of its last
    `created`/`joined` event before it (None when there is none or it had no key)."""
    for event in reversed(events[:index]):
        if event.get("party") == party and event.get("type") in ("created", "joined"):
            return event.get("public_key")
    return None


# --------------------------------------------------------------------------- models


def _last_index(events: list[dict[str, Any]], kind: str) -> int | None:
    for index in range(len(events) - 1, -1, -1):
        if events[index].get("type") == kind:
            return index
    return None


def party_consent(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """For each party: the key fingerprint of its seat at its deciding statement (A's agreed
    offer, B's acceptance) and whether that statement carries a signature."""
    deciding = {"A": _last_index(events, "proposed"), "B": _last_index(events, "accepted")}
    what = {"A": "the agreed offer", "B": "the acceptance"}
    consent = {}
    for party in PARTIES:
        index = deciding[party]
        event = events[index] if index is not None else {}
        key = seat_key_at(events, index, party) if index is not None else None
        signature = event.get("signature")
        consent[party] = {
            "fingerprint": fingerprint(key),
            "signed": isinstance(signature, str) and bool(signature),
            "what": what[party],
            "version": event.get("version"),
        }
    return consent


def receipt_model(receipt: dict[str, Any]) -> dict[str, Any]:
    """Everything the readable receipt shows, in words, from the receipt object."""
    currency = str(receipt.get("currency", ""))
    amount = str(receipt.get("amount", ""))
    events = [e for e in receipt.get("events") or [] if isinstance(e, dict)]
    signature = receipt.get("signature") or {}
    receipt_id = str(receipt.get("receipt_id", ""))
    settled_at = str(receipt.get("settled_at", ""))
    offers = sum(1 for e in events if e.get("type") == "proposed")
    answers = sum(1 for e in events if e.get("type") in ("disputed", "accepted"))
    return {
        "connection_id": str(receipt.get("connection_id", "")),
        "amount_text": views.format_amount(amount, currency, LOCALE),
        "amount": amount,
        "currency": currency,
        "currency_name": _currency_name(currency),
        "settled_at": settled_at,
        "settled_at_text": views.format_time(settled_at, LOCALE),
        "receipt_id": receipt_id,
        "short_id": group_key_id(receipt_id[:12]),
        "version": receipt.get("version"),
        "offers": offers,
        "answers": answers,
        "parties": party_consent(events),
        "server_key": group_key_id(str(signature.get("key_id", ""))) or None,
        "timeline": timeline.timeline(
            events,
            lambda amount: views.format_amount(amount, currency, LOCALE),
            lambda at: views.format_time(at, LOCALE),
        ),
    }


def _currency_name(code: str) -> str:
    try:
        return str(get_currency_name(code, locale=LOCALE))
    except ValueError:
        return code
