"""python-socketio's client managers with a cheaper room broadcast (5.18.1, pinned).

- `FastEmitManager.emit` encodes a room broadcast once and queues the
  Engine.IO frame to each socket in turn, instead of one asyncio task per
  recipient (queuing never blocks); emits with a callback take the stock path.
- `RedisManager` re-subscribes within a second after a Redis outage (the
  stock manager backs off up to 60 s, losing what other nodes emit meanwhile).

`make_manager(redis_url)` picks one.
"""

from __future__ import annotations

import asyncio
from typing import Any

import socketio
import structlog
from engineio import packet as eio_packet
from socketio import packet

log = structlog.get_logger("settlement.compat")


class FastEmitManager(socketio.AsyncManager):  # type: ignore[misc]
    """python-socketio's manager, but a room broadcast is queued to each socket in
    turn instead of through one asyncio task per recipient (queuing never blocks)."""

    async def emit(
        self,
        event: str,
        data: Any,
        namespace: str,
        room: str | None = None,
        skip_sid: Any = None,
        callback: Any = None,
        to: str | None = None,
        **kwargs: Any,
    ) -> None:
        if callback is not None:
            await super().emit(event, data, namespace, room, skip_sid, callback, to, **kwargs)
            return
        room = to or room
        if namespace not in self.rooms:
            return
        if isinstance(data, tuple):
            args = list(data)
        else:
            args = [] if data is None else [data]
        skip = skip_sid if isinstance(skip_sid, list) else [skip_sid]
        pkt = self.server.packet_class(packet.EVENT, namespace=namespace, data=[event, *args])
        encoded = pkt.encode()
        frames = [
            eio_packet.Packet(eio_packet.MESSAGE, p)
            for p in (encoded if isinstance(encoded, list) else [encoded])
        ]
        for sid, eio_sid in list(self.get_participants(namespace, room)):
            if sid in skip:
                continue
            for frame in frames:
                await self.server._send_eio_packet(eio_sid, frame)


class LocalManager(FastEmitManager):  # type: ignore[misc]
    """One node: the fast emit and nothing else."""


class RedisManager(socketio.AsyncRedisManager, FastEmitManager):  # type: ignore[misc]
    """python-socketio's Redis manager, re-subscribing within a second after an outage.

    The stock manager backs off up to 60 s between attempts, and emits from
    other nodes published meanwhile never reach this node's sockets.
    """

    async def _redis_listen_with_retries(self) -> Any:  # pragma: no cover - needs an outage
        subscribed = False
        while True:
            try:
                if not subscribed:
                    self._redis_connect()
                    await self.pubsub.subscribe(self.channel)
                    subscribed = True
                async for message in self.pubsub.listen():
                    yield message
            except Exception as exc:
                log.info("queue_reconnect", error=str(exc) or type(exc).__name__)
                subscribed = False
                await asyncio.sleep(0.5)


def make_manager(redis_url: str | None) -> socketio.AsyncManager:
    """This node's manager: Redis-backed when a URL is given, else local only."""
    if redis_url:
        return RedisManager(redis_url)
    return LocalManager()
