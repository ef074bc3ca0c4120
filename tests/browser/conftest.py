"""Playwright fixtures: one headless Debian Chromium per module (a session-wide sync Playwright loop would break the asyncio tests after it), fresh contexts per test.

The browser is the system's `/usr/bin/chromium` (no Playwright download). Each
context records page errors and console errors (a Content-Security-Policy
violation shows up there), and the test fails if any appeared.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, sync_playwright

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "browser"
CHROMIUM = os.environ.get("SETTLEMENT_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as pw:
        yield pw


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"{CHROMIUM} is missing: apt-get install chromium (the browser tests never skip)"
        )
    browser = playwright.chromium.launch(
        executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
    )
    yield browser
    browser.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


class Problems:
    """Console errors and uncaught page errors seen by a test's pages."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.allowed: list[str] = []

    def watch(self, page: Page, name: str) -> Page:
        page.on("pageerror", lambda exc: self.seen.append(f"{name}: page error: {exc}"))
        page.on(
            "console",
            lambda msg: (
                self.seen.append(f"{name}: console {msg.type}: {msg.text}")
                if msg.type == "error"
                and not _expected(msg.text)
                and not any(a in msg.text for a in self.allowed)
                else None
            ),
        )
        return page


def _expected(text: str) -> bool:
    # Socket.IO logs failed (re)connection attempts while a test has the server down.
    return (
        "socket.io" in text
        or "ERR_CONNECTION_REFUSED" in text
        or "ERR_INTERNET_DISCONNECTED" in text
    )


@pytest.fixture
def open_page(browser: Browser) -> Iterator[Callable[..., Page]]:
    """`open_page(name, context=None, **context_options)`: a watched page (new context unless given)."""
    problems = Problems()
    contexts: list[BrowserContext] = []

    def open_(name: str, context: BrowserContext | None = None, **options: object) -> Page:
        if context is None:
            options.setdefault("locale", "en-US")
            options.setdefault("viewport", {"width": 1100, "height": 900})
            options.setdefault("accept_downloads", True)
            context = browser.new_context(**options)  # type: ignore[arg-type]
            context.set_default_timeout(10_000)
            contexts.append(context)
        return problems.watch(context.new_page(), name)

    open_.allow = problems.allowed.append  # type: ignore[attr-defined]
    yield open_
    seen = list(problems.seen)  # what the test's pages did (leaving them below is not)
    for context in contexts:
        # Leave every page first (its socket and its seat's Web Lock go with it):
        # with Chromium 156, closing a context whose pages were still live now and
        # then never returned (test_seats, a 120 s teardown timeout); this does not.
        for page in context.pages:
            try:
                page.goto("about:blank", timeout=5_000)
            except Exception:  # a crashed or closed page: closing the context ends it
                pass
        context.close()
    assert not seen, "\n".join(seen)
