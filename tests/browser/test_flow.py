"""The negotiation in real browsers: two parties, one server process."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from .helpers import answer, create, join, offer_shown, propose, seated_pair, status

pytestmark = pytest.mark.browser

OpenPage = Callable[..., Page]


def test_whole_flow_create_join_negotiate_settle_leave(
    server, open_page: OpenPage, artifacts: Path
) -> None:
    a = open_page("A")
    b = open_page("B")
    cid = create(a, server.url, "A", "USD")
    expect(a.locator("#presence")).to_contain_text("Party B has not joined yet")

    # B types the id in lower case without hyphens: accepted all the same.
    join(b, server.url, cid.replace("-", "").lower())
    assert b.url.endswith("/c/" + cid)
    expect(b.get_by_text(cid, exact=True)).to_be_visible()
    expect(a.locator("#presence")).to_contain_text("Party B is online")
    expect(b.locator("#presence")).to_contain_text("Party A is online")

    # Only that party's controls.
    expect(a.get_by_role("button", name="Accept", exact=True)).to_have_count(0)
    expect(a.get_by_role("button", name="Dispute", exact=True)).to_have_count(0)
    expect(b.get_by_role("button", name="Submit", exact=True)).to_have_count(0)
    expect(b.get_by_label("Amount", exact=True)).to_have_count(0)
    expect(b.get_by_role("button", name="Accept", exact=True)).to_have_attribute(
        "aria-disabled", "true"
    )

    propose(a, "1250.5")
    expect(status(a)).to_contain_text("Your offer of $1,250.50 is waiting")
    offer_shown(b, "$1,250.50")
    expect(status(b)).to_contain_text("Party A offers $1,250.50")

    propose(a, "1300")  # modify before B answers
    offer_shown(b, "$1,300.00")
    expect(b.locator("#respond-offer")).to_contain_text("version 2")

    b.get_by_label("Reason", exact=True).fill("Too high for two days of work")
    answer(b, "Dispute")
    expect(status(a)).to_contain_text("Party B disputed your offer of $1,300.00")
    expect(status(a)).to_contain_text("Too high for two days of work")
    expect(b.get_by_label("Reason", exact=True)).to_have_value("")
    expect(b.get_by_role("button", name="Accept", exact=True)).to_have_attribute(
        "aria-disabled", "true"
    )

    propose(a, "1275.25")
    offer_shown(b, "$1,275.25")
    expect(b.get_by_role("button", name="Accept", exact=True)).not_to_have_attribute(
        "aria-disabled", "true"
    )
    answer(b, "Accept")

    for page in (a, b):
        final = page.locator("#final")
        expect(final).to_be_visible()
        expect(final).to_contain_text("$1,275.25")
        expect(final).to_contain_text("USD")
        expect(final).to_contain_text("UTC")
        expect(final.locator(".rounds")).to_have_text("2: Party B disputed once, then accepted")
        expect(final.locator(".offers")).to_have_text("3 from Party A; version 3 was accepted")
        expect(final.locator(".receipt-id")).to_have_text(re.compile(r"^[0-9a-f]{64}$"))
        expect(page.get_by_role("button", name="Submit", exact=True)).to_have_count(0)
        expect(page.get_by_role("button", name="Accept", exact=True)).to_have_count(0)
    history = a.locator("#history li")
    expect(history).to_have_count(7)  # created, joined, 3 proposed, disputed, accepted
    a.screenshot(path=artifacts / "desktop-final-A.png", full_page=True)
    b.screenshot(path=artifacts / "desktop-final-B.png", full_page=True)

    receipt_id = a.locator(".receipt-id").inner_text()
    with a.expect_download() as info:
        a.get_by_role("button", name="Download receipt (JSON, for machines)", exact=True).click()
    receipt = json.loads(Path(info.value.path()).read_text())
    assert info.value.suggested_filename == f"receipt-{cid}.json"
    assert receipt["receipt_id"] == receipt_id
    assert receipt["amount"] == "1275.25" and receipt["currency"] == "USD"

    for page in (a, b):
        page.get_by_role("button", name="Leave", exact=True).click()
        page.wait_for_url(re.compile(r"/\?left="))
        expect(
            page.get_by_role("status").filter(has_text="You left the connection")
        ).to_be_visible()
        expect(page.get_by_role("button", name="Create connection", exact=True)).to_be_visible()


def test_two_tabs_of_one_browser_are_a_and_b(server, open_page: OpenPage, artifacts: Path) -> None:
    a = open_page("tab A")
    b = open_page("tab B", context=a.context)
    cid = create(a, server.url, "A", "EUR")
    b.goto(f"{server.url}/c/{cid}")  # the invite link
    expect(b.get_by_text("You have no seat in this connection")).to_be_visible()
    b.screenshot(path=artifacts / "desktop-invite-join-offer.png", full_page=True)
    b.get_by_role("button", name="Join as Party B", exact=True).click()
    expect(b.get_by_text("You are Party B", exact=True)).to_be_visible()
    expect(a.get_by_text("You are Party A", exact=True)).to_be_visible()
    propose(a, "99.99")
    offer_shown(b, "€99.99")
    answer(b, "Accept")
    expect(a.locator("#final")).to_contain_text("€99.99")
    expect(b.locator("#final")).to_contain_text("€99.99")


def test_reload_keeps_the_seat(server, open_page: OpenPage) -> None:
    a = open_page("A")
    b = open_page("B")
    cid = create(a, server.url, "B", "JPY")  # the creator may be B
    join(b, server.url, cid, party="A")
    propose(b, "1250")
    offer_shown(a, "¥1,250")
    a.reload()
    expect(a.get_by_text("You are Party B", exact=True)).to_be_visible()
    offer_shown(a, "¥1,250")
    b.reload()
    expect(b.get_by_text("You are Party A", exact=True)).to_be_visible()
    expect(status(b)).to_contain_text("Your offer of ¥1,250 is waiting")
    expect(b.get_by_role("button", name="Join as Party A", exact=True)).to_be_hidden()


def test_update_while_b_types_keeps_the_text_and_focus(server, open_page: OpenPage) -> None:
    a, b, cid = seated_pair(open_page, server.url)
    propose(a, "500")
    offer_shown(b, "$500.00")
    reason = b.get_by_label("Reason", exact=True)
    reason.click()
    b.keyboard.type("Half now and half")
    propose(a, "450")  # arrives while B is typing
    offer_shown(b, "$450.00")
    expect(reason).to_have_value("Half now and half")
    assert b.evaluate("document.activeElement.id") == "reason"
    b.keyboard.type(" later")
    expect(reason).to_have_value("Half now and half later")
    # A's half-typed amount survives B's answer too.
    a.get_by_label("Amount", exact=True).fill("44")
    a.get_by_label("Amount", exact=True).focus()
    answer(b, "Dispute")
    expect(status(a)).to_contain_text("Half now and half later")
    expect(a.get_by_label("Amount", exact=True)).to_have_value("44")
    assert a.evaluate("document.activeElement.id") == "amount"


def test_stale_answer_shows_b_the_new_amount(server, open_page: OpenPage) -> None:
    a, b, cid = seated_pair(open_page, server.url)
    propose(a, "100")
    offer_shown(b, "version 1")
    propose(a, "120")
    offer_shown(b, "$120.00")
    # B's answer to version 1 racing A's change to version 2: B's click left before
    # the new version arrived (simulated by putting the old version back).
    b.evaluate("document.querySelector('#respond-offer input[name=version]').value = '1'")
    answer(b, "Accept")
    error = b.locator("#respond-error")
    expect(error).to_contain_text("$120.00")  # written as the page writes amounts
    expect(error).to_contain_text("not recorded")
    expect(error).not_to_contain_text("USD")
    expect(a.locator("#final")).to_be_hidden()
    expect(status(a)).to_contain_text("Your offer of $120.00 is waiting")


@pytest.mark.parametrize(
    "reason",
    ["<script>window.__xss = 1</script>", '<img src=x onerror="window.__xss = 2">'],
    ids=["script", "img-onerror"],
)
def test_markup_in_a_reason_is_shown_as_text(server, open_page: OpenPage, reason: str) -> None:
    a, b, cid = seated_pair(open_page, server.url)
    propose(a, "10")
    offer_shown(b, "$10.00")
    b.get_by_label("Reason", exact=True).fill(reason)
    answer(b, "Dispute")
    for page in (a, b):
        expect(page.locator("#history q.reason")).to_have_text(reason)
        assert page.locator("#history img, #status img, #history script").count() == 0
        assert page.evaluate("window.__xss") is None
    expect(a.locator("#status q.reason")).to_have_text(reason)
    a.reload()
    expect(a.locator("#history q.reason")).to_have_text(reason)
    assert a.evaluate("window.__xss") is None


def test_dropped_link_reconnects_and_redraws_from_the_log(
    server, open_page: OpenPage, artifacts: Path
) -> None:
    a, b, cid = seated_pair(open_page, server.url)
    propose(a, "700")
    offer_shown(b, "$700.00")
    server.kill()
    for page in (a, b):
        expect(page.locator("#conn-notice")).to_contain_text("Reconnecting")
    b.context.set_offline(True)  # B stays away while A changes the offer
    server.start()
    expect(a.locator("#conn-notice")).to_be_hidden(timeout=15_000)
    propose(a, "650")
    expect(a.locator("#propose-error")).to_be_empty()
    expect(status(a)).to_contain_text("$650.00")
    expect(b.locator("#conn-notice")).to_be_visible()
    b.screenshot(path=artifacts / "desktop-B-reconnecting.png")
    b.context.set_offline(False)
    expect(b.locator("#conn-notice")).to_be_hidden(timeout=15_000)
    offer_shown(b, "$650.00")  # never broadcast to B: redrawn from the stored log
    expect(b.get_by_text("You are Party B", exact=True)).to_be_visible()


def test_leave_in_one_tab_drops_the_seat_in_its_other_tab(server, open_page: OpenPage) -> None:
    a = open_page("A")
    cid = create(a, server.url)
    twin = open_page("A again", context=a.context)
    twin.goto(f"{server.url}/c/{cid}")  # A's tab is open: this tab asks
    twin.get_by_role("button", name="Continue as Party A", exact=True).click()
    expect(twin.get_by_text("You are Party A", exact=True)).to_be_visible()
    a.get_by_role("button", name="Leave", exact=True).click()
    a.wait_for_url(re.compile(r"/\?left="))
    expect(twin.get_by_text("You have no seat in this connection")).to_be_visible()
    expect(twin.get_by_role("button", name="Join as Party A", exact=True)).to_be_visible()
    twin.reload()  # the browser forgot the seat: no Continue, the join offer
    expect(twin.get_by_role("button", name="Join as Party A", exact=True)).to_be_visible()
    expect(twin.get_by_role("button", name="Continue as Party A", exact=True)).to_be_hidden()
    twin.get_by_role("button", name="Join as Party A", exact=True).click()
    expect(twin.get_by_text("You are Party A", exact=True)).to_be_visible()


def test_invite_page_follows_the_room_live_before_joining(server, open_page: OpenPage) -> None:
    a = open_page("A")
    visitor = open_page("visitor")
    cid = create(a, server.url, "A", "USD")
    visitor.goto(f"{server.url}/c/{cid}")
    expect(visitor.get_by_text("You have no seat in this connection")).to_be_visible()
    propose(a, "12.34")  # no reload: the page hears of it, in words only
    expect(status(visitor)).to_contain_text("Party A has made an offer")
    expect(visitor.locator("main")).not_to_contain_text("12.34")
    visitor.get_by_role("button", name="Join as Party B", exact=True).click()
    expect(visitor.get_by_text("You are Party B", exact=True)).to_be_visible()
    offer_shown(visitor, "$12.34")
    expect(visitor.locator("#history")).to_contain_text("$12.34")
    expect(a.locator("#presence")).to_contain_text("online")
