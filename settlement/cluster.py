"""Several nodes: shared presence, html audiences and a control bus, in Redis.

python-socketio's `AsyncRedisManager` carries every emit between nodes; this
module keeps what the manager does not:

- **presence**: per room, a hash `party|node -> sockets`; a node's counts
  only count while its heartbeat key lives, so a crashed node's sockets stop
  counting within `NODE_TTL` seconds, and a survivor reaps them and
  re-broadcasts the room's snapshot;
- **html audiences**: which (party, locale) renderings a room needs across
  the cluster, so the node that commits renders each once;
- **a control bus**: `changed` (drop a stale cached room) and `unseat`
  (every node unseats its sockets of a seat that left).

Redis being down never blocks a command: every call has a short timeout and
falls back to what this node knows; when Redis answers again the node
re-registers its sockets and re-sends current snapshots to them.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import redis.asyncio as aioredis
import structlog

from .nodes import NodeEvents

log = structlog.get_logger("settlement.cluster")

PREFIX = "settlement:"
BUS = PREFIX + "bus"
# Seconds a node's sockets keep counting without a heartbeat (a crashed node's
# presence clears within about this long); settable for tests and operations.
NODE_TTL = max(2, int(os.environ.get("SETTLEMENT_NODE_TTL", "10")))
HEARTBEAT = NODE_TTL / 5
AUDIENCE_TTL = 7 * 24 * 3600
TIMEOUT = 0.5


class Cluster:
    """The `nodes.Nodes` of several processes; what they report goes to `events`."""

    def __init__(self, url: str, events: NodeEvents) -> None:
        self.url = url
        self.events = events
        self.node = secrets.token_hex(6)
        self.redis = aioredis.Redis.from_url(
            url, socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT, decode_responses=True
        )
        self.healthy = False
        self.alive: set[str] = {self.node}
        self._local: dict[tuple[str, str], int] = {}  # (cid, party) -> local sockets
        self._last_presence: dict[str, dict[str, bool]] = {}
        self._tasks: list[asyncio.Task[None]] = []

    # -- life cycle ---------------------------------------------------------

    async def start(self) -> None:
        try:
            await self._heartbeat_once()
        except Exception:  # Redis down at start: serve anyway, recover when it answers
            self.healthy = False
        self._tasks = [
            asyncio.create_task(self._heartbeat_loop(), name="cluster-heartbeat"),
            asyncio.create_task(self._bus_loop(), name="cluster-bus"),
        ]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        try:
            await self._forget_node(self.node)
            await self.redis.srem(PREFIX + "nodes", self.node)
        except Exception:
            pass
        await self.redis.aclose()

    async def _call(self, coro: Awaitable[Any]) -> Any:
        try:
            return await asyncio.wait_for(coro, TIMEOUT * 2)
        except Exception as exc:
            if self.healthy:
                log.warning("redis_unavailable", error=str(exc) or type(exc).__name__)
            self.healthy = False
            raise

    # -- presence -----------------------------------------------------------

    async def seated(self, cid: str, party: str, delta: int) -> None:
        key = (cid, party)
        self._local[key] = self._local.get(key, 0) + delta
        if self._local[key] <= 0:
            del self._local[key]
        try:
            pipe = self.redis.pipeline()
            pipe.hincrby(PREFIX + "presence:" + cid, f"{party}|{self.node}", delta)
            pipe.sadd(PREFIX + "noderooms:" + self.node, cid)
            await self._call(pipe.execute())
        except Exception:
            pass

    async def add_audience(self, cid: str, party: str, locale: str) -> None:
        try:
            key = PREFIX + "aud:" + cid
            pipe = self.redis.pipeline()
            pipe.sadd(key, f"{party}|{locale}")
            pipe.expire(key, AUDIENCE_TTL)
            await self._call(pipe.execute())
        except Exception:
            pass

    async def audiences(self, cid: str) -> set[tuple[str, str]]:
        try:
            members = await self._call(self.redis.smembers(PREFIX + "aud:" + cid))
        except Exception:
            return set()
        out = set()
        for member in members:
            party, _, locale = member.partition("|")
            out.add((party, locale))
        return out

    async def online(self, cid: str, local: dict[str, bool]) -> dict[str, bool]:
        """Cluster-wide presence; if Redis is down, what this node last knew plus its own."""
        try:
            counts = await self._call(self.redis.hgetall(PREFIX + "presence:" + cid))
        except Exception:
            known = self._last_presence.get(cid, {})
            return {p: local.get(p, False) or known.get(p, False) for p in ("A", "B")}
        result = dict(local)
        for field, count in counts.items():
            party, _, node = field.partition("|")
            if int(count) > 0 and node in self.alive:
                result[party] = True
        self._last_presence[cid] = result
        return result

    # -- the bus ------------------------------------------------------------

    async def publish(self, message: dict[str, Any]) -> None:
        try:
            await self._call(self.redis.publish(BUS, orjson.dumps({**message, "node": self.node})))
        except Exception:
            pass

    async def _bus_loop(self) -> None:
        while True:
            pubsub = self.redis.pubsub()
            try:
                await pubsub.subscribe(BUS)
                async for message in pubsub.listen():
                    if message.get("type") != "message":
                        continue
                    await self._on_bus(orjson.loads(message["data"]))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.info("bus_reconnect", error=str(exc) or type(exc).__name__)
                await asyncio.sleep(0.5)
            finally:
                try:
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
                except Exception:
                    pass

    async def _on_bus(self, msg: dict[str, Any]) -> None:
        if msg.get("node") == self.node:
            return
        try:
            if msg["t"] == "changed":
                await self.events.changed(msg["cid"], int(msg["seq"]))
            elif msg["t"] == "unseat":
                await self.events.unseat(msg["cid"], msg["party"])
        except Exception:
            log.exception("bus_message_failed", message_type=msg.get("t"))

    # -- heartbeat, reaping, recovery ---------------------------------------

    async def _heartbeat_once(self) -> None:
        was_healthy = self.healthy
        pipe = self.redis.pipeline()
        pipe.set(PREFIX + "node:" + self.node, "1", ex=NODE_TTL)
        pipe.sadd(PREFIX + "nodes", self.node)
        pipe.smembers(PREFIX + "nodes")
        results = await self._call(pipe.execute())
        nodes: set[str] = set(results[2])
        pipe = self.redis.pipeline()
        ordered = sorted(nodes)
        for node in ordered:
            pipe.exists(PREFIX + "node:" + node)
        exists = await self._call(pipe.execute())
        self.alive = {n for n, e in zip(ordered, exists, strict=True) if e} | {self.node}
        self.healthy = True
        if not was_healthy:
            await self._reregister()
            await self.events.recovered()
            # Once more when every live node has had time to re-register
            # (and its message-queue subscription to come back): presence
            # and state then converge without relying on lost broadcasts.
            self._tasks.append(asyncio.create_task(self._later(self.events.recovered)))
        for node in ordered:
            if node not in self.alive:
                await self._reap(node)

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT)
            try:
                await self._heartbeat_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                self.healthy = False

    @staticmethod
    async def _later(callback: Callable[[], Awaitable[None]]) -> None:
        await asyncio.sleep(NODE_TTL)
        try:
            await callback()
        except Exception:
            log.exception("resync_failed")

    async def _reregister(self) -> None:
        """After an outage (or a Redis restart that lost data): put our sockets back."""
        pipe = self.redis.pipeline()
        for (cid, party), count in self._local.items():
            pipe.hset(PREFIX + "presence:" + cid, f"{party}|{self.node}", count)
            pipe.sadd(PREFIX + "noderooms:" + self.node, cid)
        await self._call(pipe.execute())

    async def _forget_node(self, node: str) -> list[str]:
        rooms: set[str] = {str(r) for r in await self.redis.smembers(PREFIX + "noderooms:" + node)}
        pipe = self.redis.pipeline()
        for cid in rooms:
            for party in ("A", "B"):
                pipe.hdel(PREFIX + "presence:" + cid, f"{party}|{node}")
        pipe.delete(PREFIX + "noderooms:" + node)
        await pipe.execute()
        return sorted(rooms)

    async def _reap(self, node: str) -> None:
        """A node stopped beating: its sockets stop counting; tell its rooms."""
        if not await self._call(self.redis.srem(PREFIX + "nodes", node)):
            return  # another survivor is reaping it
        rooms = await self._forget_node(node)
        log.warning("node_reaped", node=node, rooms=len(rooms))
        for cid in rooms:
            self._last_presence.pop(cid, None)
            await self.events.presence_lost(cid)
