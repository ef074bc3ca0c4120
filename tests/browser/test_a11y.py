"""Focus, refusals a screen reader hears, pasted ids, and axe-core on every page state.

`test_tour_of_page_states` also saves screenshots at 375 px and 1280 px wide to
`test-artifacts/browser/states/` (or `$SETTLEMENT_SHOTS`), to look at.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from .helpers import (
    answer,
    assert_no_axe_violations,
    create,
    join,
    offer_shown,
    propose,
    status,
)

pytestmark = pytest.mark.browser

OpenPage = Callable[..., Page]


def focused_id(page: Page) -> str:
    return str(page.evaluate("document.activeElement && document.activeElement.id"))


def wait_focus(page: Page, element_id: str) -> None:
    page.wait_for_function(f"() => document.activeElement.id === {element_id!r}")


def test_focus_moves_to_the_new_heading_after_join_and_settlement(
    server, open_page: OpenPage
) -> None:
    a = open_page("A")
    b = open_page("B")
    cid = create(a, server.url)
    wait_focus(a, "controls-h")  # after Create: "Your offer"
    join(b, server.url, cid)  # from the landing page
    wait_focus(b, "controls-h")
    expect(b.locator("#controls-h")).to_have_text("Your answer")

    visitor = open_page("C")
    cid2 = create(visitor, server.url)
    c = open_page("joins from the invite link")
    c.goto(f"{server.url}/c/{cid2}")
    c.get_by_role("button", name="Join as Party B", exact=True).click()
    wait_focus(c, "controls-h")

    propose(a, "80")
    offer_shown(b, "$80.00")
    answer(b, "Accept")
    for page in (a, b):
        wait_focus(page, "final-h")
        expect(page.locator("#final-h")).to_have_text("Final agreement")
        page.keyboard.press("Tab")  # the receipt is the next stop, not six Tabs away
        assert focused_id(page) == "receipt-link"
    # "Settled" is said once: the status badge; the status sentence says who
    # accepted and the final screen is headed "Final agreement".
    expect(status(a)).to_have_text(
        re.compile(r"^\s*Status: Settled\s+Party B accepted \$80\.00\.\s*$")
    )
    expect(a.locator("#final")).not_to_contain_text("Settled")


def test_refusals_are_marked_and_explained(server, open_page: OpenPage) -> None:
    a = open_page("A")
    b = open_page("B")
    a.goto(server.url + "/")
    field = a.get_by_label("Connection ID", exact=True)
    join_button = a.get_by_role("button", name="Join", exact=True)
    for typed, says in [
        ("", "Type or paste a Connection ID"),
        ("K7QF-3MZ", "this one has 7"),
        ("K7QF-3MZP-XW2D-9", "this one has 13"),
    ]:
        field.fill(typed)
        join_button.click()
        expect(a.locator("#join-error")).to_contain_text(says)
        expect(a.locator("#join-error")).to_contain_text(
            "12 letters and digits, for example K7QF-3MZP-XW2D"
        )
        expect(field).to_have_attribute("aria-invalid", "true")
    assert_no_axe_violations(a, "the landing page with a refused id")
    field.fill("ZZZZ-ZZZZ-ZZZZ")  # well formed, names no room: the server says not_found
    join_button.click()
    expect(a.locator("#join-error")).to_contain_text("No connection has the id ZZZZ-ZZZZ-ZZZZ")
    expect(field).to_have_attribute("aria-invalid", "true")
    field.press("End")
    field.type("Z")
    expect(field).not_to_have_attribute("aria-invalid", "true")

    cid = create(a, server.url)
    amount = a.get_by_label("Amount", exact=True)
    amount.fill("0")
    a.get_by_role("button", name="Submit", exact=True).click()
    expect(a.locator("#propose-error")).not_to_be_empty()
    expect(amount).to_have_attribute("aria-invalid", "true")
    assert_no_axe_violations(a, "a refused amount")
    amount.fill("12")
    a.get_by_role("button", name="Submit", exact=True).click()
    expect(a.locator("#propose-error")).to_be_empty()
    expect(amount).not_to_have_attribute("aria-invalid", "true")

    # A disabled-looking button says why it did nothing.
    join(b, server.url, cid)
    offer_shown(b, "$12.00")
    b.get_by_label("Reason", exact=True).fill("too high")
    answer(b, "Dispute")
    expect(b.locator("#respond-error")).to_be_empty()
    expect(b.locator("#announce")).to_have_text("You disputed: too high")  # it was applied
    b.get_by_role("button", name="Accept", exact=True).click(force=True)  # aria-disabled
    expect(b.locator("#respond-error")).to_have_text(
        "Accept is not available: you disputed this offer; wait for Party A's new one."
    )
    # A hears what changed, not the whole status again.
    expect(a.locator("#announce")).to_have_text("Party B disputed: too high")
    expect(b.locator("#announce")).to_have_text("You disputed: too high")


def test_pasted_ids_with_spaces_are_accepted(server, open_page: OpenPage) -> None:
    a = open_page("A")
    b = open_page("B")
    cid = create(a, server.url)
    spaced = " " + cid.replace("-", " ").lower() + "\t"
    join(b, server.url, spaced)
    assert b.url.endswith("/c/" + cid)
    visitor = open_page("visitor")
    visitor.goto(f"{server.url}/c/{cid.replace('-', '%20')}")  # a spaced id in the address
    expect(visitor.get_by_text("You have no seat in this connection")).to_be_visible()
    expect(visitor.get_by_role("button", name="Join as Party B", exact=True)).to_have_count(0)
    expect(visitor.get_by_role("heading", level=1)).to_have_text(f"Connection {cid}")


def test_invite_card_shows_only_while_a_seat_is_free(server, open_page: OpenPage) -> None:
    a = open_page("A")
    b = open_page("B")
    cid = create(a, server.url)
    invite = a.get_by_label("Invite link", exact=True)
    expect(invite).to_have_value(f"{server.url}/c/{cid}")
    join(b, server.url, cid)
    expect(a.locator("#invite")).to_be_hidden()
    expect(b.locator("#invite")).to_be_hidden()
    b.get_by_role("button", name="Leave", exact=True).click()
    b.wait_for_url(re.compile(r"/\?left="))
    expect(invite).to_have_value(f"{server.url}/c/{cid}")  # B's seat is free again
    join(b, server.url, cid)
    expect(a.locator("#invite")).to_be_hidden()


def test_an_error_from_an_outage_clears_after_recovery(server, open_page: OpenPage) -> None:
    a = open_page("A")
    create(a, server.url)
    server.kill()
    expect(a.locator("#conn-notice")).to_contain_text("Reconnecting")
    propose(a, "40")
    expect(a.locator("#propose-error")).to_contain_text("connection to the server is down")
    server.start()
    expect(a.locator("#conn-notice")).to_be_hidden(timeout=15_000)
    expect(a.locator("#propose-error")).to_be_empty()
    propose(a, "40")
    expect(status(a)).to_contain_text("$40.00")


SHOT_WIDTHS = {"phone": (375, 812), "desktop": (1280, 900)}


@pytest.mark.parametrize("device", sorted(SHOT_WIDTHS))
def test_tour_of_page_states(server, open_page: OpenPage, artifacts: Path, device: str) -> None:
    """Every main page state: zero axe-core violations, and a screenshot to look at."""
    width, height = SHOT_WIDTHS[device]
    folder = Path(os.environ.get("SETTLEMENT_SHOTS") or artifacts / "states")
    folder.mkdir(parents=True, exist_ok=True)
    options = {"viewport": {"width": width, "height": height}}
    if device == "phone":
        options.update(device_scale_factor=2, is_mobile=True, has_touch=True)

    def shot(page: Page, name: str) -> None:
        assert_no_axe_violations(page, f"{name} ({device})")
        page.screenshot(path=folder / f"{device}-{name}.png", full_page=True)
        scroll = page.evaluate("document.documentElement.scrollWidth")
        assert scroll <= width, f"{name}: {scroll}px wide at {width}px"

    a = open_page("A", **options)
    b = open_page("B", **options)
    a.goto(server.url + "/")
    shot(a, "landing")
    a.get_by_label("Connection ID", exact=True).fill("K7QF-3MZ")
    a.get_by_role("button", name="Join", exact=True).click()
    expect(a.locator("#join-error")).to_contain_text("this one has 7")
    shot(a, "landing-refused-id")
    cid = create(a, server.url)
    shot(a, "a-alone-invite")
    visitor = open_page("visitor", **options)
    visitor.goto(f"{server.url}/c/{cid}")
    expect(visitor.get_by_role("button", name="Join as Party B", exact=True)).to_be_visible()
    shot(visitor, "visitor-seat-free")
    join(b, server.url, cid)
    b.get_by_label("Reason", exact=True).click()
    b.get_by_role("button", name="Accept", exact=True).click(force=True)  # nothing to answer yet
    expect(b.locator("#respond-error")).to_contain_text("Party A has not made an offer yet.")
    shot(b, "b-nothing-to-answer")
    a.get_by_label("Amount", exact=True).fill("1,250.5")
    shot(a, "a-typing-with-preview")
    a.get_by_role("button", name="Submit", exact=True).click()
    offer_shown(b, "$1,250.50")
    b.wait_for_timeout(1_100)
    propose(a, "5000")
    offer_shown(b, "$5,000.00")
    b.get_by_role("button", name="Accept", exact=True).click()
    expect(b.locator("#respond-error")).to_contain_text("changed from")
    shot(b, "b-guard")
    b.get_by_label("Reason", exact=True).fill("Too high: we agreed on 1,200 on the phone.")
    answer(b, "Dispute")
    expect(status(a)).to_contain_text("disputed")
    shot(a, "a-disputed")
    expect(visitor.get_by_text("Both seats are taken.")).to_be_visible()
    shot(visitor, "visitor-both-taken")
    twin = open_page("second tab", context=a.context)
    twin.goto(f"{server.url}/c/{cid}")
    expect(twin.get_by_role("button", name="Continue as Party A", exact=True)).to_be_visible()
    shot(twin, "second-tab-choice")
    twin.close()
    propose(a, "1200")
    offer_shown(b, "$1,200.00")
    answer(b, "Accept")
    expect(a.locator("#final")).to_be_visible()
    shot(a, "a-final")
    shot(b, "b-final")
    expect(status(visitor)).to_contain_text("Both parties agreed")
    shot(visitor, "visitor-settled")
    a.get_by_role("button", name="Leave", exact=True).click()
    a.wait_for_url(re.compile(r"/\?left="))
    shot(a, "left")
