"""A store outage in a real browser: the 503 page says so and reloads by itself."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.conftest import ServerProcess
from tests.pg import PgUrl

from .helpers import create, propose, status

pytestmark = pytest.mark.browser

OpenPage = Callable[..., Page]


def test_the_unavailable_page_retries_by_itself_until_postgres_is_back(
    tmp_path: Path, pg_database: PgUrl, open_page: OpenPage
) -> None:
    server = ServerProcess(tmp_path, database_url=str(pg_database))
    server.start()
    try:
        a = open_page("A")
        cid = create(a, server.url)
        a.close()
        server.restart()  # the room is no longer in the node's memory
        pg_database.stop_postgres("immediate")
        open_page.allow("503 (Service Unavailable)")  # type: ignore[attr-defined]
        visitor = open_page("visitor")
        response = visitor.goto(f"{server.url}/c/{cid}")
        assert response is not None and response.status == 503
        assert int(response.headers["retry-after"]) >= 1
        expect(visitor).to_have_title(re.compile("Briefly unavailable"))
        expect(visitor.get_by_role("heading", name="Briefly unavailable")).to_be_visible()
        expect(visitor.get_by_role("status")).to_contain_text("tries again by itself")
        expect(visitor.get_by_role("link", name="Try again now")).to_be_visible()
        pg_database.start_postgres()
        # No click, no reload from the test: the page's own refresh brings the room.
        expect(visitor.get_by_text(cid, exact=True).first).to_be_visible(timeout=20_000)
        expect(visitor.get_by_role("heading", name="Briefly unavailable")).to_have_count(0)
    finally:
        server.stop()
    assert "Traceback" not in server.log(), server.log()[-4000:]


def test_a_tab_reloaded_during_an_outage_says_so_and_takes_its_seat_back_by_itself(
    tmp_path: Path, pg_database: PgUrl, open_page: OpenPage
) -> None:
    server = ServerProcess(tmp_path, database_url=str(pg_database))
    server.start()
    try:
        a = open_page("A")
        create(a, server.url)
        pg_database.stop_postgres("immediate")
        # The room is in the node's memory, so the page is shown; its socket's
        # resume needs the store and is refused `unavailable`.
        a.reload()
        notice = a.locator("#conn-notice")
        expect(notice).to_contain_text("briefly unavailable")
        expect(a.get_by_text("You are Party A", exact=True)).to_have_count(0)
        pg_database.start_postgres()
        # No reload from the test: the page connects again and is seated again.
        expect(a.get_by_text("You are Party A", exact=True)).to_be_visible(timeout=20_000)
        expect(notice).to_be_hidden()
        propose(a, "12")
        expect(status(a)).to_contain_text("$12.00")
    finally:
        server.stop()
    log = server.log()
    assert "Traceback" not in log, log[-4000:]
    assert '"connect_unavailable"' not in log  # the resume's refusal is the service's own
