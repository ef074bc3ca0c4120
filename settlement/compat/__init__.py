"""Every use of python-socketio, python-engineio and aiohttp internals, in one place.

Importing this package first checks that the installed versions are exactly
the pinned ones (`settlement.pins`; `SETTLEMENT_ALLOW_UNPINNED=1` downgrades a
mismatch to a warning) and refuses with `UnpinnedLibrary` otherwise.
`tests/unit/test_compat.py` checks the signature of every hook overridden
here and every private attribute read, so a version bump fails there, by name.

The public surface, used by the rest of settlement:

- `DispatchServer`: python-socketio's `AsyncServer` with one documented hook,
  `dispatch(sid, data)`, bounded per-socket queues, an ack for undecodable
  frames and the lean websocket (`server.py`, `transport.py`);
- `JsonPacket`: the `serializer=` that skips the binary scan of outgoing data;
- `RESERVED_EVENTS`: event names a client may not use;
- `make_manager(redis_url)`: the client manager with the fast room emit
  (`managers.py`);
- `close_all_sockets(sio)`: the shutdown's drop of every transport;
- `aiohttp_request(environ)`: the aiohttp request behind an Engine.IO environ.
"""

from __future__ import annotations

from ..pins import UnpinnedLibrary, check_versions

check_versions()

from .managers import make_manager  # noqa: E402
from .server import (  # noqa: E402
    RESERVED_EVENTS,
    DispatchServer,
    JsonPacket,
    aiohttp_request,
    close_all_sockets,
)

__all__ = [
    "RESERVED_EVENTS",
    "DispatchServer",
    "JsonPacket",
    "UnpinnedLibrary",
    "aiohttp_request",
    "close_all_sockets",
    "make_manager",
]
