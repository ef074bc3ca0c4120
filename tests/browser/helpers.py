"""Steps a person takes on the pages, located by role and accessible name."""

from __future__ import annotations

import re
from collections.abc import Callable

from playwright.sync_api import Page, expect

ID_IN_URL = re.compile(r"/c/([0-9A-Z]{4}-[0-9A-Z]{4}-[0-9A-Z]{4})$")


def create(page: Page, base_url: str, party: str = "A", currency: str = "USD") -> str:
    """Create a connection from the landing page; returns its id."""
    page.goto(base_url + "/")
    page.get_by_role("radio", name=f"Party {party}", exact=True).check()
    page.get_by_label("Currency", exact=True).select_option(currency)
    page.get_by_role("button", name="Create connection", exact=True).click()
    page.wait_for_url(ID_IN_URL)
    expect(page.get_by_text(f"You are Party {party}", exact=True)).to_be_visible()
    match = ID_IN_URL.search(page.url)
    assert match is not None
    return match.group(1)


def join(page: Page, base_url: str, connection_id: str, party: str = "B") -> None:
    """Join by typing the id on the landing page (the free seat)."""
    page.goto(base_url + "/")
    page.get_by_label("Connection ID", exact=True).fill(connection_id)
    page.get_by_role("button", name="Join", exact=True).click()
    page.wait_for_url(ID_IN_URL)
    expect(page.get_by_text(f"You are Party {party}", exact=True)).to_be_visible()


def seated_pair(open_page: Callable[..., Page], base_url: str) -> tuple[Page, Page, str]:
    """Two browsers: A creates a connection (USD), B joins it from the landing page."""
    a = open_page("A")
    b = open_page("B")
    cid = create(a, base_url)
    join(b, base_url, cid)
    return a, b, cid


def propose(page: Page, amount: str) -> None:
    page.get_by_label("Amount", exact=True).fill(amount)
    page.get_by_role("button", name="Submit", exact=True).click()


def offer_shown(page: Page, text: str) -> None:
    """B's answer form names the offer it answers."""
    expect(page.locator("#respond-offer")).to_contain_text(text)


def status(page: Page):  # noqa: ANN201 - a Locator
    return page.locator("#status")


#: A person reads an amount before answering it; the page refuses an Accept or
#: Dispute within one second of the offer changing (the one-second guard).
READ_MS = 1_100


def answer(page: Page, decision: str) -> None:
    """Press Accept or Dispute as a person would: a second after the offer appeared."""
    page.wait_for_timeout(READ_MS)
    page.get_by_role("button", name=decision, exact=True).click()


def assert_no_axe_violations(page: Page, state: str) -> None:
    """axe-core (shipped inside axe-playwright-python) finds nothing on the page as it is now."""
    from axe_playwright_python.sync_playwright import Axe

    results = Axe().run(page)
    found = [
        f"{v['id']} ({v['impact']}): {v['help']} -> "
        + "; ".join(n["target"][0] if n["target"] else "?" for n in v["nodes"])
        for v in results.response["violations"]
    ]
    assert not found, f"axe-core on {state}:\n" + "\n".join(found)
