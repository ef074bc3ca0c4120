"""The library seams of settlement/compat/: every hook it overrides or calls privately.

Each test names one seam. When a pin in requirements.txt moves, the ones that
fail say which hook changed (its signature, or a private attribute that is
gone), instead of a behaviour failing far away. docs/architecture.md ("compat:
the library seams") says why each hook exists.
"""

from __future__ import annotations

import ast
import inspect
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import engineio
import pytest
import socketio
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from engineio import async_socket
from engineio import exceptions as eio_exceptions
from engineio import packet as eio_packet
from engineio.async_drivers import aiohttp as eio_aiohttp
from socketio import packet as sio_packet

from settlement import compat, pins
from settlement.compat import managers, server, transport

ROOT = Path(__file__).resolve().parents[2]
SETTLEMENT = ROOT / "settlement"


def params(func: Any) -> str:
    """The parameter list only (annotations dropped), e.g. `(self, eio_sid, pkt)`."""
    sig = inspect.signature(func)
    return str(
        sig.replace(
            return_annotation=inspect.Signature.empty,
            parameters=[
                p.replace(annotation=inspect.Parameter.empty) for p in sig.parameters.values()
            ],
        )
    )


# (where, what, recorded parameters, coroutine function?) for every library
# method settlement/compat/ overrides, calls through super(), or calls privately.
HOOKS: list[tuple[str, Any, str, bool]] = [
    # server.py: DispatchServer overrides
    (
        "socketio.AsyncServer._engineio_server_class",
        socketio.AsyncServer._engineio_server_class,
        "(self)",
        False,
    ),
    (
        "socketio.AsyncServer._send_packet",
        socketio.AsyncServer._send_packet,
        "(self, eio_sid, pkt)",
        True,
    ),
    (
        "socketio.AsyncServer._send_eio_packet",
        socketio.AsyncServer._send_eio_packet,
        "(self, eio_sid, eio_pkt)",
        True,
    ),
    (
        "socketio.AsyncServer._handle_eio_message",
        socketio.AsyncServer._handle_eio_message,
        "(self, eio_sid, data)",
        True,
    ),
    (
        "socketio.AsyncServer._handle_event_internal",
        socketio.AsyncServer._handle_event_internal,
        "(self, server, sid, eio_sid, data, namespace, id)",
        True,
    ),
    (
        "socketio.AsyncServer.start_background_task",
        socketio.AsyncServer.start_background_task,
        "(self, target, *args, **kwargs)",
        False,
    ),
    (
        "socketio packet.Packet.__init__",
        sio_packet.Packet.__init__,
        "(self, packet_type=2, data=None, namespace=None, id=None, binary=None, encoded_packet=None)",
        False,
    ),
    ("socketio packet.Packet.data_is_binary", sio_packet.Packet.data_is_binary, "(data)", False),
    # managers.py
    (
        "socketio.AsyncManager.emit",
        socketio.AsyncManager.emit,
        "(self, event, data, namespace, room=None, skip_sid=None, callback=None, to=None, **kwargs)",
        True,
    ),
    (
        "socketio.AsyncManager.get_participants",
        socketio.AsyncManager.get_participants,
        "(self, namespace, room)",
        False,
    ),
    (
        "socketio.AsyncRedisManager.__init__",
        socketio.AsyncRedisManager.__init__,
        "(self, url='redis://localhost:6379/0', channel='socketio', write_only=False, logger=None, json=None, redis_options=None)",
        False,
    ),
    (
        "socketio.AsyncRedisManager._redis_connect",
        socketio.AsyncRedisManager._redis_connect,
        "(self)",
        False,
    ),
    (
        "engineio packet.Packet.__init__",
        eio_packet.Packet.__init__,
        "(self, packet_type=6, data=None, encoded_packet=None)",
        False,
    ),
    # transport.py
    (
        "engineio.AsyncServer._trigger_event",
        engineio.AsyncServer._trigger_event,
        "(self, event, *args, **kwargs)",
        True,
    ),
    ("engineio.AsyncServer.disconnect", engineio.AsyncServer.disconnect, "(self, sid=None)", True),
    ("AsyncSocket.__init__", async_socket.AsyncSocket.__init__, "(self, server, sid)", False),
    ("AsyncSocket.poll", async_socket.AsyncSocket.poll, "(self)", True),
    (
        "AsyncSocket._websocket_handler",
        async_socket.AsyncSocket._websocket_handler,
        "(self, ws)",
        True,
    ),
    ("AsyncSocket.receive", async_socket.AsyncSocket.receive, "(self, pkt)", True),
    (
        "AsyncSocket.close",
        async_socket.AsyncSocket.close,
        "(self, wait=True, abort=False, reason=None)",
        True,
    ),
    (
        "engineio aiohttp WebSocket.__init__",
        eio_aiohttp.WebSocket.__init__,
        "(self, handler, server)",
        False,
    ),
    ("engineio aiohttp WebSocket.close", eio_aiohttp.WebSocket.close, "(self)", True),
    (
        "aiohttp WebSocketResponse.receive",
        web.WebSocketResponse.receive,
        "(self, timeout=None)",
        True,
    ),
    (
        "aiohttp WebSocketResponse.send_str",
        web.WebSocketResponse.send_str,
        "(self, data, compress=None)",
        True,
    ),
    (
        "aiohttp WebSocketResponse.send_bytes",
        web.WebSocketResponse.send_bytes,
        "(self, data, compress=None)",
        True,
    ),
]


@pytest.mark.parametrize(
    ("where", "func", "recorded", "is_coroutine"), HOOKS, ids=[h[0] for h in HOOKS]
)
def test_hook_signature(where: str, func: Any, recorded: str, is_coroutine: bool) -> None:
    assert params(func) == recorded, f"{where} changed its signature"
    assert inspect.iscoroutinefunction(func) is is_coroutine, f"{where}: sync/async changed"


def test_redis_listen_with_retries_is_the_async_generator_listen_uses() -> None:
    hook = socketio.AsyncRedisManager._redis_listen_with_retries
    assert params(hook) == "(self)"
    assert inspect.isasyncgenfunction(hook)
    assert "self._redis_listen_with_retries()" in inspect.getsource(
        socketio.AsyncRedisManager._listen
    )
    # What the override uses of the manager: its pubsub and channel.
    source = inspect.getsource(socketio.AsyncRedisManager._redis_connect)
    assert "self.pubsub = " in source
    manager = socketio.AsyncRedisManager("redis://127.0.0.1:1/0", channel="probe")
    assert manager.channel == "probe" and manager.pubsub is None


def test_every_client_event_reaches_handle_event_internal() -> None:
    """The reserved-event guard holds only if `_handle_event` routes every event
    through `_handle_event_internal` (which DispatchServer replaces)."""
    source = inspect.getsource(socketio.AsyncServer._handle_event)
    assert source.count("_handle_event_internal") == 2  # async_handlers on and off
    assert "_trigger_event" not in source
    eio_msg = inspect.getsource(socketio.AsyncServer._handle_eio_message)
    assert "packet.EVENT" in eio_msg and "self._handle_event(" in eio_msg
    assert "self._binary_packet" in eio_msg  # the state cleared after an undecodable frame


def test_socketio_server_uses_the_engineio_server_class_hook() -> None:
    source = inspect.getsource(socketio.base_server.BaseServer.__init__)
    assert "self._engineio_server_class()(" in source


def test_engineio_creates_the_socket_before_the_connect_event() -> None:
    """LeanEngineIOServer swaps the class of the socket `_handle_connect` has just
    stored in `sockets`, when `_trigger_event('connect', sid, ...)` runs."""
    source = inspect.getsource(engineio.AsyncServer._handle_connect)
    created = source.index("async_socket.AsyncSocket(self, sid)")
    stored = source.index("self.sockets[sid] = s")
    connect = source.index("self._trigger_event('connect', sid")
    assert created < stored < connect


def test_packet_constants() -> None:
    assert (sio_packet.EVENT, sio_packet.ACK, sio_packet.BINARY_EVENT) == (2, 3, 5)
    assert eio_packet.MESSAGE == 4
    assert issubclass(compat.JsonPacket, sio_packet.Packet)
    for name in ("QueueEmpty", "UnknownPacketError", "SocketIsClosedError"):
        assert issubclass(getattr(eio_exceptions, name), Exception), name


class _Probe(compat.DispatchServer):
    dispatch_namespace = "/probe"


def test_dispatch_server_private_state() -> None:
    sio = _Probe(async_mode="aiohttp", serializer=compat.JsonPacket)
    assert type(sio.eio) is transport.LeanEngineIOServer
    assert isinstance(sio.eio.sockets, dict)
    assert isinstance(sio._binary_packet, dict)
    assert sio.packet_class is compat.JsonPacket
    assert sio.not_handled is not None
    manager = compat.make_manager(None)
    assert isinstance(manager, managers.LocalManager)
    assert isinstance(compat.make_manager("redis://127.0.0.1:1/0"), managers.RedisManager)
    # FastEmitManager reads the manager's `rooms` and `server`.
    manager.set_server(sio)
    assert manager.server is sio and isinstance(manager.rooms, dict)


def test_engineio_socket_private_attributes() -> None:
    eio = engineio.AsyncServer(async_mode="aiohttp")
    sock = async_socket.AsyncSocket(eio, "sid")
    for name in ("queue", "connected", "upgraded", "closed", "server"):
        assert hasattr(sock, name), name
    assert hasattr(sock.queue, "qsize") and hasattr(sock.queue, "get_nowait")
    for name in ("ping_interval", "ping_timeout", "max_http_buffer_size", "logger"):
        assert hasattr(eio, name), name
    assert eio.reason.TRANSPORT_CLOSE
    # The class swap in LeanEngineIOServer: same layout, so the instance keeps working.
    sock.__class__ = transport.LeanSocket
    assert sock.watched is False and sock.queue is not None


def test_aiohttp_websocket_wrapper_exposes_sock() -> None:
    """LeanSocket reads the aiohttp WebSocketResponse behind python-engineio's
    wrapper from `ws._sock`."""
    wrapper = eio_aiohttp.WebSocket(lambda ws: None, engineio.AsyncServer(async_mode="aiohttp"))
    assert hasattr(wrapper, "_sock")
    assert "self._sock = WebSocketResponse(" in inspect.getsource(eio_aiohttp.WebSocket.__call__)
    assert eio_aiohttp._async["websocket"] is eio_aiohttp.WebSocket
    assert {aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY} <= set(aiohttp.WSMsgType)


def test_engineio_environ_carries_the_aiohttp_request() -> None:
    request = make_mocked_request("GET", "/socket.io/")
    environ = eio_aiohttp.translate_request(request)
    assert compat.aiohttp_request(environ) is request
    assert environ["REMOTE_ADDR"] == "127.0.0.1"  # why settlement reads the request itself


def test_transport_checks_what_it_copied() -> None:
    """LeanSocket.poll is a copy of AsyncSocket.poll with plainer waits, and its
    websocket handler mirrors the stock one; both end on a queued None."""
    stock_poll = inspect.getsource(async_socket.AsyncSocket.poll)
    assert "self.queue.get()" in stock_poll and "raise exceptions.QueueEmpty()" in stock_poll
    stock_ws = inspect.getsource(async_socket.AsyncSocket._websocket_handler)
    assert "await self.queue.put(None)" in stock_ws
    assert "reason=self.server.reason.TRANSPORT_CLOSE" in stock_ws


# -- the version check ---------------------------------------------------------


def test_pins_match_requirements_txt() -> None:
    text = (ROOT / "requirements.txt").read_text()
    for name, version in pins.PINNED.items():
        assert re.search(rf"^{re.escape(name)}=={re.escape(version)}\s*$", text, re.M), name


def test_installed_versions_are_the_pins() -> None:
    assert pins.check_versions() == []


def test_a_mismatching_version_is_refused_with_a_clear_message() -> None:
    installed = {**pins.PINNED, "python-engineio": "4.16.0"}
    with pytest.raises(pins.UnpinnedLibrary) as caught:
        pins.check_versions(installed, environ={})
    message = str(caught.value)
    assert "python-engineio 4.16.0 is installed" in message
    assert "python-engineio==4.15.1" in message
    assert "pip install -r requirements.txt" in message
    assert "SETTLEMENT_ALLOW_UNPINNED=1" in message
    assert caught.value.mismatches == [("python-engineio", "4.16.0", "4.15.1")]


def test_a_missing_package_is_refused() -> None:
    installed = {**pins.PINNED, "aiohttp": None}
    with pytest.raises(pins.UnpinnedLibrary, match="aiohttp is not installed"):
        pins.check_versions(installed, environ={})


def test_the_escape_hatch_warns_instead(caplog: pytest.LogCaptureFixture) -> None:
    installed = {**pins.PINNED, "python-socketio": "5.19.0"}
    with caplog.at_level("WARNING", logger="settlement.compat"):
        mismatches = pins.check_versions(installed, environ={"SETTLEMENT_ALLOW_UNPINNED": "1"})
    assert mismatches == [("python-socketio", "5.19.0", "5.18.1")]
    assert "python-socketio 5.19.0 is installed" in caplog.text
    with pytest.raises(pins.UnpinnedLibrary):  # only exactly "1" opens it
        pins.check_versions(installed, environ={"SETTLEMENT_ALLOW_UNPINNED": "yes"})


# app.py as a user runs it, with importlib.metadata reporting another aiohttp.
_FAKE_AIOHTTP = """
import importlib.metadata as md, runpy, sys
real = md.version
md.version = lambda name: "3.99.0" if name == "aiohttp" else real(name)
sys.argv = ["app.py", *sys.argv[1:]]
runpy.run_path("app.py", run_name="__main__")
"""


@pytest.mark.parametrize("allow", [False, True], ids=["refused", "allowed"])
def test_app_refuses_to_start_on_an_unpinned_library(allow: bool, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != pins.ALLOW_UNPINNED}
    env["SETTLEMENT_KEY_DIR"] = str(tmp_path)
    if allow:
        env[pins.ALLOW_UNPINNED] = "1"
    stderr = tmp_path / "stderr.txt"
    args = ["--host", "127.0.0.1", "--port", "0", "--database", f"sqlite:///{tmp_path}/s.db"]
    with open(stderr, "w") as err_file:
        proc = subprocess.Popen(
            [sys.executable, "-c", _FAKE_AIOHTTP, *args], cwd=ROOT, env=env, stderr=err_file
        )
    try:
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            if "settlement listening on" in stderr.read_text():
                break
            time.sleep(0.1)
    finally:
        if proc.poll() is None:
            proc.terminate()
        proc.wait(30)
    err = stderr.read_text()
    assert "aiohttp 3.99.0 is installed, but settlement needs exactly aiohttp==3.14.5" in err
    if allow:
        assert "starting with unpinned libraries" in err
        assert "settlement listening on" in err
    else:
        assert proc.returncode == 3
        assert err.startswith("settlement: refusing to start.")
        assert "listening" not in err


# -- the fence: nothing outside compat/ uses library internals -----------------

PUBLIC_SOCKETIO_MODULES = {"exceptions"}  # documented: socketio.exceptions.ConnectionError, ...
NAMEDTUPLE_API = {"_replace", "_asdict", "_fields", "_make"}  # public despite the underscore


def _outside_compat() -> list[Path]:
    files = [p for p in SETTLEMENT.rglob("*.py") if "compat" not in p.relative_to(SETTLEMENT).parts]
    return [*files, ROOT / "app.py"]


def _own_private_names() -> set[str]:
    """Underscore names settlement defines itself (outside compat/)."""
    names: set[str] = set()
    for path in _outside_compat():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.arg):
                names.add(node.arg)
    return {n for n in names if n.startswith("_")} | NAMEDTUPLE_API


def test_no_module_outside_compat_uses_library_internals() -> None:
    submodules = {p.stem for p in Path(socketio.__file__).parent.glob("*.py")} - {"__init__"}
    own = _own_private_names()
    faults: list[str] = []
    for path in _outside_compat():
        where = path.relative_to(ROOT)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    top, _, rest = alias.name.partition(".")
                    if top == "engineio" or (top == "socketio" and rest):
                        faults.append(f"{where}:{node.lineno} imports {alias.name}")
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                top, _, rest = node.module.partition(".")
                if top == "engineio" or (top == "socketio" and rest):
                    faults.append(f"{where}:{node.lineno} imports from {node.module}")
                elif top == "socketio":
                    for alias in node.names:
                        if alias.name in submodules - PUBLIC_SOCKETIO_MODULES:
                            faults.append(f"{where}:{node.lineno} imports socketio.{alias.name}")
                elif top == "aiohttp" and any(
                    part.startswith("_") for part in node.module.split(".")
                ):
                    faults.append(f"{where}:{node.lineno} imports from {node.module}")
            elif isinstance(node, ast.Attribute):
                base = node.value
                if (
                    isinstance(base, ast.Name)
                    and base.id == "socketio"
                    and node.attr in submodules - PUBLIC_SOCKETIO_MODULES
                ):
                    faults.append(f"{where}:{node.lineno} uses socketio.{node.attr}")
                if node.attr == "eio":
                    faults.append(f"{where}:{node.lineno} reaches the Engine.IO server (.eio)")
                private = node.attr.startswith("_") and not node.attr.startswith("__")
                if private and node.attr not in own:
                    faults.append(f"{where}:{node.lineno} reads .{node.attr}, not settlement's own")
    assert faults == []


def test_compat_exposes_its_public_surface() -> None:
    assert set(compat.__all__) == {
        "RESERVED_EVENTS",
        "DispatchServer",
        "JsonPacket",
        "UnpinnedLibrary",
        "aiohttp_request",
        "close_all_sockets",
        "make_manager",
    }
    assert server.RESERVED_EVENTS >= {"connect", "disconnect", "message", "*"}
