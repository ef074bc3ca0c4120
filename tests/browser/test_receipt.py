"""The readable receipt page, the negotiation timeline, and the in-browser verifier.

Real server, real Chromium; receipts come from rooms settled through the pages (and,
for party signatures, which today's server does not record, from receipts built by
hand with real Ed25519 keys and signed with the test server's own key).
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import re
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from playwright.sync_api import Page, Request, expect

from settlement import ledger
from settlement.signing import Signer
from tests.signed_receipts import key_id, reseal, signed_receipt, statement_signature

from .axe_check import violations
from .helpers import create, join, offer_shown, propose

pytestmark = pytest.mark.browser

OpenPage = Callable[..., Page]
SHOTS = Path("/tmp/shots-receipt")
REASON = 'Too high — «zu teuer», "quotes" & <b>tags</b>'


def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SHOTS / f"{name}.png", full_page=True)


def answer(page: Page, button: str) -> None:
    """Press Accept or Dispute as a person would: a second after the offer appeared."""
    page.wait_for_timeout(1100)
    page.get_by_role("button", name=button, exact=True).click()


def settle(open_page: OpenPage, base: str) -> tuple[Page, Page, str]:
    """A offers 400, B disputes with a reason, A offers 450 then 425, B accepts 425."""
    a, b = open_page("A"), open_page("B")
    cid = create(a, base, "A", "USD")
    join(b, base, cid)
    propose(a, "400")
    offer_shown(b, "$400.00")
    b.get_by_label("Reason", exact=True).fill(REASON)
    answer(b, "Dispute")
    expect(a.locator("#status")).to_contain_text("disputed")
    propose(a, "450")
    offer_shown(b, "$450.00")
    propose(a, "425")
    offer_shown(b, "$425.00")
    answer(b, "Accept")
    expect(a.locator("#final")).to_be_visible()
    expect(b.locator("#final")).to_be_visible()
    return a, b, cid


def get(url: str, token: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def consent_of(receipt: dict[str, Any]) -> tuple[list[str], list[str]]:
    """What the receipt page must say of each party: the fingerprint of its seat's key at
    its deciding statement (A's agreed offer, B's acceptance) and whether it is signed."""
    events = receipt["events"]
    keys, signed = [], []
    for party, kind, what in (
        ("A", "proposed", "the agreed offer"),
        ("B", "accepted", "the acceptance"),
    ):
        at = max(i for i, e in enumerate(events) if e["type"] == kind)
        seat = [
            e for e in events[:at] if e["party"] == party and e["type"] in ("created", "joined")
        ]
        key = seat[-1].get("public_key") if seat else None
        if key:
            kid = hashlib.sha256(base64.b64decode(key)).hexdigest()[:16]
            keys.append("-".join(kid[i : i + 4] for i in range(0, 16, 4)))
        else:
            keys.append("no key")
        event = events[at]
        signed.append(
            f"Signed {what} (version {event['version']})"
            if event.get("signature")
            else "Not signed"
        )
    return keys, signed


def download_json(page: Page, name: str) -> dict[str, Any]:
    with page.expect_download() as info:
        page.get_by_role("button", name="Download receipt (JSON, for machines)", exact=True).click()
    assert info.value.suggested_filename.startswith("receipt-")
    return dict(json.loads(Path(info.value.path()).read_text()))


def test_receipt_page_for_parties_and_timeline(server, open_page: OpenPage) -> None:
    a, b, cid = settle(open_page, server.url)

    # The negotiation page draws the timeline for the seated party.
    steps = a.locator("#timeline ol.timeline > li")
    expect(steps).to_have_count(5)  # 3 offers, the dispute, the acceptance
    expect(steps.nth(1)).to_contain_text(REASON)
    expect(steps.nth(2)).to_contain_text("Replaced before Party B answered.")
    expect(steps.nth(4)).to_contain_text("Party B accepted version 3: $425.00. Settled.")
    expect(a.locator("#timeline svg.tl-bar")).to_have_count(3)
    expect(b.locator("#timeline ol.timeline > li")).to_have_count(5)
    assert violations(a) == []
    for width in (375, 1280):
        a.set_viewport_size({"width": width, "height": 900})
        shot(a, f"negotiation-timeline-{width}")

    # The final screen keeps the JSON download, labelled for machines, and links the page.
    receipt = download_json(a, "A")
    assert receipt["amount"] == "425.00"
    short = receipt["receipt_id"][:12]
    a.get_by_role("link", name="Readable receipt (to print or save)").click()
    a.wait_for_url(re.compile(r"/c/" + cid + "/receipt$"))
    page = a.locator("#receipt")
    expect(page).to_be_visible()
    expect(a.locator("#receipt-title")).to_have_text("Settled at $425.00")
    expect(a.locator("#receipt-title")).to_be_focused()
    expect(page).to_contain_text("Exactly 425.00 USD (US Dollar)")
    expect(page.locator(".short-id")).to_have_text(f"{short[:4]}-{short[4:8]}-{short[8:]}")
    expect(page.locator(".receipt-id")).to_have_text(receipt["receipt_id"])
    # Today's pages hold no party keys ("no key", "Not signed"); signing pages (1.1) do.
    keys, signed = consent_of(receipt)
    expect(page.locator(".party-key")).to_have_text([f"Key: {k}" for k in keys])
    expect(page.locator(".party-signed")).to_have_text(signed)
    expect(page.locator("time").first).to_contain_text("UTC")
    expect(page.locator("ol.timeline > li")).to_have_count(5)
    expect(page.locator("ol.timeline q.reason")).to_have_text(REASON)
    assert a.locator("ol.timeline b").count() == 0  # the reason is text, never markup
    assert violations(a) == []
    # The JSON download is on the receipt page too, and it is the same receipt.
    assert download_json(a, "A again") == receipt
    expect(
        a.locator(".receipt-actions").get_by_role("link", name="Verify a receipt")
    ).to_have_attribute("href", "/verify")

    for width in (375, 1280):
        a.set_viewport_size({"width": width, "height": 900})
        shot(a, f"receipt-{width}")
    a.emulate_media(media="print")
    expect(a.locator("header.site")).to_be_hidden()
    expect(a.get_by_role("button", name="Print")).to_be_hidden()
    shot(a, "receipt-print")
    a.emulate_media(media="screen")

    # The id in any case, without hyphens: the same receipt (same tab, same seat).
    a.goto(f"{server.url}/c/{cid.replace('-', '').lower()}/receipt")
    expect(a.locator("#receipt-title")).to_have_text("Settled at $425.00")

    # B's browser sees it too.
    b.goto(f"{server.url}/c/{cid}/receipt")
    expect(b.locator("#receipt-title")).to_have_text("Settled at $425.00")


def test_receipt_is_not_shown_to_a_visitor_with_the_link(server, open_page: OpenPage) -> None:
    a, _b, cid = settle(open_page, server.url)
    visitor = open_page("visitor")
    visitor.goto(f"{server.url}/c/{cid}/receipt")
    expect(visitor.get_by_role("heading", name="For the parties only")).to_be_visible()
    html = visitor.content()
    assert "425" not in html and "Settled at" not in html
    assert violations(visitor) == []
    visitor.set_viewport_size({"width": 375, "height": 700})
    shot(visitor, "receipt-visitor-375")
    # Nor on the negotiation page: no timeline for a visitor.
    visitor.goto(f"{server.url}/c/{cid}")
    expect(visitor.locator("#timeline")).to_be_hidden()
    expect(visitor.locator("#timeline li")).to_have_count(0)
    assert "425" not in visitor.locator("#timeline").inner_html()

    # The fragment route wants a current seat token, exactly like the JSON route.
    status, body = get(f"{server.url}/c/{cid}/receipt/fragment")
    assert status == 401 and "425" not in body
    status, body = get(f"{server.url}/c/{cid}/receipt/fragment", "not-a-token")
    assert status == 401 and "425" not in body
    status, _ = get(f"{server.url}/c/ZZZZ-ZZZZ-ZZZZ/receipt")
    assert status == 404
    status, _ = get(f"{server.url}/c/ZZZZ-ZZZZ-ZZZZ/receipt/fragment", "x")
    assert status == 404
    open_page.allow("404 (Not Found)")  # type: ignore[attr-defined]
    open_page.allow("401 (Unauthorized)")  # type: ignore[attr-defined]
    token = a.evaluate(
        """(id) => { for (const s of [localStorage, sessionStorage]) for (let i = 0; i < s.length; i++) {
              const k = s.key(i); if (k.startsWith('settlement') && k.includes(id)) {
                try { const v = JSON.parse(s.getItem(k)); if (v && v.token) return v.token } catch (e) {} } }
            return null }""",
        cid,
    )
    assert token
    status, body = get(f"{server.url}/c/{cid}/receipt/fragment", token)
    assert status == 200 and "$425.00" in body


def test_receipt_page_of_an_open_room_says_not_settled(server, open_page: OpenPage) -> None:
    a = open_page("A")
    cid = create(a, server.url)
    propose(a, "12")
    a.goto(f"{server.url}/c/{cid}/receipt")
    open_page.allow("409 (Conflict)")  # type: ignore[attr-defined]
    expect(a.get_by_role("heading", name="Not settled yet")).to_be_visible()
    assert "12.00" not in a.content()
    assert violations(a) == []


# --------------------------------------------------------------------------- verifier


def requests_of(page: Page) -> list[Request]:
    seen: list[Request] = []
    page.on("request", lambda request: seen.append(request))
    return seen


def verify_file(page: Page, tmp_path: Path, name: str, content: object) -> None:
    path = tmp_path / name
    text = content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)
    path.write_text(text, encoding="utf-8")
    page.get_by_label("Receipt file", exact=True).set_input_files(str(path))
    expect(page.locator("#verdict")).to_be_visible()
    expect(page.locator("#verdict-line")).to_contain_text(name)


def verdict(page: Page) -> str:
    return page.locator("#verdict").inner_text()


def test_verifier_checks_a_genuine_receipt_and_refuses_tampered_ones(
    server, open_page: OpenPage, tmp_path: Path
) -> None:
    a, _b, cid = settle(open_page, server.url)
    receipt = download_json(a, "A")
    a.goto(server.url + "/")
    expect(a.get_by_role("link", name="Verify a receipt")).to_have_attribute("href", "/verify")
    # A page of its own, so the request log holds only what the verifier sends.
    v = open_page("verifier", context=a.context)
    seen = requests_of(v)
    v.goto(server.url + "/verify")

    verify_file(v, tmp_path, "genuine.json", receipt)
    expect(v.locator("#verdict-line")).to_contain_text(
        f"Valid: genuine.json is receipt {receipt['receipt_id'][:12]} for 425.00 USD"
    )
    expect(v.locator(".check-pass")).to_have_count(5)
    expect(v.locator("#verdict-h")).to_be_focused()
    expect(v.locator("#statements li")).to_have_count(5)
    expect(v.locator("#statements li").first).to_contain_text("Party A's offer, version 1: ")
    assert violations(v) == []
    for width in (375, 1280):
        v.set_viewport_size({"width": width, "height": 900})
        shot(v, f"verify-good-{width}")

    edited = copy.deepcopy(receipt)
    edited["amount"] = "4250.00"
    verify_file(v, tmp_path, "edited-amount.json", edited)
    expect(v.locator("#verdict-line")).to_have_text("Not valid: edited-amount.json was refused.")
    expect(v.locator("#verdict-fault")).to_have_text(
        "First fault: receipt amount 4250.00 does not match the accepted event's 425.00."
    )
    expect(v.locator(".check-pass")).to_have_count(2)
    expect(v.locator(".check-unchecked")).to_have_count(2)
    assert violations(v) == []
    shot(v, "verify-bad-1280")
    v.set_viewport_size({"width": 375, "height": 900})
    shot(v, "verify-bad-375")

    in_event = copy.deepcopy(receipt)
    in_event["events"][-1]["amount"] = "4250.00"
    in_event["amount"] = "4250.00"
    verify_file(v, tmp_path, "edited-event.json", in_event)
    expect(v.locator("#verdict-fault")).to_contain_text(
        f"event seq {len(receipt['events'])} (accepted): hash does not match its contents"
    )

    dropped = copy.deepcopy(receipt)
    del dropped["events"][3]
    verify_file(v, tmp_path, "dropped.json", dropped)
    expect(v.locator("#verdict-fault")).to_have_text("First fault: event with seq 4 is missing.")

    forged = copy.deepcopy(receipt)
    value = forged["signature"]["value"]
    forged["signature"]["value"] = ("B" if value[0] == "A" else "A") + value[1:]
    verify_file(v, tmp_path, "bad-signature.json", forged)
    expect(v.locator("#verdict-fault")).to_have_text(f"First fault: {ledger.SIGNATURE_MISMATCH}.")
    expect(v.locator(".check-fail .check-name")).to_have_text("Server's signature")

    verify_file(v, tmp_path, "not-json.json", '{"amount": 1.0,')
    expect(v.locator("#verdict-fault")).to_contain_text("the file is not valid JSON")

    # Dropping the file on the box works as choosing it does.
    v.evaluate(
        """(text) => {
            const data = new DataTransfer()
            data.items.add(new File([text], 'dropped-on-box.json', {type: 'application/json'}))
            document.getElementById('dropzone').dispatchEvent(
                new DragEvent('drop', {dataTransfer: data, bubbles: true, cancelable: true}))
        }""",
        json.dumps(receipt),
    )
    expect(v.locator("#verdict-line")).to_contain_text("Valid: dropped-on-box.json")

    # Nothing was sent anywhere: the page fetched its own files and /api/keys, by GET.
    assert seen, "the request recorder saw nothing"
    for request in seen:
        assert request.method == "GET", (request.method, request.url)
        assert not request.post_data, request.url
        path = re.sub(r"^https?://[^/]+", "", request.url)
        assert path in ("/verify", "/api/keys") or path.startswith("/static/"), path
        assert receipt["receipt_id"] not in request.url
    assert any(r.url.endswith("/api/keys") for r in seen)
    assert cid


def test_verifier_checks_party_signatures(server, open_page: OpenPage, tmp_path: Path) -> None:
    """A 1.1 receipt with both parties' signatures, signed with this server's own key."""
    signer = Signer.from_pem(
        (server.folder / "settlement.db.keys" / "receipt-signing.pem").read_bytes()
    )
    key_a, key_b = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    receipt = signed_receipt(signer, key_a, key_b)
    v = open_page("verifier")
    seen = requests_of(v)
    v.goto(server.url + "/verify")
    verify_file(v, tmp_path, "signed.json", receipt)
    expect(v.locator("#verdict-line")).to_contain_text("Valid: signed.json")
    statements = v.locator("#statements li")
    expect(statements).to_have_count(4)
    expect(statements.nth(0)).to_contain_text("Party A's offer, version 1: signed with key ")
    expect(statements.nth(1)).to_contain_text("Party B's dispute of version 1: signed with key ")
    expect(statements.nth(3)).to_contain_text("Party B's acceptance of version 2: signed with key ")
    expect(v.locator(".check-pass")).to_have_count(5)

    # B's acceptance signed by another key: the chain and the server signature are
    # made good again, so only the party signature is wrong.
    events = [dict(e) for e in receipt["events"]]
    accepted = events[-1]
    offer = events[-2]
    statement = {
        "type": "accepted",
        "connection_id": accepted["connection_id"],
        "currency": "EUR",
        "amount": offer["amount"],
        "version": offer["version"],
        "offer_hash": offer["hash"],
    }
    accepted["signature"] = statement_signature(Ed25519PrivateKey.generate(), statement)
    bad = signer.sign_receipt(ledger.build_receipt(reseal(events)))
    fault = (
        f"event seq 6 (accepted): Party B's signature does not verify with key "
        f"{key_id(key_b)} (the statement was altered or not signed by that seat)"
    )
    verify_file(v, tmp_path, "bad-party-signature.json", bad)
    expect(v.locator("#verdict-fault")).to_have_text(f"First fault: {fault}.")
    # The offline verifier says the same (where it checks party signatures: 1.1).
    assert ledger.verify_receipt(bad, {signer.key_id: signer.public_key_raw}) in (None, fault)

    # A signature from a seat that had no key.
    events = [dict(e) for e in receipt["events"]]
    events[0]["public_key"] = None
    no_key = signer.sign_receipt(ledger.build_receipt(reseal(events)))
    fault = "event seq 3 (proposed) is signed, but Party A's seat had no key"
    verify_file(v, tmp_path, "no-key.json", no_key)
    expect(v.locator("#verdict-fault")).to_have_text(f"First fault: {fault}.")
    assert ledger.verify_receipt(no_key) in (None, fault)
    assert all(r.method == "GET" and not r.post_data for r in seen)


TRICKY = [
    '{"reason": "zu teuer – «Preis» ünd 日本語 😀", "b": 1, "a": null}',
    '{"q": "say \\"no\\" \\\\ back\\\\slash / sol\\/idus", "ctl": "\\u0001\\u001f\\b\\f\\n\\r\\t\\u007f"}',
    '{"n": [9007199254740991, -9007199254740991, 0, -0, 10, 1000000]}',
    '{"\\ue000": 1, "\\ud83d\\ude00": 2, "z": 3, "A": 4, "é": 5, "": 6}',
    '{"line": "\\u2028\\u2029", "nested": {"y": [1, {"b": [], "a": {}}], "x": "x"}}',
    '{"big": 9007199254740992}',
    '{"big": -123456789012345678901234567890}',
    '{"lone": "\\ud800"}',
    '{"f": 1.5}',
    '{"t": true}',
    '["list", "top", 1, null]',
    '"just a string with \\u00e9"',
]


def test_js_canonical_json_matches_the_ledger(server, open_page: OpenPage) -> None:
    page = open_page("canonical")
    page.goto(server.url + "/verify")
    for text in TRICKY:
        try:
            expected: str | None = ledger.canonical_json(json.loads(text)).decode("utf-8")
        except (TypeError, ValueError):
            expected = None
        got = page.evaluate(
            """(t) => { try { return SettlementVerify.canonical(SettlementVerify.parseJson(t)) }
                        catch (e) { if (e instanceof SyntaxError) throw e; return null } }""",
            text,
        )
        assert got == expected, text
    # And the hash of a real event, byte for byte.
    event = ledger.seal(
        {"connection_id": "K7QF-3MZP-XW2D", "seq": 1, "type": "disputed", "party": "B",
         "at": "2026-11-23T10:00:00.000Z", "version": 1, "reason": REASON},
        ledger.GENESIS_HASH,
    )  # fmt: skip
    got_hash = page.evaluate(
        """async (t) => {
            const e = SettlementVerify.parseJson(t)
            const r = await SettlementVerify.verifyText(JSON.stringify({}), null)
            const u = Object.assign({}, e); delete u.hash
            const bytes = new TextEncoder().encode(e.prev_hash + SettlementVerify.canonical(u))
            return Array.from(new Uint8Array(await crypto.subtle.digest('SHA-256', bytes)),
                (b) => b.toString(16).padStart(2, '0')).join('') + (r ? '' : '!')
        }""",
        json.dumps(event, ensure_ascii=False),
    )
    assert got_hash == event["hash"]


def test_verifier_says_what_it_could_not_check(server, open_page: OpenPage, tmp_path: Path) -> None:
    """No keys from the server (the request fails), or no Ed25519 in this browser's
    WebCrypto (simulated): the chain and fields are still checked, and the page says
    which signatures it could not check instead of calling the receipt valid."""
    signer = Signer.from_pem(
        (server.folder / "settlement.db.keys" / "receipt-signing.pem").read_bytes()
    )
    receipt = signed_receipt(signer, Ed25519PrivateKey.generate(), None)

    offline = open_page("no keys")
    offline.route("**/api/keys", lambda route: route.abort())
    open_page.allow("ERR_FAILED")  # type: ignore[attr-defined] - the refused /api/keys
    offline.goto(server.url + "/verify")
    expect(offline.locator("#keys-note")).to_contain_text("could not be fetched")
    verify_file(offline, tmp_path, "signed.json", receipt)
    expect(offline.locator("#verdict-line")).to_contain_text("not every signature could be checked")
    expect(offline.locator(".check-skipped .check-name")).to_have_text("Server's signature")
    expect(offline.locator(".check-pass")).to_have_count(4)  # party signatures still checked

    old = open_page("no Ed25519")
    old.add_init_script(
        """{ const real = crypto.subtle.importKey.bind(crypto.subtle)
             crypto.subtle.importKey = (format, data, alg, ...rest) =>
               (alg && alg.name === 'Ed25519') ? Promise.reject(new DOMException('no', 'NotSupportedError'))
                 : real(format, data, alg, ...rest) }"""
    )
    old.goto(server.url + "/verify")
    verify_file(old, tmp_path, "signed.json", receipt)
    expect(old.locator("#verdict-line")).to_contain_text("not every signature could be checked")
    expect(old.locator("#verdict-fault")).to_contain_text("cannot check Ed25519 signatures")
    expect(old.locator(".check-skipped")).to_have_count(2)
    expect(old.locator(".check-pass")).to_have_count(3)
    assert violations(old) == []
