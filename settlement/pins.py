"""The library versions `settlement/compat/` is written against: the pins in requirements.txt.

`settlement/compat/` overrides private hooks of python-socketio and
python-engineio and reads private attributes of them and of aiohttp; those
change between releases without notice. Importing `settlement.compat` calls
`check_versions()`, which refuses any other installed version with
`UnpinnedLibrary` (app.py turns it into an exit with the message).

`SETTLEMENT_ALLOW_UNPINNED=1` turns the refusal into a warning on stderr: for
trying a new release, after `pytest tests/unit/test_compat.py` has named the
hooks that moved. This module lives outside `compat/` so that app.py can catch
the exception without importing the package that raises it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from importlib import metadata

PINNED: dict[str, str] = {
    "python-socketio": "5.18.1",
    "python-engineio": "4.15.1",
    "aiohttp": "3.14.5",
}
ALLOW_UNPINNED = "SETTLEMENT_ALLOW_UNPINNED"

Mismatch = tuple[str, str | None, str]  # (package, installed or None, expected)


class UnpinnedLibrary(RuntimeError):
    """An installed python-socketio, python-engineio or aiohttp is not the pinned version."""

    def __init__(self, mismatches: list[Mismatch]) -> None:
        self.mismatches = mismatches
        super().__init__(describe(mismatches))


def describe(mismatches: list[Mismatch]) -> str:
    lines = []
    for name, installed, expected in mismatches:
        found = f"{installed} is installed" if installed else "is not installed"
        lines.append(f"{name} {found}, but settlement needs exactly {name}=={expected}.")
    lines.append(
        "settlement/compat/ relies on private hooks of these libraries, checked only "
        "for the pinned versions. Install the pins: pip install -r requirements.txt. "
        "To move a pin: install the new version, run pytest tests/unit/test_compat.py, "
        "adapt settlement/compat/, then update requirements.txt and settlement/pins.py. "
        f"{ALLOW_UNPINNED}=1 starts anyway (a warning, no guarantee)."
    )
    return "\n".join(lines)


def installed_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in PINNED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def check_versions(
    installed: Mapping[str, str | None] | None = None,
    environ: Mapping[str, str] | None = None,
) -> list[Mismatch]:
    """Raise `UnpinnedLibrary` unless every pinned package is installed at its pin.

    With `SETTLEMENT_ALLOW_UNPINNED=1` in `environ` (default `os.environ`) log a
    warning instead and return the mismatches. `installed` defaults to what
    `importlib.metadata` reports.
    """
    versions = installed_versions() if installed is None else installed
    mismatches = [
        (name, versions.get(name), expected)
        for name, expected in PINNED.items()
        if versions.get(name) != expected
    ]
    if not mismatches:
        return []
    env = os.environ if environ is None else environ
    if env.get(ALLOW_UNPINNED) == "1":
        logging.getLogger("settlement.compat").warning(
            "%s is set: starting with unpinned libraries.\n%s",
            ALLOW_UNPINNED,
            describe(mismatches),
        )
        return mismatches
    raise UnpinnedLibrary(mismatches)
