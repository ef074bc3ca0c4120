"""Run the settlement server: `python app.py [--host H] [--port P] [--database URL] [--redis URL]`."""

from __future__ import annotations

import asyncio
import gc
import sys

from aiohttp import web

from settlement import config, logs
from settlement.pins import UnpinnedLibrary


def main(argv: list[str] | None = None) -> int:
    settings = config.parse(argv)
    try:
        from settlement.web import create_app  # imports settlement.compat: checks the pins
    except UnpinnedLibrary as exc:
        print(f"settlement: refusing to start.\n{exc}", file=sys.stderr)
        return 3
    # The SQLite writer thread needs the GIL for a moment before and after each
    # batch; with the default 5 ms switch interval it queued behind the busy
    # event loop for milliseconds, holding every command of the batch back.
    sys.setswitchinterval(0.0002)

    logs.configure(settings.log_level)
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:  # pragma: no cover - uvloop is optional off Linux
        pass
    app = create_app(settings)
    # Everything loaded so far lives as long as the process: keep it out of the
    # cyclic collector's way, and collect the young generation every 10,000
    # allocations instead of 700. Each command allocates a few hundred objects,
    # nearly all freed by reference counting; the frequent collections (and the
    # full ones they lead to, over every socket's objects) cost about 10 % of
    # the throughput and most of the ack p99.
    gc.freeze()
    gc.set_threshold(10_000, 20, 20)
    web.run_app(
        app,
        host=settings.host,
        port=settings.port,
        access_log=None,
        print=lambda *_: print(
            f"settlement listening on http://{settings.host}:{settings.port}", file=sys.stderr
        ),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
