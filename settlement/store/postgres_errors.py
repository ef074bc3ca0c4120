"""How the PostgreSQL store reads asyncpg's exceptions: a lost link, a retryable
stale socket, a refused value, a conflict."""

from __future__ import annotations

from typing import Any

import asyncpg

from .base import Unavailable

# The server or the link to it failed: nothing this session did is committed.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,  # class 08, incl. ConnectionDoesNotExistError
    asyncpg.InterfaceError,  # connection closed / pool closing
    asyncpg.TooManyConnectionsError,
    asyncpg.CannotConnectNowError,  # starting up / shutting down
    asyncpg.exceptions.OperatorInterventionError,  # 57P01 admin shutdown, 57014 cancel
    asyncpg.exceptions.InsufficientResourcesError,  # class 53: disk full, out of memory
    OSError,  # refused, reset, unreachable
    TimeoutError,  # command_timeout / connect timeout (asyncio.TimeoutError is the same)
)
# Worth one immediate retry on a fresh connection (a stale pooled socket after an outage).
RETRYABLE: tuple[type[BaseException], ...] = (
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.exceptions.InternalClientError,  # protocol confused by a server gone mid-idle
    asyncpg.InterfaceError,
    ConnectionResetError,
    BrokenPipeError,
    asyncpg.exceptions.AdminShutdownError,
)
# A connection that raised one of these is not reused.
BROKEN: tuple[type[BaseException], ...] = (
    *CONNECTION_ERRORS,
    asyncpg.exceptions.InternalClientError,
)
# A value the database or the driver refuses (server class 22; asyncpg's client-side
# DataError is an InterfaceError and a ValueError): the command's fault, not the link's.
VALUE_ERRORS: tuple[type[BaseException], ...] = (asyncpg.DataError, ValueError)
CONFLICT_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.UniqueViolationError,
    asyncpg.exceptions.TransactionRollbackError,  # deadlock, serialization failure
)


class CommitOutcomeUnknown(Exception):
    """The connection failed while the commit's call was in flight."""

    def __init__(self, backend: tuple[int, Any]) -> None:
        super().__init__(backend)
        self.backend = backend  # (server pid, its backend_start or None)


class NothingCommitted(Unavailable):
    """The link failed during the call, and the call is known to have changed nothing."""
