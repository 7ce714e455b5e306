"""The app factory of a GraphQL process: `create_app(settings)` wires everything once.

Routes: `/graphql` (POST for queries and mutations; GET upgrades to a WebSocket speaking
graphql-transport-ws or graphql-ws), `/healthz`, `/readyz` (a chat pod is reachable), and the
web chat page: `/` and its files under `/static/`. `/metrics` is served on its own port
(`metrics_port`) only, so nothing routed to the API port can read it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib.resources
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import orjson
from aiohttp import web
from graphql import OperationType

from nextcampus_common.auth import AuthError, bearer_token
from nextcampus_common.logs import get_logger
from nextcampus_common.metrics import serve_metrics
from nextcampus_graphql.connection import (
    CLOSE_SERVICE_RESTART,
    CLOSE_SUBPROTOCOL,
    SUBPROTOCOLS,
    Connection,
    close_reason,
)
from nextcampus_graphql.context import RequestContext
from nextcampus_graphql.errors import Code
from nextcampus_graphql.metrics import GraphqlMetrics
from nextcampus_graphql.operations import OperationError, format_error, run_operation
from nextcampus_graphql.settings import GraphqlSettings
from nextcampus_graphql.sockets import SocketRegistry
from nextcampus_graphql.wiring import Wiring, wire

log = get_logger(__name__)

WIRING = web.AppKey("wiring", Wiring)
SOCKETS = web.AppKey("sockets", SocketRegistry)


def _json(body: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def _error_response(code: Code, message: str, status: int) -> web.Response:
    return _json({"errors": [{"message": message, "extensions": {"code": code.value}}]}, status)


def request_token(request: web.Request) -> str | None:
    """The token of the `Authorization` header, else of the `access_token` query parameter."""
    return bearer_token(request.headers.get("Authorization")) or (
        request.query.get("access_token") or None
    )


async def graphql_post(request: web.Request) -> web.Response:
    wiring = request.app[WIRING]
    token = request_token(request)
    identity = None
    if token is not None:
        try:
            identity = await wiring.verifier.verify(token)
        except AuthError as exc:
            return _error_response(Code.UNAUTHENTICATED, str(exc), 401)
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return _error_response(Code.BAD_USER_INPUT, "the body must be JSON", 400)
    try:
        operation = wiring.operations.prepare(body)
    except OperationError as exc:
        errors = [format_error(e) for e in exc.errors]
        wiring.metrics.operations.labels("invalid", "error").inc()
        wiring.metrics.count_refusals(errors)
        return _json({"errors": errors}, 400)
    if operation.kind is OperationType.SUBSCRIPTION:
        return _error_response(
            Code.BAD_USER_INPUT, "subscriptions are served over WebSocket at /graphql", 400
        )
    context = RequestContext(
        chat=wiring.chat,
        identity=identity,
        token=token,
        history_page_limit=wiring.settings.history_page_limit,
    )
    result = await run_operation(
        wiring.schema,
        operation,
        context,
        max_response_bytes=wiring.settings.max_response_bytes,
    )
    wiring.metrics.operations.labels(operation.kind.value, "error" if result.failed else "ok").inc()
    if result.refused_by is not None:
        wiring.metrics.limit_refusals.labels(result.refused_by).inc()
    return web.Response(body=result.payload, content_type="application/json")


async def graphql_websocket(request: web.Request) -> web.StreamResponse:
    wiring, sockets = request.app[WIRING], request.app[SOCKETS]
    if not sockets.accepting:
        raise web.HTTPServiceUnavailable(text="shutting down")
    settings = wiring.settings
    ws = web.WebSocketResponse(
        protocols=SUBPROTOCOLS,
        compress=False,  # frames are written pre-built to many sockets
        max_msg_size=settings.max_frame_bytes,
        heartbeat=settings.keepalive_seconds * 2,  # WebSocket pings find dead peers
    )
    await ws.prepare(request)
    if ws.ws_protocol not in SUBPROTOCOLS:
        await ws.close(code=CLOSE_SUBPROTOCOL, message=close_reason("Subprotocol not acceptable"))
        return ws
    transport = request.transport
    assert transport is not None
    connection = Connection(
        ws=ws,
        transport=transport,
        protocol=ws.ws_protocol,
        wiring=wiring,
        spawn=sockets.spawn,
        upgrade_token=request_token(request),
    )
    gauge = wiring.metrics.connections.labels(ws.ws_protocol)
    gauge.inc()
    try:
        with sockets.holding(connection):
            await connection.serve()
    finally:
        gauge.dec()
    return ws


async def graphql_get(request: web.Request) -> web.StreamResponse:
    if request.headers.get("Upgrade", "").lower() == "websocket":
        return await graphql_websocket(request)
    return _error_response(
        Code.BAD_USER_INPUT, "POST a query, or open a WebSocket (graphql-transport-ws)", 405
    )


async def healthz(_request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def readyz(request: web.Request) -> web.Response:
    if not request.app[SOCKETS].accepting:
        return web.Response(status=503, text="shutting down")
    if not await request.app[WIRING].chat.ready():
        return web.Response(status=503, text="no chat pod reachable")
    return web.Response(text="ready")


@dataclass(frozen=True, slots=True)
class StaticFile:
    body: bytes
    content_type: str
    etag: str


# The page is a few files shipped inside the package (no build step, no CDN): served from
# memory, revalidated by the browser on every load (`no-cache` + ETag) so a new deployment is
# picked up at once. Only these are served: the list is the allow-list of `/static/`.
WEB_FILES = {
    "index.html": "text/html",
    "app.js": "text/javascript",
    # The words of the page, one catalogue per language (web/i18n.js says why modules).
    "i18n.js": "text/javascript",
    "i18n/en.js": "text/javascript",
    "i18n/ko.js": "text/javascript",
    "style.css": "text/css",
    # Browsers ask for an icon on every page; without one each load logs a 404.
    "icon.svg": "image/svg+xml",
}
PAGE_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    # The page is opened as `/?token=…`: no Referer may carry that URL anywhere.
    "Referrer-Policy": "no-referrer",
    # Only our own script, style and socket; message text is never markup, and this makes
    # sure of it even if a bug let some through.
    "Content-Security-Policy": (
        "default-src 'self'; object-src 'none'; base-uri 'none'; "
        "form-action 'none'; frame-ancestors 'none'"
    ),
}


def load_web_files() -> dict[str, StaticFile]:
    folder = importlib.resources.files("nextcampus_graphql").joinpath("web")
    files = {}
    for name, content_type in WEB_FILES.items():
        body = folder.joinpath(name).read_bytes()
        etag = hashlib.sha256(body).hexdigest()[:32]
        files[name] = StaticFile(body, content_type, etag)
    return files


def static_handler(
    files: dict[str, StaticFile], name: str | None = None
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """A handler of one file (`name`), or of `/static/{name}` among `files`."""

    async def handler(request: web.Request) -> web.Response:
        file = files.get(name or request.match_info["name"])
        if file is None or (name is None and file.content_type == "text/html"):
            raise web.HTTPNotFound()
        if any(tag.value == file.etag for tag in request.if_none_match or ()):
            return web.Response(status=304, headers={**PAGE_HEADERS, "ETag": f'"{file.etag}"'})
        response = web.Response(
            body=file.body, content_type=file.content_type, charset="utf-8", headers=PAGE_HEADERS
        )
        response.etag = file.etag
        return response

    return handler


async def _keepalive(sockets: SocketRegistry, interval_seconds: float) -> None:
    while True:
        await asyncio.sleep(interval_seconds)
        sockets.keepalive()


def create_app(
    settings: GraphqlSettings, graphql_metrics: GraphqlMetrics | None = None
) -> web.Application:
    app = web.Application(client_max_size=settings.max_body_bytes)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        metrics = graphql_metrics or GraphqlMetrics()
        metrics.hops.enabled = settings.hop_timing
        wiring = app[WIRING] = wire(settings, metrics)
        sockets = app[SOCKETS] = SocketRegistry()
        keepalive = asyncio.create_task(_keepalive(sockets, settings.keepalive_seconds))
        wiring.presence.start()
        serve_metrics(metrics.registry, settings.metrics_host, settings.metrics_port)
        yield
        keepalive.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await keepalive
        await wiring.close()

    async def on_shutdown(app: web.Application) -> None:
        """Not ready, no new sockets, every socket closed with 1012 so clients reconnect
        elsewhere and resume with `after`."""
        sockets = app[SOCKETS]
        sockets.close_all(CLOSE_SERVICE_RESTART, "service restart: reconnect and resume")
        await sockets.wait_for_closes(settings.shutdown_grace_seconds)

    app.cleanup_ctx.append(lifecycle)
    app.on_shutdown.append(on_shutdown)
    app.router.add_post("/graphql", graphql_post)
    app.router.add_get("/graphql", graphql_get)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    web_files = load_web_files()
    app.router.add_get("/", static_handler(web_files, "index.html"))
    app.router.add_get("/static/{name:.+}", static_handler(web_files))
    return app
