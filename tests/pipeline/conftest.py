"""In-process fixtures: the real `Service` over a memory store and a recording publisher.

No server process, no sockets: a test drives `Service.handle` with `Session`s
as the Socket.IO namespace would, and reads what each socket was sent from the
recording publisher. Two `Service`s on one `MemoryData` are two nodes sharing
a database (without a message queue between them, unless a test wires one).
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from typing import Any

import pytest

from settlement.ids import TokenMint
from settlement.nodes import LocalNode, NodeEvents, NodesFactory
from settlement.rooms import Session, TokenBucket
from settlement.service import Service
from settlement.signing import Signer
from settlement.store.memory import MemoryData, MemoryStore


class RecordingPublisher:
    """python-socketio's rooms and emits, recorded; each emit notes how many
    commits the store had applied when it was sent."""

    def __init__(self, data: MemoryData) -> None:
        self.data = data
        self.members: dict[str, set[str]] = defaultdict(set)
        self.sent: list[dict[str, Any]] = []

    async def enter(self, sid: str, room: str) -> None:
        self.members[room].add(sid)

    async def leave(self, sid: str, room: str) -> None:
        self.members[room].discard(sid)

    async def emit(self, event: str, data: Any, *, room: str, local: bool = False) -> None:
        to = {room} if room.startswith("sid-") else set(self.members[room])
        self.sent.append(
            {"event": event, "data": data, "room": room, "to": to, "commits": self.data.commits}
        )

    def received(self, sid: str, event: str = "state") -> list[Any]:
        return [m["data"] for m in self.sent if m["event"] == event and sid in m["to"]]


class RecordingNodes(LocalNode):
    """A cluster as the service sees it, recording what it is told to publish."""

    def __init__(self, events: NodeEvents) -> None:
        super().__init__(events)
        self.published: list[dict[str, Any]] = []

    async def publish(self, message: dict[str, Any]) -> None:
        self.published.append(message)


class Node:
    """One service (a node) with its publisher, on a shared memory database."""

    def __init__(self, data: MemoryData, signer: Signer, mint: TokenMint, nodes: NodesFactory):
        self.store = MemoryStore(data)
        self.pub = RecordingPublisher(data)
        self.service = Service(self.store, self.pub, signer, mint, nodes=nodes)
        self._n = 0
        self.tokens: dict[str, str] = {}  # sid -> the seat token its create/join ack gave

    async def socket(self, view: str = "json", auth: Any = None) -> Session:
        self._n += 1
        s = Session(
            sid=f"sid-{id(self)}-{self._n}", view=view, locale="en", bucket=TokenBucket(40, 20)
        )
        await self.service.connect(s, auth)
        return s

    async def call(self, s: Session, event: str, **payload: Any) -> dict[str, Any]:
        ack = dict(await self.service.handle(s, event, payload))
        if ack.get("token"):
            self.tokens[s.sid] = ack["token"]
        return ack

    def token(self, s: Session) -> str:
        return self.tokens[s.sid]


class Cluster:
    """Nodes sharing one memory database, one receipt key and one token secret."""

    def __init__(self, tmp: Any) -> None:
        self.data = MemoryData()
        self.signer = Signer.generate()
        self.mint = TokenMint.load_or_create(tmp / "seat-token.secret")

    def node(self, nodes: NodesFactory = LocalNode) -> Node:
        return Node(self.data, self.signer, self.mint, nodes)


@pytest.fixture
def cluster(tmp_path: Any) -> Cluster:
    return Cluster(tmp_path)


@pytest.fixture
def node(cluster: Cluster) -> Node:
    return cluster.node()


def rid() -> str:
    return uuid.uuid4().hex
