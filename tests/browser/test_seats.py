"""Browser pages, version 1.1: seats that outlive a tab, the one-second guard, visitors."""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from .helpers import (
    READ_MS,
    answer,
    assert_no_axe_violations,
    create,
    join,
    offer_shown,
    propose,
    seated_pair,
    status,
)

pytestmark = pytest.mark.browser

OpenPage = Callable[..., Page]


def you_are(page: Page, party: str) -> None:
    expect(page.get_by_text(f"You are Party {party}", exact=True)).to_be_visible()


def continue_button(page: Page, party: str):  # noqa: ANN201 - a Locator
    return page.get_by_role("button", name=f"Continue as Party {party}", exact=True)


def test_a_new_tab_returns_to_the_seat(server, open_page: OpenPage) -> None:
    a, b, cid = seated_pair(open_page, server.url)
    stored = a.evaluate(f"localStorage.getItem('settlement:seat:{cid}:A')")
    assert json.loads(stored)["token"].startswith("st_")
    a_browser, b_browser = a.context, b.context
    a.close()  # closing the tab does not lose the seat
    expect(b.locator("#presence")).to_contain_text("Party A is offline; their seat is kept")

    again = open_page("A, new tab", context=a_browser)
    again.goto(f"{server.url}/c/{cid}")
    you_are(again, "A")
    expect(continue_button(again, "A")).to_be_hidden()
    expect(b.locator("#presence")).to_contain_text("Party A is online")
    propose(again, "250")
    offer_shown(b, "$250.00")

    b.close()
    b_again = open_page("B, new tab", context=b_browser)
    b_again.goto(f"{server.url}/c/{cid}")
    you_are(b_again, "B")
    offer_shown(b_again, "$250.00")
    answer(b_again, "Accept")
    expect(again.locator("#final")).to_contain_text("$250.00")
    # The receipt, which needs a seat token, comes from a tab that did not take the seat.
    with b_again.expect_download() as info:
        b_again.get_by_role(
            "button", name="Download receipt (JSON, for machines)", exact=True
        ).click()
    assert json.loads(Path(info.value.path()).read_text())["amount"] == "250.00"


def test_a_browser_holding_both_seats_asks_which_to_continue(server, open_page: OpenPage) -> None:
    first = open_page("tab 1")
    context = first.context
    cid = create(first, server.url)
    second = open_page("tab 2", context=context)
    second.goto(f"{server.url}/c/{cid}")
    # A's seat is open in tab 1: this tab may continue as A too, or take B.
    expect(continue_button(second, "A")).to_be_visible()
    expect(continue_button(second, "B")).to_be_hidden()
    second.get_by_role("button", name="Join as Party B", exact=True).click()
    you_are(second, "B")
    you_are(first, "A")

    third = open_page("tab 3", context=context)
    third.goto(f"{server.url}/c/{cid}")
    expect(continue_button(third, "A")).to_be_visible()
    expect(continue_button(third, "B")).to_be_visible()
    expect(third.locator("#seat-choice")).to_contain_text("holds both seats")
    expect(third.get_by_text("You have no seat in this connection")).to_be_visible()
    assert_no_axe_violations(third, "the seat choice")
    continue_button(third, "B").click()
    you_are(third, "B")
    expect(third.locator("#seat-choice")).to_be_hidden()
    third.wait_for_function("() => document.activeElement.id === 'controls-h'")

    first.close()
    second.close()
    fourth = open_page("tab 4", context=context)
    fourth.goto(f"{server.url}/c/{cid}")  # both seats held, both tabs closed: still ask
    expect(continue_button(fourth, "A")).to_be_visible()
    expect(continue_button(fourth, "B")).to_be_visible()
    continue_button(fourth, "A").click()
    you_are(fourth, "A")
    fourth.reload()  # a reload keeps the tab's choice
    you_are(fourth, "A")

    third.get_by_role("button", name="Leave", exact=True).click()  # forgets B here
    third.wait_for_url(re.compile(r"/\?left="))
    fourth.close()
    fifth = open_page("tab 5", context=context)
    fifth.goto(f"{server.url}/c/{cid}")  # only A is held now, and no tab has it open
    you_are(fifth, "A")
    assert fifth.evaluate(f"localStorage.getItem('settlement:seat:{cid}:B')") is None


@pytest.mark.parametrize("decision", ["Accept", "Dispute"])
def test_an_offer_changed_under_the_cursor_is_not_answered(
    server, open_page: OpenPage, decision: str
) -> None:
    a, b, cid = seated_pair(open_page, server.url)
    propose(a, "390")
    offer_shown(b, "$390.00")
    b.wait_for_timeout(READ_MS)
    propose(a, "5000")
    offer_shown(b, "$5,000.00")
    b.get_by_role("button", name=decision, exact=True).click()  # at once: not read yet
    error = b.locator("#respond-error")
    expect(error).to_contain_text("changed from $390.00 to $5,000.00")
    expect(error).to_contain_text("Not sent")
    expect(b.locator("#respond-offer .offer-change mark")).to_have_text("$5,000.00")
    expect(b.locator("#respond-offer .offer-change del")).to_have_text("$390.00")
    assert_no_axe_violations(b, "the one-second guard")
    a.wait_for_timeout(500)
    expect(status(a)).to_contain_text("Your offer of $5,000.00 is waiting")  # nothing was sent
    expect(a.locator("#history li")).to_have_count(4)

    answer(b, decision)  # a second later, the same press goes through
    if decision == "Accept":
        expect(a.locator("#final")).to_contain_text("$5,000.00")
    else:
        expect(status(a)).to_contain_text("Party B disputed your offer of $5,000.00")
        expect(error).to_be_empty()


def test_a_visitor_sees_the_status_and_free_seats_but_no_amounts(
    server, open_page: OpenPage
) -> None:
    a = open_page("A")
    b = open_page("B")
    cid = create(a, server.url)
    visitor = open_page("visitor")
    visitor.goto(f"{server.url}/c/{cid}")
    expect(visitor.get_by_role("button", name="Join as Party B", exact=True)).to_be_visible()
    join(b, server.url, cid)
    propose(a, "1234.56")
    offer_shown(b, "$1,234.56")
    b.get_by_label("Reason", exact=True).fill("Secret reason XYZZY")
    answer(b, "Dispute")
    expect(status(visitor)).to_contain_text("Party B disputed the offer")
    expect(visitor.get_by_text("Both seats are taken.")).to_be_visible()
    expect(visitor.get_by_role("button", name="Join as Party B", exact=True)).to_have_count(0)
    expect(visitor.locator("#history")).to_have_text(
        "The history is shown only to the two parties."
    )
    assert_no_axe_violations(visitor, "the visitor's page")

    def leaks(html: str) -> list[str]:
        return [w for w in ("1,234", "1234", "XYZZY", "$") if w in html]

    assert leaks(visitor.content()) == []
    with urllib.request.urlopen(f"{server.url}/c/{cid}", timeout=5) as r:
        assert leaks(r.read().decode()) == []  # a fresh page, server-rendered
    propose(a, "1200")
    offer_shown(b, "$1,200.00")
    expect(status(visitor)).to_contain_text("Party A has made an offer")
    answer(b, "Accept")
    expect(status(visitor)).to_contain_text("Both parties agreed")
    expect(visitor.locator("#final")).to_be_hidden()
    assert leaks(visitor.content()) == []
    expect(a.locator("#final")).to_contain_text("$1,200.00")


def test_a_stored_seat_that_was_left_elsewhere_is_forgotten(server, open_page: OpenPage) -> None:
    a = open_page("A")
    cid = create(a, server.url)
    token = json.loads(a.evaluate(f"localStorage.getItem('settlement:seat:{cid}:A')"))["token"]
    other = open_page("another browser")
    other.goto(server.url + "/")
    other.evaluate(
        "([k, v]) => localStorage.setItem(k, v)",
        [f"settlement:seat:{cid}:A", json.dumps({"token": token, "party": "A"})],
    )
    other.goto(f"{server.url}/c/{cid}")
    you_are(other, "A")
    a.get_by_role("button", name="Leave", exact=True).click()
    expect(other.get_by_role("button", name="Join as Party A", exact=True)).to_be_visible()
    assert other.evaluate(f"localStorage.getItem('settlement:seat:{cid}:A')") is None
