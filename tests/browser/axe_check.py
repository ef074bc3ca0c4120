"""axe-core in the page: the accessibility rules a page state breaks (none, we hope).

axe-core comes inside the dev requirement axe-playwright-python (as in
tests/browser/helpers.py's `assert_no_axe_violations` on the pages branch); it is
evaluated through the DevTools protocol, which the pages' Content-Security-Policy
does not govern, so the pages are checked as they ship.
"""

from __future__ import annotations

from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Page


def violations(page: Page) -> list[str]:
    """Every axe-core violation of the page as it is now, one line each ([] when clean)."""
    results = Axe().run(page)
    return [
        f"{v['id']} ({v['impact']}): {v['help']} -> "
        + "; ".join(" ".join(n["target"]) for n in v["nodes"])
        for v in results.response["violations"]
    ]
