"""Page-level promises: headers, errors in place, keyboard use, the phone layout."""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from .helpers import READ_MS, answer, create, join, offer_shown, propose, status

pytestmark = pytest.mark.browser

OpenPage = Callable[..., Page]
INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.I)
INLINE_STYLE = re.compile(r"<style\b|\sstyle=", re.I)
INLINE_HANDLER = re.compile(r"<[^>]*\son[a-z]+\s*=", re.I)


def fetch(url: str) -> tuple[int, dict[str, str], str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, dict(r.headers), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode()


def test_pages_have_a_strict_csp_and_no_inline_code(server, open_page: OpenPage) -> None:
    a = open_page("A")
    cid = create(a, server.url)
    propose(a, "12")
    for path, code in [
        ("/", 200),
        (f"/c/{cid}", 200),
        ("/c/ZZZZ-ZZZZ-ZZZZ", 404),
        ("/?left=1", 200),
    ]:
        got, headers, html = fetch(server.url + path)
        assert got == code, path
        csp = headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "style-src 'self'" in csp
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert not INLINE_SCRIPT.search(html), path
        assert not INLINE_STYLE.search(html), path
        assert not INLINE_HANDLER.search(html), path
    open_page.allow("404 (Not Found)")  # type: ignore[attr-defined] - the 404 page itself
    missing = open_page("visitor")
    missing.goto(server.url + "/c/ZZZZ-ZZZZ-ZZZZ")
    expect(missing.get_by_role("heading", name="No such connection")).to_be_visible()


def test_error_acks_show_next_to_the_control(server, open_page: OpenPage) -> None:
    a = open_page("A")
    a.goto(server.url + "/")
    field = a.get_by_label("Connection ID", exact=True)
    field.fill("NOPE-NOPE-NOPE")
    a.get_by_role("button", name="Join", exact=True).click()
    expect(a.locator("#join-error")).not_to_be_empty()
    expect(field).to_have_attribute("aria-describedby", re.compile(r"\bjoin-error\b"))
    assert "/c/" not in a.url

    create(a, server.url, "A", "KWD")
    amount = a.get_by_label("Amount", exact=True)
    expect(a.locator("#amount-hint")).to_contain_text("up to 3 decimals")
    for bad in ["1250,5", "1,25", "12.5000", "-5", ""]:
        amount.fill(bad)
        a.get_by_role("button", name="Submit", exact=True).click()
        expect(a.locator("#propose-error")).not_to_be_empty()
        expect(amount).to_have_value(bad)  # nothing the user typed is lost
    expect(amount).to_have_attribute("aria-describedby", re.compile(r"\bpropose-error\b"))
    amount.fill("12.5")
    a.get_by_role("button", name="Submit", exact=True).click()
    expect(a.locator("#propose-error")).to_be_empty()
    expect(status(a)).to_contain_text("12.500")


def test_keyboard_only(server, open_page: OpenPage) -> None:
    a = open_page("A")
    b = open_page("B")
    a.goto(server.url + "/")

    def tab_to(page: Page, accessible: str) -> None:
        for _ in range(30):
            page.keyboard.press("Tab")
            name = page.evaluate(
                "(() => { const e = document.activeElement;"
                " return (e.labels && e.labels[0] ? e.labels[0].textContent : e.textContent).trim() })()"
            )
            if name == accessible:
                return
        raise AssertionError(f"Tab never reached {accessible!r}")

    tab_to(a, "Party A")
    a.keyboard.press("ArrowRight")  # radio group: arrow keys move the choice
    expect(a.get_by_role("radio", name="Party B", exact=True)).to_be_checked()
    a.keyboard.press("ArrowLeft")
    expect(a.get_by_role("radio", name="Party A", exact=True)).to_be_checked()
    tab_to(a, "Create connection")
    a.keyboard.press("Enter")
    a.wait_for_url(re.compile(r"/c/"))
    cid = a.url.rsplit("/", 1)[1]
    tab_to(a, "Amount")
    a.keyboard.type("80")
    a.keyboard.press("Enter")
    expect(status(a)).to_contain_text("$80.00")

    join(b, server.url, cid)
    offer_shown(b, "$80.00")
    tab_to(b, "Reason")
    b.keyboard.type("Not yet")
    tab_to(b, "Dispute")
    b.wait_for_timeout(READ_MS)
    b.keyboard.press("Enter")
    expect(status(a)).to_contain_text("Not yet")
    a.get_by_label("Amount", exact=True).focus()
    a.keyboard.press("Control+a")
    a.keyboard.type("75")
    a.keyboard.press("Enter")
    offer_shown(b, "$75.00")
    tab_to(b, "Accept")
    b.wait_for_timeout(READ_MS)
    b.keyboard.press("Space")
    expect(b.locator("#final")).to_contain_text("$75.00")


def test_pages_are_english_whatever_the_browser_language(server, open_page: OpenPage) -> None:
    a = open_page("A", locale="de-DE")
    b = open_page("B", locale="en-US")
    a.goto(server.url + "/")
    assert a.evaluate("document.documentElement.lang") == "en"
    cid = create(a, server.url)
    assert a.evaluate("document.documentElement.lang") == "en"
    join(b, server.url, cid)
    # A types the amount the way the page writes it; the preview says what is sent.
    a.get_by_label("Amount", exact=True).fill("1,250.5")
    expect(a.locator("#amount-preview")).to_have_text("Will send 1250.50 USD.")
    a.get_by_role("button", name="Submit", exact=True).click()
    expect(status(a)).to_contain_text("Your offer of $1,250.50 is waiting")
    offer_shown(b, "$1,250.50")
    # A decimal comma is not guessed at: refused on the page, nothing sent.
    amount = a.get_by_label("Amount", exact=True)
    amount.fill("1250,50")
    expect(a.locator("#amount-preview")).to_be_empty()
    a.get_by_role("button", name="Submit", exact=True).click()
    expect(a.locator("#propose-error")).to_contain_text("Commas only go between thousands")
    expect(amount).to_have_attribute("aria-invalid", "true")
    expect(status(a)).to_contain_text("$1,250.50")
    amount.fill("1250.75")
    expect(amount).not_to_have_attribute("aria-invalid", "true")


def test_phone_layout_375px(server, open_page: OpenPage, artifacts: Path) -> None:
    phone = {
        "viewport": {"width": 375, "height": 812},
        "device_scale_factor": 2,
        "is_mobile": True,
        "has_touch": True,
    }
    a = open_page("A", **phone)
    b = open_page("B", **phone)
    a.goto(server.url + "/")
    a.screenshot(path=artifacts / "phone-landing.png", full_page=True)
    cid = create(a, server.url)
    join(b, server.url, cid)
    propose(a, "1250000.75")
    offer_shown(b, "$1,250,000.75")
    b.get_by_label("Reason", exact=True).fill(
        "Please split it into two payments, as agreed on the phone."
    )
    a.screenshot(path=artifacts / "phone-A-offer.png", full_page=True)
    b.screenshot(path=artifacts / "phone-B-answer.png", full_page=True)
    answer(b, "Dispute")
    propose(a, "1200000")
    offer_shown(b, "$1,200,000.00")
    answer(b, "Accept")
    for name, page in (("A", a), ("B", b)):
        expect(page.locator("#final")).to_be_visible()
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 375, f"{name}: page is {width}px wide"
        page.screenshot(path=artifacts / f"phone-final-{name}.png", full_page=True)
