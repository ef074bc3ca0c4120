"""axe-core in the page: the accessibility rules a page state breaks (none, we hope).

axe-core is vendored for the tests only (`tests/browser/vendor/axe.min.js`, version and
licence in static/VENDORED.md). It is evaluated through the DevTools protocol, which
the pages' Content-Security-Policy does not govern, so the pages stay as they ship.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from playwright.sync_api import Page

AXE = Path(__file__).resolve().parent / "vendor" / "axe.min.js"


@cache
def _source() -> str:
    return AXE.read_text(encoding="utf-8")


def violations(page: Page) -> list[str]:
    """Every axe-core violation of the page as it is now, one line each ([] when clean)."""
    if not page.evaluate("() => typeof window.axe === 'object'"):
        page.evaluate(_source())
    found = page.evaluate(
        """async () => {
            const result = await window.axe.run(document, {resultTypes: ['violations']})
            return result.violations.map((v) => `${v.id} (${v.impact}): ${v.help} at ` +
                v.nodes.map((n) => n.target.join(' ')).join(', '))
        }"""
    )
    return list(found)
