"""Protocol 1.1 in Chromium: static/consent.js against the server's own rules, and pages
that sign (two browsers, two tabs of one browser, a reload)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from settlement import consent, money

from .helpers import create, join, offer_shown, propose

pytestmark = pytest.mark.browser

OpenPage = Callable[..., Page]
ROOT = Path(__file__).resolve().parents[2]

AMOUNTS = [
    "1250",
    "1250.5",
    "1250.50",
    "0012.5",
    "0.01",
    "0.001",
    "00.5",
    "1.500",
    "1.005",
    "7",
    "0",
    "000",
    "0.00",
    "",
    ".5",
    "5.",
    "1,250",
    " 12",
    "12 ",
    "+5",
    "-5",
    "1e3",
    "NaN",
    "Infinity",
    "١٢",
    "１２",
    "0x10",
    "0" * 36 + "1.00",
    "0" * 37 + "1.00",
    "1000000000000",
    "999999999999999999999999999999.999",
    "12.3456",
]
CURRENCIES = ["USD", "JPY", "KWD", "CLF", "ISK", "IQD", "EUR"]


def server_rule(raw: str, currency: str) -> str | None:
    """What the server stores for `raw`; None when it refuses it for its form."""
    try:
        value = money.parse_amount(raw, currency, maximum=Decimal("1e60"))
    except money.MoneyError:
        return None
    return money.normalise(value, currency)


def landing(page: Page, url: str) -> Page:
    page.goto(url + "/")
    page.wait_for_function("() => window.SettlementConsent !== undefined")
    return page


def test_js_amount_normaliser_matches_the_server(server, open_page: OpenPage) -> None:
    page = landing(open_page("rules"), server.url)
    cases = [(raw, cur) for cur in CURRENCIES for raw in AMOUNTS]
    got = page.evaluate(
        "(cases) => cases.map(([raw, cur]) => window.SettlementConsent.normaliseAmount(raw, cur))",
        cases,
    )
    expected = [server_rule(raw, cur) for raw, cur in cases]
    assert list(zip(cases, got, strict=True)) == list(zip(cases, expected, strict=True))
    assert got[cases.index(("1250", "JPY"))] == "1250"
    assert got[cases.index(("1250.5", "USD"))] == "1250.50"
    assert got[cases.index(("1.500", "KWD"))] == "1.500"
    # Every currency the server knows has the same minor unit in the page's table.
    codes = money.known_currencies()
    shown = page.evaluate(
        "(codes) => codes.map((c) => window.SettlementConsent.normaliseAmount('1', c))", codes
    )
    assert shown == [money.normalise(Decimal(1), code) for code in codes]
    for bogus in ("XAU", "usd", "DEM", ""):
        assert page.evaluate(f"window.SettlementConsent.normaliseAmount('1', '{bogus}')") is None


STATEMENTS: list[dict[str, Any]] = [
    consent.propose_statement("K7QF-3MZP-XW2D", "USD", "1250.50", 3),
    consent.respond_statement(
        "accept", "K7QF-3MZP-XW2D", "JPY", {"amount": "1250", "version": 2, "hash": "ab" * 32}
    ),
    consent.respond_statement(
        "dispute",
        "K7QF-3MZP-XW2D",
        "KWD",
        {"amount": "1.500", "version": 1, "hash": "cd" * 32},
        'zu hoch "é" \n\t\x01 \u2028 🙂 </script>',
    ),
    consent.respond_statement(
        "dispute", "K7QF-3MZP-XW2D", "KWD", {"amount": "1.500", "version": 1, "hash": "0" * 64}
    ),
]


def test_js_statement_bytes_match_the_server(server, open_page: OpenPage) -> None:
    page = landing(open_page("bytes"), server.url)
    got = page.evaluate(
        "(all) => all.map((s) => Array.from(window.SettlementConsent.statementBytes(s)))",
        STATEMENTS,
    )
    assert [bytes(b) for b in got] == [consent.statement_bytes(s) for s in STATEMENTS]
    assert page.evaluate("window.SettlementConsent.spoken('3f9a0c41b2d7e815')") == (
        "3f9a-0c41-b2d7-e815"
    )


def test_js_signature_verifies_on_the_server_side(server, open_page: OpenPage) -> None:
    page = landing(open_page("sign"), server.url)
    assert page.evaluate("window.SettlementConsent.supported()") is True
    statement = STATEMENTS[2]
    public_key, signature, kid = page.evaluate(
        """async (st) => {
          const c = window.SettlementConsent
          const key = await crypto.subtle.generateKey({name: 'Ed25519'}, false, ['sign'])
          const raw = new Uint8Array(await crypto.subtle.exportKey('raw', key.publicKey))
          const pub = btoa(String.fromCharCode(...raw))
          const sig = new Uint8Array(await crypto.subtle.sign({name: 'Ed25519'}, key.privateKey,
                                                               c.statementBytes(st)))
          return [pub, btoa(String.fromCharCode(...sig)), await c.keyIdOf(pub)]
        }""",
        statement,
    )
    assert consent.verifies(public_key, signature, statement)
    assert kid == consent.key_id(public_key)


def verify(receipt_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "settlement", "verify", str(receipt_path), *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def download_receipt(page: Page, tmp_path: Path) -> Path:
    with page.expect_download() as info:
        page.get_by_role("button", name=re.compile(r"^Download receipt")).click()
    path = tmp_path / "receipt.json"
    path.write_bytes(Path(info.value.path()).read_bytes())
    return path


def fingerprints(page: Page) -> tuple[str, str]:
    panel = page.locator("#consent-keys")
    expect(panel.locator(".consent-me")).to_contain_text("Your key")
    expect(panel.locator(".consent-other")).to_contain_text("'s key:")
    mine = panel.locator(".consent-me").inner_text().split(": ", 1)[1][:19]
    other = panel.locator(".consent-other").inner_text().split(": ", 1)[1][:19]
    return mine, other


def test_two_browsers_sign_and_the_receipt_proves_consent(
    server, open_page: OpenPage, tmp_path: Path
) -> None:
    a = open_page("A")
    b = open_page("B")
    cid = create(a, server.url, "A", "KWD")
    join(b, server.url, cid)
    propose(a, "0012.5")
    offer_shown(b, "12.500")
    a_mine, a_other = fingerprints(a)
    b_mine, b_other = fingerprints(b)
    assert (a_mine, a_other) == (b_other, b_mine)
    expect(a.locator("#consent-keys")).to_contain_text("read your key to the other party")
    a.reload()  # the key survives a reload: A goes on signing
    expect(a.get_by_text("You are Party A", exact=True)).to_be_visible()
    propose(a, "11")
    offer_shown(b, "11.000")
    b.wait_for_timeout(1100)  # a person reads the new amount first
    b.get_by_role("button", name="Accept", exact=True).click()
    for page in (a, b):
        expect(page.locator("#consent-final")).to_have_text(
            "Both statements are signed: Party A signed the offer and Party B signed the acceptance."
        )
    path = download_receipt(b, tmp_path)
    result = verify(path, "--require-consent")
    assert result.returncode == 0, result.stdout + result.stderr
    receipt = json.loads(path.read_text())
    signed = [e["signature"] for e in receipt["events"] if e["type"] in ("proposed", "accepted")]
    assert len(signed) == 3 and all(signed), receipt["events"]
    assert f"key_id {a_mine.replace('-', '')}" in result.stdout
    # The page verifier (static/verify.js) agrees on what the server made.
    v = open_page("verifier")
    v.goto(server.url + "/verify")
    v.get_by_label("Receipt file", exact=True).set_input_files(str(path))
    expect(v.locator("#verdict-line")).to_contain_text("Valid: receipt.json")
    statements = v.locator("#statements li")
    expect(statements).to_have_count(3)
    expect(statements.nth(2)).to_contain_text(f"signed with key {b_mine}")


def test_two_tabs_of_one_seat_both_sign(server, open_page: OpenPage, tmp_path: Path) -> None:
    a = open_page("A")
    a2 = open_page("A, second tab", context=a.context)
    b = open_page("B")
    cid = create(a, server.url, "A", "JPY")
    join(b, server.url, cid)
    # The seat's token: on main it lives in sessionStorage, which a browser's
    # "Duplicate tab" copies; pages that keep seats in persistent storage find
    # it without this. The key itself is in IndexedDB, shared by every tab.
    seat = a.evaluate("JSON.stringify(Object.assign({}, sessionStorage))")
    a2.add_init_script(
        f"(() => {{ const s = {seat}; for (const k in s) sessionStorage.setItem(k, s[k]) }})()"
    )
    a2.goto(f"{server.url}/c/{cid}")
    propose(a, "1000")
    offer_shown(b, "1,000")
    if a2.get_by_role("button", name="Continue as Party A", exact=True).count():
        a2.get_by_role("button", name="Continue as Party A", exact=True).click()
    expect(a2.get_by_text("You are Party A", exact=True)).to_be_visible()
    propose(a2, "900")  # the second tab signs with the same stored key
    offer_shown(b, "900")
    b.wait_for_timeout(1100)
    b.get_by_role("button", name="Accept", exact=True).click()
    expect(a2.locator("#consent-final")).to_contain_text("Both statements are signed")
    result = verify(download_receipt(a2, tmp_path), "--require-consent")
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_browser_without_ed25519_goes_unsigned(
    server, open_page: OpenPage, tmp_path: Path
) -> None:
    a = open_page("A")
    b = open_page("B without Ed25519")
    # As in a browser whose WebCrypto has no Ed25519: generateKey refuses it.
    b.add_init_script(
        """(() => {
          const original = crypto.subtle.generateKey.bind(crypto.subtle)
          crypto.subtle.generateKey = (alg, ...rest) =>
            (alg && (alg === 'Ed25519' || alg.name === 'Ed25519'))
              ? Promise.reject(new DOMException('Unrecognized name', 'NotSupportedError'))
              : original(alg, ...rest)
        })()"""
    )
    cid = create(a, server.url, "A", "USD")
    join(b, server.url, cid)
    expect(b.locator("#consent-keys .consent-me")).to_contain_text(
        "This browser cannot sign (no Ed25519 in WebCrypto): your answers go unsigned."
    )
    propose(a, "5")
    offer_shown(b, "$5.00")
    b.wait_for_timeout(1100)
    b.get_by_role("button", name="Accept", exact=True).click()
    expect(b.locator("#consent-final")).to_contain_text("the acceptance is unsigned")
    path = download_receipt(b, tmp_path)
    assert verify(path).returncode == 0
    result = verify(path, "--require-consent")
    assert result.returncode == 1 and "(accepted)" in result.stdout, result.stdout


def test_cleared_storage_loses_the_key_and_a_rejoin_makes_a_new_one(
    server, open_page: OpenPage, tmp_path: Path
) -> None:
    a = open_page("A")
    b = open_page("B")
    cid = create(a, server.url, "A", "USD")
    join(b, server.url, cid)
    first, _ = fingerprints(a)
    # The browser's site data is cleared (IndexedDB only: the seat token stays).
    a.evaluate(
        """() => new Promise((resolve) => {
          const r = indexedDB.deleteDatabase('settlement-consent')
          r.onsuccess = r.onerror = r.onblocked = () => resolve()
        })"""
    )
    a.reload()
    expect(a.locator("#consent-keys .consent-me")).to_contain_text("this browser does not hold it")
    propose(a, "10")
    expect(a.locator("#controls")).to_contain_text("leave and join again")
    expect(b.locator("#status")).not_to_contain_text("Party A offers")
    a.get_by_role("button", name="Leave", exact=True).click()
    a.wait_for_url(lambda url: "left=" in url)
    join(a, server.url, cid, party="A")
    second, _ = fingerprints(a)
    assert second != first
    expect(b.locator("#consent-keys .consent-other")).to_contain_text(second)
    propose(a, "10")
    offer_shown(b, "$10.00")
    b.wait_for_timeout(1100)
    b.get_by_role("button", name="Accept", exact=True).click()
    expect(b.locator("#consent-final")).to_contain_text("Both statements are signed")
    result = verify(download_receipt(b, tmp_path), "--require-consent")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"key_id {second.replace('-', '')}" in result.stdout
