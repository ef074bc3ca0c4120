"""A webhook endpoint for `python -m bench --webhooks`: answers every POST 204 at once.

It only counts: the benchmark asks what the outbox and its deliveries cost the
command path, not what a real receiver does with a message.
`python -m bench.receiver --port P`; `GET /healthz` is 200, `GET /count` says
how many messages arrived.
"""

from __future__ import annotations

import argparse

from aiohttp import web


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    args = p.parse_args()
    received = [0]

    async def hook(request: web.Request) -> web.Response:
        await request.read()
        received[0] += 1
        return web.Response(status=204)

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def count(_: web.Request) -> web.Response:
        return web.json_response({"received": received[0]})

    app = web.Application()
    app.router.add_post("/hook", hook)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/count", count)
    web.run_app(app, host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
