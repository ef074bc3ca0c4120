"""Store tests: the real-PostgreSQL fixtures from tests/pg.py.

Imported here only while tests/conftest.py does not register them itself
(`pytest_plugins = ["tests.pg"]`), so a session never starts two servers.
"""

from __future__ import annotations

from tests import conftest as _root

if "tests.pg" not in getattr(_root, "pytest_plugins", ()):
    from tests.pg import pg_database, postgres_url  # noqa: F401
