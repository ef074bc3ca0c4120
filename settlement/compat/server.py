"""python-socketio's `AsyncServer` with the hooks settlement needs (5.18.1, pinned).

`DispatchServer` replaces python-socketio's event routing with one coroutine,
`dispatch(sid, data)`, and adds what the library has no option for:

- **one dispatch hook** (`_handle_event_internal`): every event of the
  dispatch namespace goes to `dispatch`, never to python-socketio's handler
  table, so an event a client names `connect`, `disconnect`, ... cannot reach
  the server's own life-cycle handlers (python-socketio would call them with
  arguments the client chose). `RESERVED_EVENTS` lists those names for the
  subclass's refusal. Events of any other namespace are dropped.
- **bounded per-socket queues** (`_send_packet` for acks and single sends,
  `_send_eio_packet` for room broadcasts): a socket with
  `max_queued_packets` packets waiting is disconnected instead of buffering
  every broadcast for it forever.
- **an ack for undecodable frames** (`_handle_eio_message`): a frame
  python-socketio's decoder raises on still gets `undecodable_ack()` when it
  names the dispatch namespace and has an ack id.
- **the lean websocket** (`_engineio_server_class`, see `transport.py`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import socketio
import structlog
from socketio import packet

from .transport import LeanEngineIOServer

log = structlog.get_logger("settlement.compat")

# Socket.IO's reserved event names, python-socketio's `message` and its catch-all `*`.
RESERVED_EVENTS = frozenset(
    {
        "connect",
        "disconnect",
        "connect_error",
        "disconnecting",
        "newListener",
        "removeListener",
        "message",
        "*",
    }
)
# Socket.IO EVENT or BINARY_EVENT head: type, attachments, namespace, ack id.
_FRAME_HEAD = re.compile(r"[25](?:\d+-)?(/[^,\[{]*)?,?(\d{1,15})?")

Ack = Mapping[str, Any]  # JSON object; settlement's own acks are `shapes.Ack`


class JsonPacket(packet.Packet):  # type: ignore[misc]
    """Outgoing packets never carry binary attachments here, so skip the deep scan
    python-socketio makes of every payload to find some (incoming binary packets
    are typed on the wire and decoded as usual). Pass as `serializer=`."""

    @classmethod
    def data_is_binary(cls, data: Any) -> bool:
        return False


class DispatchServer(socketio.AsyncServer):  # type: ignore[misc]
    """python-socketio's AsyncServer with one dispatch hook and bounded queues.

    A subclass sets `dispatch_namespace` and `max_queued_packets` and
    implements `dispatch` and `undecodable_ack`. `connect` and `disconnect`
    handlers are still registered with the public `on(...)`.
    """

    dispatch_namespace: str = "/"
    max_queued_packets: int = 500

    async def dispatch(self, sid: str, data: list[Any]) -> Ack | None:
        """One client event `[name, *args]` of socket `sid`; returns the ack, or
        None for no ack. Runs as its own task (`async_handlers=True`)."""
        raise NotImplementedError

    def undecodable_ack(self) -> Ack:
        """The ack sent for a frame that python-socketio cannot decode."""
        raise NotImplementedError

    # -- python-socketio hooks ------------------------------------------------

    def _engineio_server_class(self) -> type:
        return LeanEngineIOServer

    def _overflowing(self, eio_sid: str) -> bool:
        sock = self.eio.sockets.get(eio_sid)
        if sock is None or sock.queue.qsize() < self.max_queued_packets:
            return False
        if not getattr(sock, "settlement_dropping", False):
            sock.settlement_dropping = True
            log.warning("slow_client_dropped", queued=sock.queue.qsize())
            self.start_background_task(self.eio.disconnect, eio_sid)
        return True

    async def _send_packet(self, eio_sid: str, pkt: Any) -> None:  # acks, single sends
        if not self._overflowing(eio_sid):
            await super()._send_packet(eio_sid, pkt)

    async def _send_eio_packet(self, eio_sid: str, eio_pkt: Any) -> None:  # room broadcasts
        if not self._overflowing(eio_sid):
            await super()._send_eio_packet(eio_sid, eio_pkt)

    async def _handle_eio_message(self, eio_sid: str, data: Any) -> None:
        """A frame python-socketio cannot decode (`42/settlement,1[]`, a 5,000-digit
        number, nesting 5,000 deep, ...) still gets an error ack when it has an id."""
        try:
            await super()._handle_eio_message(eio_sid, data)
        except Exception as exc:
            self._binary_packet.pop(eio_sid, None)
            log.warning("undecodable_packet", error=type(exc).__name__)
            match = _FRAME_HEAD.match(data) if isinstance(data, str) else None
            if match and match.group(1) == self.dispatch_namespace and match.group(2):
                pkt = self.packet_class(
                    packet.ACK,
                    namespace=self.dispatch_namespace,
                    id=int(match.group(2)),
                    data=[self.undecodable_ack()],
                )
                await self._send_packet(eio_sid, pkt)

    async def _handle_event_internal(
        self, server: Any, sid: str, eio_sid: str, data: list[Any], namespace: str, id: Any
    ) -> None:
        if namespace != self.dispatch_namespace:
            return
        ack = await self.dispatch(sid, data)
        if ack is not None and id is not None:
            await server._send_packet(
                eio_sid,
                self.packet_class(packet.ACK, namespace=namespace, id=id, data=[ack]),
            )


async def close_all_sockets(sio: socketio.AsyncServer) -> None:
    """Drop every Engine.IO transport without a CLOSE packet (clients see the link
    go away, not a server "disconnect", and so reconnect)."""
    for sock in list(sio.eio.sockets.values()):
        try:
            await sock.close(wait=False, abort=True)
            await sock.queue.put(None)  # ends its writer, which closes the websocket
        except Exception:
            log.warning("close_on_shutdown_failed")


def aiohttp_request(environ: dict[str, Any]) -> Any:
    """The aiohttp request behind a python-engineio environ (its aiohttp driver
    puts it there; `REMOTE_ADDR` always says 127.0.0.1), or None."""
    return environ.get("aiohttp.request")
