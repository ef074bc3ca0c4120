"""One node or many: the interface the service sees, and the single-node null object.

`cluster.Cluster` (Redis) and `LocalNode` (one process) answer the same calls,
picked once at construction, so nothing above branches on which it has. What
other nodes report comes back through the `NodeEvents` handed to the node
when it is built.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol


class NodeEvents(Protocol):
    """What other nodes (or the message queue's recovery) tell this one."""

    async def changed(self, cid: str, seq: int) -> None:
        """Another node committed `seq` to this room."""

    async def unseat(self, cid: str, party: str) -> None:
        """A seat was left on another node."""

    async def presence_lost(self, cid: str) -> None:
        """A node that had sockets in this room died."""

    async def recovered(self) -> None:
        """The shared bookkeeping answers again after an outage."""


class Nodes(Protocol):
    """Presence, html audiences and the control bus shared by the nodes."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def online(self, cid: str, local: dict[str, bool]) -> dict[str, bool]:
        """Presence in the whole cluster, given this node's."""
        ...

    async def seated(self, cid: str, party: str, delta: int) -> None: ...

    async def add_audience(self, cid: str, party: str, locale: str) -> None: ...

    async def audiences(self, cid: str) -> set[tuple[str, str]]:
        """The html renderings other nodes' sockets of this room need."""
        ...

    async def publish(self, message: dict[str, Any]) -> None:
        """Tell the other nodes (`changed`, `unseat`)."""


NodesFactory = Callable[[NodeEvents], Nodes]


class LocalNode:
    """A single node: its own sockets are all there is; nobody else to tell."""

    def __init__(self, events: NodeEvents) -> None:
        self.events = events

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def online(self, cid: str, local: dict[str, bool]) -> dict[str, bool]:
        return local

    async def seated(self, cid: str, party: str, delta: int) -> None:
        return None

    async def add_audience(self, cid: str, party: str, locale: str) -> None:
        return None

    async def audiences(self, cid: str) -> set[tuple[str, str]]:
        return set()

    async def publish(self, message: dict[str, Any]) -> None:
        return None
