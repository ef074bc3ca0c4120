"""Fuzz: arbitrary event names and payloads sent by real python-socketio clients.

Every generated input is garbage by construction (unknown or reserved event,
a payload that is not an object, an unknown key, a value of a wrong type or
out of range, a malformed request_id...), so every input must get an error
ack, never a success and never silence; a frame over 64 KiB may instead be
closed by the transport. After each input the same socket completes a normal
command. At the end the server's log holds no unhandled exception and the
fuzzed room holds exactly the normal commands.

Three long-lived sockets on one module-scoped server: A (seated creator), B
(seated joiner) and U (unseated). Hypothesis runs synchronously; the sockets
live on an event loop in a helper thread.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import threading
import uuid
from collections import Counter
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest
import socketio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from settlement import ledger
from settlement.consent import valid_public_key, valid_signature_shape
from tests.conftest import ServerProcess
from tests.protocol.bots import ERROR_CODES

from .helpers import NS, WireSocket, http_session, log_errors, rid

KNOWN = ["create", "join", "resume", "propose", "respond", "leave", "history", "receipt"]
RESERVED = [
    "connect",
    "disconnect",
    "connect_error",
    "disconnecting",
    "message",
    "newListener",
    "removeListener",
    "*",
]
ALLOWED = {
    "create": {"party", "currency", "public_key"},
    "join": {"connection_id", "party", "public_key"},
    "resume": {"connection_id", "token"},
    "propose": {"amount", "version", "signature"},
    "respond": {"decision", "version", "reason", "signature"},
    "leave": set(),
    "history": {"after_seq"},
    "receipt": set(),
}
FRAME_LIMIT = 64 * 1024
ODDITIES = [
    "\ud800",  # lone surrogates
    "\udfff",
    "a\x00b",  # NUL
    "\u202eevil\u202c",  # right-to-left override
    "\u200f\u05e9\u05dc\u05d5\u05dd",  # RTL mark + Hebrew
    "🙂",
    "👩\u200d👩\u200d👧",
    "\ufeff",
    "１２３",  # full-width digits
    "١٢",  # Arabic-Indic digits
    "𝟙𝟚",
    "NaN",
    "Infinity",
    "1e3",
    "-5",
    "+5",
    "1,250",
    " 12",
    ".5",
    "5.",
    "0x10",
    "<script>alert(1)</script>",
    "'; DROP TABLE events; --",
    "%s%n",
    "\\u0000",
    "K7QF-3MZP-XW2D",
    "",
]
AMOUNT_OK = re.compile(r"[0-9]+(\.[0-9]*)?")

# -- strategies ---------------------------------------------------------------

odd_text = st.one_of(
    st.text(max_size=30),
    st.sampled_from(ODDITIES),
    st.lists(st.sampled_from(ODDITIES) | st.text(max_size=3), max_size=6).map("".join),
)


def _huge(unit: str, size: int) -> str:
    return unit * max(1, size // max(1, len(json.dumps(unit)) - 2))


huge_text = st.builds(
    _huge,
    st.sampled_from(["x", "9", "é", "🙂", "\x00", "\ud800", "<", '"', "\u202e", "ab"]),
    st.integers(1_000, 66_000),
)
text = st.one_of(odd_text, odd_text, odd_text, huge_text)
numbers = st.one_of(
    st.integers(),
    st.integers(-(10**300), 10**300),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, -1, 2**63, 2**64 + 1, 10**30, 1.0, 0.5, -0.0, 1e308]),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, text, st.binary(max_size=2048))


def _nest(depth: int, kind: str) -> Any:
    value: Any = "deep"
    for _ in range(depth):
        value = [value] if kind == "list" else {"k": value}
    return value


deep = st.builds(_nest, st.integers(20, 300), st.sampled_from(["list", "dict"]))
json_values = st.recursive(
    scalars,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(odd_text, kids, max_size=4),
    max_leaves=12,
)
values = st.one_of(json_values, deep)
non_objects = values.filter(lambda v: not isinstance(v, dict) and v is not None)


def bad_request_id() -> st.SearchStrategy[Any]:
    return st.one_of(
        odd_text.filter(lambda t: not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", t)),
        st.just(""),
        st.just("x" * 65),
        st.just("ok" * 5 + "!"),
        non_objects.filter(lambda v: not isinstance(v, str)),
        st.dictionaries(odd_text, scalars, max_size=2),
    )


@st.composite
def garbage(draw: st.DrawFn) -> tuple[str, Any, tuple[Any, ...]]:
    """(socket role, event, args): an input that no socket may see succeed."""
    role = draw(st.sampled_from(["A", "A", "B", "U"]))
    kind = draw(
        st.sampled_from(
            [
                "unknown_event",
                "reserved_event",
                "non_object",
                "extra_args",
                "unknown_key",
                "bad_request_id",
                "bad_field",
                "bad_field",
                "bad_field",
                "binary",
            ]
        )
    )
    if kind == "unknown_event":
        event: Any = draw(
            st.one_of(odd_text, huge_text, st.integers(), st.none()).filter(
                lambda e: e not in KNOWN
            )
        )
        return role, event, tuple(draw(st.lists(values, max_size=2)))
    if kind == "reserved_event":
        return role, draw(st.sampled_from(RESERVED)), tuple(draw(st.lists(values, max_size=2)))
    event = draw(st.sampled_from(KNOWN))
    if kind == "non_object":
        return role, event, (draw(non_objects),)
    if kind == "extra_args":
        return role, event, tuple(draw(st.lists(values, min_size=2, max_size=3)))
    if kind == "binary":
        blob = draw(st.binary(min_size=0, max_size=4096))
        where = draw(st.sampled_from(["top", "field", "extra_key"]))
        if where == "top":
            return role, event, (blob,)
        if where == "extra_key":
            return role, event, ({"blob": blob},)
        field = {
            "create": "currency",
            "join": "connection_id",
            "resume": "token",
            "propose": "amount",
            "respond": "version",
            "history": "after_seq",
        }.get(event, "blob")
        payload = {field: blob}
        if event == "resume":
            payload["connection_id"] = "K7QF-3MZP-XW2D"
        if event == "respond":
            payload["decision"] = "dispute"
        return role, event, (payload,)
    payload: dict[str, Any] = (
        draw(st.dictionaries(st.sampled_from(sorted(ALLOWED[event])), values, max_size=3))
        if ALLOWED[event]
        else {}
    )
    if kind == "unknown_key":
        key = draw(odd_text.filter(lambda k: k not in ALLOWED[event] and k != "request_id"))
        payload[key] = draw(values)
        return role, event, (payload,)
    if kind == "bad_request_id":
        payload["request_id"] = draw(bad_request_id())
        return role, event, (payload,)
    return role, event, (draw(bad_field(event, role)),)


# Protocol 1.1: keys and signatures of the wrong shape, and (from the fuzz
# sockets, which hold no key) well-formed signatures from keyless seats.
bad_key = values.filter(lambda v: v is not None and not valid_public_key(v))
bad_sig = values.filter(lambda v: v is not None and not valid_signature_shape(v))
keyless_sig = st.one_of(bad_sig, st.just("A" * 86 + "=="), st.just("/" * 85 + "w=="))


def bad_field(event: str, role: str) -> st.SearchStrategy[dict[str, Any]]:
    """A payload with known keys only, at least one of them wrong."""
    any_value = values
    if event == "propose":
        amount = values.filter(
            lambda v: not (isinstance(v, str) and AMOUNT_OK.fullmatch(v) and v.strip("0."))
        )
        return st.one_of(
            st.fixed_dictionaries({"amount": amount}),
            st.fixed_dictionaries(
                {"amount": st.just("5"), "signature": keyless_sig},
                optional={"version": st.integers(-3, 10**20)},
            ),
            st.fixed_dictionaries(
                {
                    "amount": st.just("5"),
                    "version": values.filter(
                        lambda v: v is not None and (not isinstance(v, int) or isinstance(v, bool))
                    ),
                }
            ),
        )
    if event == "respond":
        stale = st.one_of(st.integers(10**6, 10**40), st.integers(max_value=-1))
        return st.one_of(
            st.fixed_dictionaries(
                {
                    "decision": values.filter(lambda v: v not in ("accept", "dispute")),
                    "version": any_value,
                }
            ),
            st.fixed_dictionaries(
                {
                    "decision": st.sampled_from(["accept", "dispute"]),
                    "version": values.filter(lambda v: not isinstance(v, int) or v < 0),
                }
            ),
            st.fixed_dictionaries({"decision": st.just("dispute"), "version": stale}),
            st.fixed_dictionaries(
                {
                    "decision": st.just("dispute"),
                    "version": st.integers(1, 5),
                    "reason": st.one_of(
                        values.filter(lambda v: not isinstance(v, str) and v is not None),
                        st.builds(
                            lambda c, n: c * n, st.sampled_from(["x", "🙂"]), st.integers(501, 4000)
                        ),
                    ),
                }
            ),  # shape first: a bad reason is bad_request even for a real version
            st.fixed_dictionaries(
                {"decision": st.just("accept"), "version": stale, "reason": text}
            ),
            st.fixed_dictionaries(
                {
                    "decision": st.sampled_from(["accept", "dispute"]),
                    "version": st.integers(1, 5),
                    "signature": keyless_sig,
                }
            ),
        )
    if event == "history":
        return st.fixed_dictionaries(
            {
                "after_seq": values.filter(
                    lambda v: (
                        v is not None
                        and not (isinstance(v, int) and not isinstance(v, bool) and v >= 0)
                    )
                )
            }
        )
    if event == "create":
        return st.one_of(
            st.fixed_dictionaries({"party": values.filter(lambda v: v not in ("A", "B"))}),
            st.fixed_dictionaries(
                {
                    "party": st.sampled_from(["A", "B"]),
                    "currency": values.filter(
                        lambda v: (
                            v is not None
                            and not (isinstance(v, str) and re.fullmatch(r"[A-Z]{3}", v))
                        )
                    ),
                }
            ),
            st.fixed_dictionaries({"party": st.sampled_from(["A", "B"]), "public_key": bad_key}),
        )
    if event == "join":
        return st.fixed_dictionaries(
            {
                "connection_id": values.filter(lambda v: v is not None),
            },
            optional={"party": values},
        )
    if event == "resume":
        return st.fixed_dictionaries({"connection_id": values, "token": values})
    # leave, receipt: no fields at all, so a wrong one is an unknown key
    return st.fixed_dictionaries({"connection_id": values})


# -- the harness: sockets on an event loop in a helper thread ------------------


class FuzzSocket:
    """A python-socketio client that reports a transport close instead of hanging."""

    def __init__(self, url: str, auth: dict[str, Any] | None) -> None:
        self.url = url
        self.auth = auth
        self.sio: socketio.AsyncClient | None = None
        self.gone: asyncio.Event | None = None
        self.reconnects = 0

    async def connect(self) -> None:
        self.sio = socketio.AsyncClient(reconnection=False)
        self.gone = gone = asyncio.Event()

        @self.sio.on("disconnect", namespace=NS)  # type: ignore[untyped-decorator]
        async def _gone(*_: Any) -> None:
            gone.set()

        await self.sio.connect(
            self.url, namespaces=[NS], transports=["websocket"], auth=self.auth, wait_timeout=10
        )

    async def send(self, event: Any, args: tuple[Any, ...]) -> tuple[str, Any]:
        assert self.sio is not None and self.gone is not None
        call = asyncio.ensure_future(self.sio.call(event, args, namespace=NS, timeout=5))
        gone = asyncio.ensure_future(self.gone.wait())
        done, _ = await asyncio.wait({call, gone}, timeout=8, return_when="FIRST_COMPLETED")
        gone.cancel()
        if call in done and call.exception() is None:
            return "ack", call.result()
        call.cancel()
        if gone in done or self.gone.is_set():
            return "closed", None
        return "silence", None

    async def reopen(self) -> None:
        if self.sio is not None:
            await self.sio.disconnect()
        self.reconnects += 1
        await self.connect()


class Harness:
    def __init__(self, srv: ServerProcess) -> None:
        self.srv = srv
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.tried = 0
        self.outcomes: Counter[str] = Counter()
        self.normal_proposals = 0

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def setup(self) -> None:
        url = self.srv.url
        self.u = FuzzSocket(url, None)
        await self.u.connect()
        a = FuzzSocket(url, None)
        await a.connect()
        _, created = await a.send("create", ({"party": "A", "request_id": rid()},))
        assert created["ok"], created
        self.cid = created["connection_id"]
        a.auth = {"connection_id": self.cid, "token": created["token"]}
        b = FuzzSocket(url, None)
        await b.connect()
        _, joined = await b.send("join", ({"connection_id": self.cid, "request_id": rid()},))
        assert joined["ok"], joined
        b.auth = {"connection_id": self.cid, "token": joined["token"]}
        self.sockets = {"A": a, "B": b, "U": self.u}

    async def normal(self, role: str) -> dict[str, Any]:
        """A normal command on that socket; must succeed."""
        sock = self.sockets[role]
        if role == "A":
            self.normal_proposals += 1
            _, ack = await sock.send(
                "propose", ({"amount": f"{self.normal_proposals}.25", "request_id": rid()},)
            )
        elif role == "B":
            _, ack = await sock.send("history", ({"after_seq": 10**9},))
        else:
            _, ack = await sock.send("create", ({"party": "B", "request_id": rid()},))
            assert ack and ack["ok"], ack
            _, ack = await sock.send("leave", ({"request_id": uuid.uuid4().hex},))
        return dict(ack or {"ok": False, "error": {"code": "no answer"}})

    async def one(self, role: str, event: Any, args: tuple[Any, ...]) -> None:
        sock = self.sockets[role]
        size = frame_size(event, args)
        outcome, ack = await sock.send(event, args)
        self.tried += 1
        if outcome == "ack":
            assert isinstance(ack, dict) and ack.get("ok") is False, (event, ack)
            assert ack["error"]["code"] in ERROR_CODES, ack
            assert isinstance(ack["error"]["message"], str) and ack["error"]["message"]
            self.outcomes[ack["error"]["code"]] += 1
        elif outcome == "closed":
            # only the transport's size limit may close a socket
            assert size > FRAME_LIMIT - 256, (event, size)
            self.outcomes["closed_by_transport"] += 1
            await sock.reopen()
        else:
            raise AssertionError(f"no answer to {event!r} ({size} bytes)")
        after = await self.normal(role)
        assert after.get("ok") is True, after

    def close(self) -> None:
        async def shut() -> None:
            for sock in self.sockets.values():
                if sock.sio is not None:
                    await sock.sio.disconnect()

        self.run(shut())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def frame_size(event: Any, args: tuple[Any, ...]) -> int:
    """Roughly the Socket.IO frame the client sends (binary attachments go separately)."""

    def strip(v: Any) -> Any:
        if isinstance(v, bytes):
            return {"_placeholder": True, "num": 0}
        if isinstance(v, list):
            return [strip(x) for x in v]
        if isinstance(v, dict):
            return {k: strip(x) for k, x in v.items()}
        return v

    text = json.dumps([event, *[strip(a) for a in args]], separators=(",", ":"))
    blobs = [len(a) for a in args if isinstance(a, bytes)]
    return len(text.encode()) + 32 + max(blobs, default=0)


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    srv = ServerProcess(
        tmp_path_factory.mktemp("fuzz"),
        extra_args=["--rate", "100000", "--burst", "100000", "--guess-burst", "1000000"],
    )
    srv.start()
    h = Harness(srv)
    try:
        h.run(h.setup())
        yield h
    finally:
        h.close()
        srv.stop()


def fuzz(h: Harness, examples: int) -> None:
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(garbage())
    def check(case: tuple[str, Any, tuple[Any, ...]]) -> None:
        role, event, args = case
        h.run(h.one(role, event, args))

    before = h.tried
    check()
    print(
        f"fuzz: {h.tried - before} inputs tried ({h.tried} in all), outcomes {dict(h.outcomes)}, "
        f"reconnects after transport close {sum(s.reconnects for s in h.sockets.values())}"
    )


def check_room_and_log(h: Harness) -> None:
    """Garbage changed nothing: the room holds exactly the normal proposals; no exception."""

    async def events() -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        after = 0
        while True:
            _, ack = await h.sockets["B"].send("history", ({"after_seq": after},))
            out += ack["events"]
            if not ack["more"]:
                return out
            after = out[-1]["seq"]

    log = h.run(events())
    assert ledger.verify_chain(log) is None
    kinds = Counter(e["type"] for e in log)
    assert kinds == Counter({"created": 1, "joined": 1, "proposed": h.normal_proposals}), kinds
    errors = log_errors(h.srv.log())
    assert errors == [], errors[:5]


@pytest.mark.timeout(600)
def test_fuzz_garbage_gets_error_acks(harness: Harness) -> None:
    fuzz(harness, 200)
    assert harness.tried >= 200
    check_room_and_log(harness)


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_fuzz_garbage_gets_error_acks_long(harness: Harness) -> None:
    fuzz(harness, int(os.environ.get("FUZZ_EXAMPLES", "4000")))
    check_room_and_log(harness)


async def test_lone_surrogates_in_event_name_and_request_id_get_an_error_ack(
    harness: Harness,
) -> None:
    """Pinned cases: a lone surrogate reaches the log line of the command (and must not
    break it: the JSON log renderer has to escape it, not raise)."""
    for role, event, args in [
        ("A", "\ud800", ()),
        ("A", "x\udfffy", ({},)),
        ("B", "history", ({"request_id": "\ud800"},)),
        ("U", "connect", ("\ud800",)),
    ]:
        harness.run(harness.one(role, event, args))
    assert log_errors(harness.srv.log()) == []


# Frames no client library produces: the python-socketio server cannot decode them.
MALFORMED = {
    "invalid JSON": '["propose", {',
    "empty array": "[]",
    "object, not an array": '{"a": 1}',
    "nesting 5000 deep": '["propose", ' + "[" * 5000 + "]" * 5000 + "]",
    "integer of 5000 digits": '["propose", {"amount": ' + "9" * 5000 + "}]",
}


async def test_malformed_frames_get_an_answer_and_no_traceback(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path)
    srv.start()
    silent = []
    try:
        async with http_session() as http:
            sock = await WireSocket.open(http, srv.url)
            for name, body in MALFORMED.items():
                try:
                    ack = await sock.call_raw(body, timeout=1.5)
                    assert ack["ok"] is False and ack["error"]["code"] == "bad_request", ack
                except TimeoutError:
                    if not sock.closed.is_set():
                        silent.append(name)
                if sock.closed.is_set():
                    sock = await WireSocket.open(http, srv.url)
            await sock.close()
    finally:
        srv.stop()
    errors = log_errors(srv.log())
    assert silent == [] and errors == [], (silent, errors[:3])
