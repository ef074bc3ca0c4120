"""The aiohttp application: HTTP routes, security headers, and the app's life cycle."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from . import compat, logs, receipt_view, views, webhooks
from .appkeys import SERVICE
from .cluster import Cluster
from .config import Settings
from .delivery import Deliverer, refresh_metrics
from .ids import TokenMint
from .nodes import LocalNode, NodesFactory
from .realtime import SioPublisher, build_server, client_address
from .rooms import GuessLimiter
from .service import Service
from .signing import Signer
from .store import Unavailable, open_store

log = structlog.get_logger("settlement.web")
_STOPPING: web.AppKey[asyncio.Task[None]] = web.AppKey("settlement_stopping", asyncio.Task)

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; "
    "object-src 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        response = exc
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if isinstance(response, web.HTTPException):
        raise response
    return response


#: Seconds a 503 asks the client to wait (`Retry-After`; the 503 page reloads itself
#: after as long). The store is back within milliseconds of PostgreSQL's return.
RETRY_AFTER = 5
#: The routes that read the store; their 503 counters are exported from the start, at 0.
STORE_ROUTES = ("/c/{connection_id}", "/api/connections/{connection_id}/receipt")
UNAVAILABLE_MESSAGE = (
    "The service is briefly unavailable: its database is not answering. Nothing changed; "
    "try again in a few seconds."
)


@web.middleware
async def store_outage(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A store outage (`Unavailable`) on any HTTP route is a 503 with `Retry-After`,
    never a 500: a page that says so and reloads itself, or on `/api/` a JSON error.
    One log line per answer, without a traceback, counted per route in /metrics."""
    try:
        return await handler(request)
    except Unavailable as exc:
        route = route_label(request)
        request.app[SERVICE].metrics.http_unavailable.labels(route).inc()
        log.warning("http_unavailable", route=route, method=request.method, error=str(exc))
        if request.path.startswith("/api/"):
            body = {"error": {"code": "unavailable", "message": UNAVAILABLE_MESSAGE}}
            response = _json(503, body)
            response.headers["Retry-After"] = str(RETRY_AFTER)
            response.headers["Cache-Control"] = "no-store"
            return response
        return views.unavailable_page(request, RETRY_AFTER)


def route_label(request: web.Request) -> str:
    """The route's pattern (`/c/{connection_id}`), never the raw path: bounded labels."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


GUARDED_PREFIXES = ("/c/", "/api/connections/")


def make_guess_guard(trust_proxy: bool) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Pages and the receipt route name rooms too: unknown ids and wrong tokens count
    against the same per-address budget as failed joins and resumes."""

    @web.middleware
    async def guess_guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith(GUARDED_PREFIXES):
            return await handler(request)
        service: Service = request.app[SERVICE]
        address = client_address({"aiohttp.request": request, **_forwarded(request)}, trust_proxy)
        if service.guesses.exhausted(address):
            return _json(
                429,
                {
                    "error": {
                        "code": "rate_limited",
                        "message": "Too many unknown ids or wrong tokens.",
                    }
                },
            )
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            if exc.status in (401, 404):
                service.guesses.charge(address)
            raise
        if response.status in (401, 404):
            service.guesses.charge(address)
        return response

    return guess_guard


def _forwarded(request: web.Request) -> dict[str, str]:
    value = request.headers.get("X-Forwarded-For")
    return {"HTTP_X_FORWARDED_FOR": value} if value else {}


def _json(status: int, body: object) -> web.Response:
    return web.json_response(body, status=status)


async def healthz(request: web.Request) -> web.Response:
    if await request.app[SERVICE].store.ping():
        return _json(200, {"status": "ok"})
    response = _json(503, {"status": "unavailable"})
    response.headers["Retry-After"] = str(RETRY_AFTER)
    return response


async def metrics_route(request: web.Request) -> web.Response:
    service: Service = request.app[SERVICE]
    try:
        service.metrics.open_rooms.set(await service.store.count_open_rooms())
        await refresh_metrics(service.store, service.metrics)
    except Exception:  # the store is down: keep the last figure, still serve the rest
        pass
    body = generate_latest(service.metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def receipt_route(request: web.Request) -> web.Response:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    bearer = token.strip() if scheme.lower() == "bearer" else None
    status, body = await request.app[SERVICE].http_receipt(
        request.match_info["connection_id"], bearer or None
    )
    response = _json(status, body)
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="settlement"'
    response.headers["Cache-Control"] = "no-store"
    return response


async def keys_route(request: web.Request) -> web.Response:
    return _json(200, request.app[SERVICE].signer.keys_document())


def create_app(settings: Settings) -> web.Application:
    """The whole server: HTTP routes and the Socket.IO namespace on one aiohttp app."""
    app = web.Application(
        middlewares=[security_headers, make_guess_guard(settings.trust_proxy), store_outage],
        client_max_size=64 * 1024,
    )
    sio = build_server(settings)
    sio.attach(app)
    keys = settings.keys_path()

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        secret = settings.webhook_secret or webhooks.load_or_create_secret(Path(keys))
        deliverer = None
        if settings.webhook_urls:
            deliverer = Deliverer(
                secret,
                retry_base=settings.webhook_retry_base,
                retry_for=settings.webhook_retry_for,
                lease=settings.webhook_lease,
            )
        store = open_store(
            settings.database_url,
            pool_size=settings.db_pool_size,
            on_outbox=deliverer.wake if deliverer is not None else None,
        )
        await store.open()
        redis_url = settings.redis_url
        nodes: NodesFactory = LocalNode
        if redis_url:
            nodes = lambda events: Cluster(redis_url, events)  # noqa: E731
        service = Service(
            store,
            SioPublisher(sio),
            Signer.load_or_create(Path(keys) / "receipt-signing.pem"),
            TokenMint.load_or_create(Path(keys) / "seat-token.secret"),
            max_amount=settings.max_amount,
            nodes=nodes,
            guesses=GuessLimiter(settings.guess_burst, settings.guess_rate),
            webhook_urls=settings.webhook_urls,
        )
        sio.service = service
        app[SERVICE] = service
        for route in STORE_ROUTES:
            service.metrics.http_unavailable.labels(route)
        await service.nodes.start()
        if deliverer is not None:
            await deliverer.start(store, service.metrics)
        yield
        if deliverer is not None:
            await deliverer.close()
        await service.nodes.close()
        await store.close()

    async def drain(app: web.Application) -> None:
        # In-flight commands commit and are acknowledged, then the store closes.
        await app[SERVICE].drain()
        logs.flush()
        log.info("drained")

    async def graceful_sigterm(app: web.Application) -> None:
        """SIGTERM: answer new commands `unavailable` while those in flight finish,
        close every socket (clients reconnect and resume elsewhere or after the
        restart), then let aiohttp shut down as on SIGINT."""
        loop = asyncio.get_running_loop()

        async def stop() -> None:
            await drain(app)
            # Drop every transport without an Engine.IO CLOSE packet: clients see
            # the link go away (not a server "disconnect") and so reconnect.
            await compat.close_all_sockets(sio)
            os.kill(os.getpid(), signal.SIGINT)  # aiohttp's own graceful exit

        def on_sigterm() -> None:
            if not app[SERVICE].draining:
                app[SERVICE].draining = True
                task = loop.create_task(stop())
                app[_STOPPING] = task

        try:
            loop.add_signal_handler(signal.SIGTERM, on_sigterm)
        except (NotImplementedError, RuntimeError):  # not the main thread (tests): skip
            pass

    app.cleanup_ctx.append(lifecycle)
    app.on_startup.append(graceful_sigterm)
    app.on_shutdown.append(drain)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_route)
    app.router.add_get("/api/connections/{connection_id}/receipt", receipt_route)
    app.router.add_get("/api/keys", keys_route)
    views.setup(app)
    receipt_view.setup(app)  # /c/{id}/receipt, /verify
    return app
