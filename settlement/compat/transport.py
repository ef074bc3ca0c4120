"""Engine.IO's websocket transport with cheaper waits (python-engineio 4.15.1, pinned).

python-engineio's socket makes every received frame wait through
`asyncio.wait_for(ensure_future(...))` and every sent packet through
`asyncio.wait_for(queue.get())`: a new Task and a timer per frame, about a
fifth of the event loop's time per command here. `LeanSocket` keeps the same
protocol, queue and shutdown order, and waits plainly:

- the reader awaits the next frame directly (no Task, no timer). A silent
  peer is still dropped: the server pings every `ping_interval`, `send()`
  closes the socket when the pong is overdue, and the writer, which then
  gets no packet for `ping_interval + ping_timeout`, closes the websocket,
  which ends the reader (the same bound as before);
- the writer takes what is queued without waiting, and waits plainly when
  the queue is empty; one timer per socket (a watchdog that re-arms itself
  from when the current wait began) ends a wait that lasts longer than
  `ping_interval + ping_timeout`, instead of an `asyncio.timeout` per wait
  (3.5 us each, two or three waits per command).

A socket that starts with long-polling and upgrades keeps python-engineio's
own handler.
"""

from __future__ import annotations

import asyncio
from typing import Any

import engineio
from aiohttp import WSMsgType, web
from engineio import exceptions, packet
from engineio.async_socket import AsyncSocket


class LeanSocket(AsyncSocket):  # type: ignore[misc]
    watched = False  # a watchdog bounds the writer's waits (the lean websocket handler)
    waiting_since: float | None = None  # loop.time() when the current wait began

    async def poll(self) -> list[Any]:
        queue = self.queue
        try:
            pkt = queue.get_nowait()
        except asyncio.QueueEmpty:
            try:
                if self.watched:
                    self.waiting_since = asyncio.get_running_loop().time()
                    try:
                        pkt = await queue.get()
                    finally:
                        self.waiting_since = None
                else:  # long-polling, or python-engineio's own websocket handler
                    timeout = self.server.ping_interval + self.server.ping_timeout
                    async with asyncio.timeout(timeout):
                        pkt = await queue.get()
            except (TimeoutError, asyncio.CancelledError):
                raise exceptions.QueueEmpty() from None
        queue.task_done()
        if pkt is None:
            return []
        packets = [pkt]
        while not queue.empty():
            pkt = queue.get_nowait()
            queue.task_done()
            if pkt is None:
                queue.put_nowait(None)
                break
            packets.append(pkt)
        return packets

    async def _websocket_handler(self, ws: Any) -> Any:
        sock = getattr(ws, "_sock", None)  # aiohttp's WebSocketResponse behind the wrapper
        upgrade = getattr(self, "connected", False)  # from long-polling
        if upgrade or not isinstance(sock, web.WebSocketResponse):
            return await super()._websocket_handler(ws)  # python-engineio's own way
        self.connected = True
        self.upgraded = True
        limit = self.server.max_http_buffer_size

        async def writer() -> None:
            while True:
                try:
                    packets = await self.poll()
                except exceptions.QueueEmpty:
                    break
                if not packets:  # connection closed
                    break
                try:
                    for pkt in packets:
                        data = pkt.encode()
                        if isinstance(data, str):
                            await sock.send_str(data)
                        else:
                            await sock.send_bytes(data)
                except Exception:
                    break
            await ws.close()

        self.watched = True
        writer_task = asyncio.ensure_future(writer())
        loop = asyncio.get_running_loop()
        idle_limit = self.server.ping_interval + self.server.ping_timeout
        timer: list[asyncio.TimerHandle] = []

        def watchdog() -> None:
            """Ends the writer's wait once it has lasted idle_limit (a silent peer)."""
            since = self.waiting_since
            now = loop.time()
            if since is not None and now - since >= idle_limit:
                writer_task.cancel()  # poll() -> QueueEmpty -> the writer closes the websocket
                return
            timer[:] = [loop.call_at((since if since is not None else now) + idle_limit, watchdog)]

        timer.append(loop.call_later(idle_limit, watchdog))
        while True:
            try:
                msg = await sock.receive()
            except asyncio.CancelledError:
                break
            except Exception:
                break
            data = msg.data
            if msg.type is not WSMsgType.TEXT and msg.type is not WSMsgType.BINARY:
                break  # close, closing, error
            if len(data) > limit:
                break  # python-engineio: "packet is too large" ends the connection
            try:
                await self.receive(packet.Packet(encoded_packet=data))
            except exceptions.UnknownPacketError:
                pass
            except exceptions.SocketIsClosedError:
                break
            except Exception:
                self.server.logger.exception("Unknown receive error")
        for handle in timer:
            handle.cancel()
        await self.queue.put(None)  # unlock the writer so it can exit
        await writer_task
        await self.close(wait=False, abort=True, reason=self.server.reason.TRANSPORT_CLOSE)


class LeanEngineIOServer(engineio.AsyncServer):  # type: ignore[misc]
    """python-engineio's server whose sockets are `LeanSocket`s."""

    async def _trigger_event(self, event: str, *args: Any, **kwargs: Any) -> Any:
        if event == "connect":
            sock = self.sockets.get(args[0])
            if sock is not None and type(sock) is AsyncSocket:
                # Created a moment ago by _handle_connect, not yet connected.
                sock.__class__ = LeanSocket
        return await super()._trigger_event(event, *args, **kwargs)
