"""Local bookkeeping of sockets: sessions, seats, presence and render audiences.

Everything here is about sockets connected to *this* process; the durable
truth is in the store. Socket.IO rooms per connection and view let one
change be rendered once per audience and fanned out by the manager.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from .negotiation import Party


class TokenBucket:
    """Per-socket command budget: starts full; refused commands take no token."""

    __slots__ = ("capacity", "rate", "tokens", "stamp")

    def __init__(self, capacity: int, rate: float) -> None:
        self.capacity = float(capacity)
        self.rate = rate
        self.tokens = float(capacity)
        self.stamp = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class MemoryTrimmer:
    """Give freed heap back to the OS after a wave of disconnects.

    CPython and glibc keep freed memory for reuse, so after thousands of
    sockets leave the RSS stays at its peak. Once at least `every` sockets
    have gone, and a second later, a `gc.collect()` plus glibc's
    `malloc_trim(0)` returns what is free. Elsewhere (no glibc) it does nothing.
    """

    def __init__(self, every: int = 500) -> None:
        self.every = every
        self._gone = 0
        self._scheduled = False
        try:
            self._libc: Any = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            self._libc.malloc_trim  # noqa: B018 - glibc only
        except (OSError, AttributeError):
            self._libc = None

    def disconnected(self) -> None:
        self._gone += 1
        if self._gone >= self.every and not self._scheduled and self._libc is not None:
            self._scheduled = True
            asyncio.get_running_loop().call_later(1.0, self._trim)

    def _trim(self) -> None:
        self._scheduled = False
        self._gone = 0
        gc.collect()
        self._libc.malloc_trim(0)


class GuessLimiter:
    """Per-address budget for *failed* joins and resumes (unknown id, wrong token).

    Connection ids carry 60 random bits; this makes guessing them (or tokens)
    from one address cost real time: `burst` failures, then `rate` a second.
    """

    def __init__(self, burst: int = 100, rate: float = 20.0, max_addresses: int = 50_000) -> None:
        self.burst = burst
        self.rate = rate
        self.max_addresses = max_addresses
        self._buckets: dict[str, TokenBucket] = {}

    def exhausted(self, address: str) -> bool:
        bucket = self._buckets.get(address)
        if bucket is None:
            return False
        now = time.monotonic()
        bucket.tokens = min(bucket.capacity, bucket.tokens + (now - bucket.stamp) * bucket.rate)
        bucket.stamp = now
        return bucket.tokens < 1.0

    def charge(self, address: str) -> None:
        bucket = self._buckets.get(address)
        if bucket is None:
            if len(self._buckets) >= self.max_addresses:
                self._prune()
            bucket = self._buckets[address] = TokenBucket(self.burst, self.rate)
        bucket.take()

    def _prune(self) -> None:
        now = time.monotonic()
        for address, b in list(self._buckets.items()):
            if b.tokens + (now - b.stamp) * b.rate >= b.capacity:
                del self._buckets[address]
        if len(self._buckets) >= self.max_addresses:  # still full: forget the oldest
            for address in list(self._buckets)[: self.max_addresses // 10]:
                del self._buckets[address]


@dataclass(eq=False)
class Session:
    """One connected socket of the `/settlement` namespace."""

    sid: str
    view: str
    locale: str
    bucket: TokenBucket
    remote: str = "unknown"
    seat: tuple[str, Party] | None = None
    token_hash: str | None = None  # of the token that seated it: a seat left elsewhere shows
    watching: str | None = None  # an unseated html page following a room (the invite page)
    last_seat: tuple[str, Party] | None = None
    closed: bool = False
    # Commands of one socket run one at a time, in the order they arrived.
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


WATCHER = "none"  # the audience of pages that hold no seat


def json_room(cid: str) -> str:
    return f"{cid}:json"


def html_room(cid: str, party: str, locale: str) -> str:
    return f"{cid}:html:{party}:{locale}"


class Registry:
    """Which local sockets hold which seat, and which html audiences a room has."""

    def __init__(self) -> None:
        self.sessions: dict[str, Session] = {}
        self._holders: dict[tuple[str, str], set[str]] = {}
        self._audiences: dict[str, Counter[tuple[str, str]]] = {}
        self._room_sockets: Counter[str] = Counter()

    def holders(self, cid: str, party: str) -> list[Session]:
        return [
            self.sessions[sid]
            for sid in self._holders.get((cid, party), ())
            if sid in self.sessions
        ]

    def online(self, cid: str) -> dict[str, bool]:
        holders = self._holders
        return {"A": (cid, "A") in holders, "B": (cid, "B") in holders}

    def audiences(self, cid: str) -> list[tuple[str, str]]:
        return [a for a, n in self._audiences.get(cid, Counter()).items() if n > 0]

    def rooms(self) -> list[str]:
        """Rooms with a seated socket on this node."""
        return sorted({cid for cid, _ in self._holders})

    def room_count(self) -> int:
        """How many rooms have a seated socket on this node."""
        return len(self._room_sockets)

    def has_sockets(self, cid: str) -> bool:
        return any(self._holders.get((cid, p)) for p in ("A", "B"))

    def seat(self, s: Session, cid: str, party: Party) -> list[str]:
        """Record the seat; returns the Socket.IO rooms the socket must enter."""
        s.seat = (cid, party)
        self._holders.setdefault((cid, party), set()).add(s.sid)
        self._room_sockets[cid] += 1
        if s.view == "html":
            self._audiences.setdefault(cid, Counter())[(party, s.locale)] += 1
            return [html_room(cid, party, s.locale)]
        return [json_room(cid)]

    def watch(self, s: Session, cid: str) -> str:
        """An unseated html page follows the room; returns the Socket.IO room to enter."""
        s.watching = cid
        self._audiences.setdefault(cid, Counter())[(WATCHER, s.locale)] += 1
        return html_room(cid, WATCHER, s.locale)

    def unwatch(self, s: Session) -> str | None:
        cid, s.watching = s.watching, None
        if cid is None:
            return None
        audience = self._audiences.get(cid)
        if audience is not None:
            audience[(WATCHER, s.locale)] -= 1
            if audience[(WATCHER, s.locale)] <= 0:
                del audience[(WATCHER, s.locale)]
            if not audience:
                del self._audiences[cid]
        return html_room(cid, WATCHER, s.locale)

    def unseat(self, s: Session) -> list[str]:
        """Forget the seat; returns the Socket.IO rooms the socket must leave."""
        if s.seat is None:
            return []
        cid, party = s.seat
        s.last_seat, s.seat = s.seat, None
        self._room_sockets[cid] -= 1
        if self._room_sockets[cid] <= 0:
            del self._room_sockets[cid]
        holders = self._holders.get((cid, party))
        if holders is not None:
            holders.discard(s.sid)
            if not holders:
                del self._holders[(cid, party)]
        if s.view == "html":
            audience = self._audiences.get(cid)
            if audience is not None:
                audience[(party, s.locale)] -= 1
                if audience[(party, s.locale)] <= 0:
                    del audience[(party, s.locale)]
                if not audience:
                    del self._audiences[cid]
            return [html_room(cid, party, s.locale)]
        return [json_room(cid)]
