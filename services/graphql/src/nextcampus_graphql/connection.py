"""One WebSocket connection speaking `graphql-transport-ws` or the legacy `graphql-ws`.

The protocol rules and close codes follow graphql-transport-ws (PROTOCOL.md of graphql-ws):
4400 bad message, 4401 subscribe before the ack, 4403 token refused or expired, 4408 no
connection_init in time, 4409 duplicate operation id, 4429 a second connection_init; plus
4008 for a slow consumer that was cut off, 4013 for a user past `max_sockets_per_user` and
1012 when the pod shuts down (4008 and 4013 mirror 1008 "policy violation" and 1013 "try
again later", in the range graphql-ws clients reconnect after). Nothing a client sends can
raise out of here: every bad input ends as an error message or a close.
"""

from __future__ import annotations

import asyncio
import time
from asyncio import Transport
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import grpc
import orjson
from aiohttp import WSMsgType, web
from graphql import ExecutionResult, OperationType

from nextcampus_common.auth import AuthError, Identity, bearer_token
from nextcampus_common.logs import get_logger
from nextcampus_graphql.context import RequestContext, event_cursor_arg, message_id_arg
from nextcampus_graphql.errors import ApiError, Code, from_grpc
from nextcampus_graphql.fanout import Member, websocket_text_frame
from nextcampus_graphql.limits import Release
from nextcampus_graphql.operations import (
    Operation,
    OperationError,
    OperationResult,
    execute_event,
    format_error,
    format_result,
    run_operation,
)
from nextcampus_graphql.schema.subscriptions import COURSE_EVENTS, EXPORT_COURSE, MY_UPDATES
from nextcampus_graphql.upstream import Joined
from nextcampus_graphql.wiring import Wiring

log = get_logger(__name__)

TRANSPORT_WS = "graphql-transport-ws"
LEGACY_WS = "graphql-ws"
SUBPROTOCOLS = (TRANSPORT_WS, LEGACY_WS)

CLOSE_SLOW_CONSUMER = 4008
CLOSE_BAD_REQUEST = 4400
CLOSE_UNAUTHORIZED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_SUBPROTOCOL = 4406
CLOSE_INIT_TIMEOUT = 4408
CLOSE_DUPLICATE_ID = 4409
CLOSE_TOO_MANY_INITS = 4429
CLOSE_TOO_MANY_SOCKETS = 4013
CLOSE_SERVICE_RESTART = 1012
# A close frame carries at most 125 bytes: the code (2) and a UTF-8 reason.
MAX_CLOSE_REASON_BYTES = 123

KEEPALIVE_FRAME = {
    TRANSPORT_WS: websocket_text_frame(b'{"type":"ping"}'),
    LEGACY_WS: websocket_text_frame(b'{"type":"ka"}'),
}
PAYLOAD_TOKEN_KEYS = ("authorization", "Authorization", "access_token", "accessToken", "token")


def close_reason(text: str) -> bytes:
    """`text` as a close frame's reason: UTF-8, cut to fit the frame on a character boundary
    (a reason cut inside a character is invalid UTF-8, and clients then fail the socket with
    1007 instead of reporting our code)."""
    encoded = text.encode()
    if len(encoded) <= MAX_CLOSE_REASON_BYTES:
        return encoded
    return encoded[:MAX_CLOSE_REASON_BYTES].decode(errors="ignore").encode()


def token_from_payload(payload: dict[str, Any]) -> str | None:
    for key in PAYLOAD_TOKEN_KEYS:
        value = payload.get(key)
        if isinstance(value, str) and value.strip():
            return bearer_token(value) or value.strip()
    return None


@dataclass(eq=False)
class RunningOperation:
    task: asyncio.Task[None] | None = None
    joined: Joined | None = None  # a subscription's place in its course's fan-out
    done: bool = False
    # Gives back what the operation counts against (a query slot of the socket, a
    # subscription of the user); called once the operation is forgotten.
    release: Release | None = None


@dataclass(eq=False)
class Connection:
    ws: web.WebSocketResponse
    transport: Transport
    protocol: str
    wiring: Wiring
    # Runs a coroutine past this socket's reader (the close handshake): the socket registry
    # waits for them at shutdown.
    spawn: Callable[[Coroutine[Any, Any, Any]], None]
    upgrade_token: str | None
    token: str = ""
    identity: Identity | None = None
    expires_at: float = 0.0
    acknowledged: bool = False
    init_received: bool = False
    closing: bool = False
    operations: dict[str, RunningOperation] = field(default_factory=dict)
    queries_in_flight: int = 0
    _timers: list[asyncio.TimerHandle] = field(default_factory=list)
    _release_socket: Release | None = None
    _ended: bool = False
    # Mutations of one socket run one after another, in the order they arrived: a user who
    # sends two messages sees them stored in that order. (Created on the first mutation:
    # most sockets only subscribe.)
    _mutations: asyncio.Lock | None = None

    # -- writing (the fan-out engine's Sink) ---------------------------------------------

    def write_frame(self, frame: bytes) -> None:
        if self.closing or self.transport.is_closing():
            return
        if self.transport.get_write_buffer_size() > self.wiring.settings.socket_buffer_bytes:
            self.wiring.metrics.slow_consumer_closes.inc()
            self.close(CLOSE_SLOW_CONSUMER, "slow consumer: subscribe again with `after`")
            return
        self.transport.write(frame)

    def write_ephemeral(self, frame: bytes) -> bool:
        """A frame that may be dropped (typing, presence): not written while the socket has a
        backlog of a quarter of its limit, so it never adds to what cuts a socket off."""
        if self.closing or self.transport.is_closing():
            return False
        if self.transport.get_write_buffer_size() > self.wiring.settings.socket_buffer_bytes // 4:
            return False
        self.transport.write(frame)
        return True

    def send(self, message: dict[str, Any]) -> None:
        self.write_frame(websocket_text_frame(orjson.dumps(message)))

    def send_errors(self, operation_id: str, errors: list[dict[str, Any]]) -> None:
        if self.protocol == TRANSPORT_WS:
            self.send({"id": operation_id, "type": "error", "payload": errors})
        else:  # the legacy protocol carries one error object
            self.send({"id": operation_id, "type": "error", "payload": errors[0]})

    def refuse(self, operation_id: str, error: ApiError) -> None:
        """An operation refused before it started (its id stays free)."""
        formatted = format_error(error)
        self.wiring.metrics.count_refusals([formatted])
        self.send_errors(operation_id, [formatted])

    def forget(self, operation_id: str) -> RunningOperation | None:
        """End the bookkeeping of an operation: it is done, and what it held is released."""
        running = self.operations.pop(operation_id, None)
        if running is not None:
            running.done = True
            if running.release is not None:
                running.release()
        return running

    def operation_failed(self, operation_id: str, errors: list[dict[str, Any]]) -> None:
        if self.forget(operation_id) is not None:
            self.wiring.metrics.operations.labels("subscription", "error").inc()
            self.send_errors(operation_id, errors)

    def close(self, code: int, reason: str) -> None:
        """Close with a code (once); the reader loop ends and cleans up."""
        if self.closing:
            return
        self.closing = True
        self.wiring.metrics.socket_closes.labels(str(code)).inc()
        self.spawn(self.ws.close(code=code, message=close_reason(reason)))

    def keepalive(self) -> None:
        if self.acknowledged:
            self.write_frame(KEEPALIVE_FRAME[self.protocol])

    # -- reading ---------------------------------------------------------------------------

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        self._timers.append(
            loop.call_later(
                self.wiring.settings.connection_init_timeout_seconds, self._init_timed_out
            )
        )
        try:
            async for message in self.ws:
                if message.type is WSMsgType.TEXT:
                    await self.on_text(message.data)
                elif message.type is WSMsgType.BINARY:
                    self.close(CLOSE_BAD_REQUEST, "binary frames are not supported")
        finally:
            self._ended = True
            for timer in self._timers:
                timer.cancel()
            for operation_id in list(self.operations):
                self.stop(operation_id)
            if self._release_socket is not None:
                self._release_socket()

    def _init_timed_out(self) -> None:
        if not self.init_received:
            self.close(CLOSE_INIT_TIMEOUT, "Connection initialisation timeout")

    def _token_expired(self) -> None:
        self.close(CLOSE_FORBIDDEN, "token expired: reconnect with a new token and `after`")

    async def on_text(self, data: str) -> None:
        try:
            message = orjson.loads(data)
        except orjson.JSONDecodeError:
            self.close(CLOSE_BAD_REQUEST, "invalid JSON")
            return
        kind = message.get("type") if isinstance(message, dict) else None
        if not isinstance(kind, str):
            self.close(CLOSE_BAD_REQUEST, "a message must be an object with a string `type`")
            return
        handler = HANDLERS[self.protocol].get(kind)
        if handler is None:
            self.close(CLOSE_BAD_REQUEST, f"unknown message type {kind[:40]!r}")
            return
        # Only connection_init awaits (a token may need the JWKS URL); reading waits for it,
        # so a subscribe sent right behind it is handled after the ack.
        pending = handler(self, message)
        if pending is not None:
            await pending

    # -- protocol messages -----------------------------------------------------------------

    async def on_connection_init(self, message: dict[str, Any]) -> None:
        if self.init_received:
            self.close(CLOSE_TOO_MANY_INITS, "Too many initialisation requests")
            return
        self.init_received = True
        payload = message.get("payload")
        if payload is not None and not isinstance(payload, dict):
            self.close(CLOSE_BAD_REQUEST, "connection_init payload must be an object")
            return
        token = token_from_payload(payload or {}) or self.upgrade_token
        try:
            identity = await self.wiring.verifier.verify(token)
        except AuthError as exc:
            if self.protocol == LEGACY_WS:
                self.send({"type": "connection_error", "payload": {"message": str(exc)}})
            self.close(CLOSE_FORBIDDEN, f"Forbidden: {exc}")
            return
        assert token is not None
        if not self._admit(identity):
            return
        self.identity, self.token, self.expires_at = identity, token, identity.expires_at
        loop = asyncio.get_running_loop()
        self._timers.append(
            loop.call_later(max(0.0, identity.expires_at - time.time()), self._token_expired)
        )
        self.acknowledged = True
        self.send({"type": "connection_ack"})
        if self.protocol == LEGACY_WS:
            self.write_frame(KEEPALIVE_FRAME[LEGACY_WS])

    def _admit(self, identity: Identity) -> bool:
        """Count the socket against its user's `max_sockets_per_user`; past it, close it with
        4013 (another socket of the user must close first, or the gateway places a retry on
        another pod)."""
        if self._ended:  # gone while its token was checked: nothing to count
            return False
        release = self.wiring.users.open_socket(identity.user_id)
        if release is None:
            limit = self.wiring.users.max_sockets
            self.wiring.metrics.limit_refusals.labels("max_sockets_per_user").inc()
            reason = f"Too many sockets: user {identity.user_id} holds {limit} on this server"
            if self.protocol == LEGACY_WS:
                self.send({"type": "connection_error", "payload": {"message": reason}})
            self.close(CLOSE_TOO_MANY_SOCKETS, reason)
            return False
        self._release_socket = release
        return True

    def on_ping(self, message: dict[str, Any]) -> None:
        pong: dict[str, Any] = {"type": "pong"}
        if isinstance(message.get("payload"), dict):
            pong["payload"] = message["payload"]
        self.send(pong)

    def on_pong(self, _message: dict[str, Any]) -> None:
        pass

    def on_subscribe(self, message: dict[str, Any]) -> None:
        if not self.acknowledged:
            self.close(CLOSE_UNAUTHORIZED, "Unauthorized")
            return
        operation_id = message.get("id")
        payload = message.get("payload")
        if not isinstance(operation_id, str) or not operation_id or len(operation_id) > 128:
            self.close(CLOSE_BAD_REQUEST, "`id` must be a string of 1-128 characters")
            return
        if not isinstance(payload, dict):
            self.close(CLOSE_BAD_REQUEST, "`payload` must be an object")
            return
        if operation_id in self.operations:
            self.close(CLOSE_DUPLICATE_ID, f"Subscriber for {operation_id[:40]} already exists")
            return
        settings = self.wiring.settings
        limit = settings.max_operations_per_socket
        if len(self.operations) >= limit:
            error = ApiError(
                Code.RATE_LIMITED,
                f"at most {limit} operations per socket",
                limit="max_operations_per_socket",
            )
            self.refuse(operation_id, error)
            return
        try:
            operation = self.wiring.operations.prepare(payload)
        except OperationError as exc:
            errors = [format_error(e) for e in exc.errors]
            self.wiring.metrics.operations.labels("invalid", "error").inc()
            self.wiring.metrics.count_refusals(errors)
            self.send_errors(operation_id, errors)
            return
        running = RunningOperation()
        if operation.kind is OperationType.SUBSCRIPTION:
            assert self.identity is not None  # acknowledged
            try:
                running.release = self.wiring.users.add_subscription(
                    self.identity.user_id, operation.fanout_key(), operation.cost
                )
            except ApiError as exc:
                self.refuse(operation_id, exc)
                return
        elif operation.kind is OperationType.QUERY:
            # Queries would otherwise run without bound over one socket (the gateway's HTTP
            # rate limit never sees them); mutations already run one at a time.
            if self.queries_in_flight >= settings.max_queries_per_socket:
                error = ApiError(
                    Code.RATE_LIMITED,
                    f"at most {settings.max_queries_per_socket} queries in flight per socket: "
                    "send more once answers arrive",
                    limit="max_queries_per_socket",
                )
                self.refuse(operation_id, error)
                return
            running.release = self._query_slot()
        self.operations[operation_id] = running
        coroutine = (
            self._subscribe(operation_id, operation, running)
            if operation.kind is OperationType.SUBSCRIPTION
            else self._execute(operation_id, operation, running)
        )
        running.task = asyncio.get_running_loop().create_task(coroutine)
        running.task.add_done_callback(
            lambda task: self._operation_ended(operation_id, running, task)
        )

    def _operation_ended(
        self, operation_id: str, running: RunningOperation, task: asyncio.Task[None]
    ) -> None:
        """A bug of ours in an operation: log it, tell the client, keep the socket."""
        if task.cancelled() or task.exception() is None:
            return
        log.error("operation failed", operation_id=operation_id, exc_info=task.exception())
        if self.operations.get(operation_id) is running:
            error = {"message": "internal error", "extensions": {"code": Code.INTERNAL.value}}
            self.operation_failed(operation_id, [error])

    def _query_slot(self) -> Release:
        self.queries_in_flight += 1

        def release() -> None:
            self.queries_in_flight -= 1

        return release  # called once: by `forget`

    def on_complete(self, message: dict[str, Any]) -> None:
        operation_id = message.get("id")
        if isinstance(operation_id, str):
            self.stop(operation_id)

    def on_terminate(self, _message: dict[str, Any]) -> None:
        self.close(1000, "terminated")

    def stop(self, operation_id: str) -> None:
        running = self.forget(operation_id)
        if running is None:
            return
        if running.joined is not None:
            running.joined.leave()
        elif running.task is not None:
            running.task.cancel()

    # -- running operations ----------------------------------------------------------------

    def _context(self) -> RequestContext:
        return RequestContext(
            chat=self.wiring.chat,
            identity=self.identity,
            token=self.token,
            history_page_limit=self.wiring.settings.history_page_limit,
        )

    def _complete(self, operation_id: str) -> None:
        self.send({"id": operation_id, "type": "complete"})

    def _next_prefix(self, operation_id: str) -> bytes:
        """`{"id":…,"type":"next","payload":` ("data" in the legacy protocol): a result
        frame is this, the serialized payload, and `}`."""
        next_type = b"next" if self.protocol == TRANSPORT_WS else b"data"
        return b'{"id":' + orjson.dumps(operation_id) + b',"type":"' + next_type + b'","payload":'

    async def _execute(
        self, operation_id: str, operation: Operation, running: RunningOperation
    ) -> None:
        wiring = self.wiring

        async def run() -> OperationResult:
            return await run_operation(
                wiring.schema,
                operation,
                self._context(),
                max_response_bytes=wiring.settings.max_response_bytes,
            )

        if operation.kind is OperationType.MUTATION:
            if self._mutations is None:
                self._mutations = asyncio.Lock()
            async with self._mutations:
                result = await run()
        else:
            result = await run()
        kind = operation.kind.value
        wiring.metrics.operations.labels(kind, "error" if result.failed else "ok").inc()
        if result.refused_by is not None:
            wiring.metrics.limit_refusals.labels(result.refused_by).inc()
        if running.done:  # the client completed it meanwhile
            return
        self.forget(operation_id)
        self.write_frame(
            websocket_text_frame(self._next_prefix(operation_id) + result.payload + b"}")
        )
        self._complete(operation_id)

    async def _subscribe(
        self, operation_id: str, operation: Operation, running: RunningOperation
    ) -> None:
        wiring = self.wiring
        try:
            arguments = operation.root_arguments(wiring.schema)
            member = Member(self, operation_id, self._next_prefix(operation_id))
            if operation.root_field.name.value == EXPORT_COURSE:
                course_id = arguments["course_id"]
                token = self._context().moderator(course_id, "export it")
                await self._export(operation_id, operation, member, course_id, token)
                return
            if operation.root_field.name.value == MY_UPDATES:
                identity, token = self._context().viewer()
                joined = await wiring.updates.subscribe(
                    operation, member, identity, token, arguments.get("after")
                )
            else:
                course_id = arguments["course_id"]  # graphene names arguments in snake case
                token = self._context().member(course_id)
                # `after` is an event cursor for courseEvents, a message id for messageAdded.
                after = (
                    event_cursor_arg(arguments.get("after"), "after")
                    if operation.root_field.name.value == COURSE_EVENTS
                    else message_id_arg(arguments.get("after"), "after")
                )
                assert self.identity is not None  # acknowledged
                joined = await wiring.upstream.join(
                    operation,
                    member,
                    course_id,
                    after,
                    moderator=self.identity.may_moderate(course_id),
                )
                joined = wiring.presence.holding(joined, course_id, self.identity.user_id, self)
        except OperationError as exc:
            self.operation_failed(operation_id, [format_error(e) for e in exc.errors])
            return
        except ApiError as exc:
            self.operation_failed(operation_id, [format_error(exc)])
            return
        if running.done:  # completed (or the socket closed) while joining
            joined.leave()
            return
        running.joined = joined
        wiring.metrics.operations.labels("subscription", "ok").inc()

    async def _export(
        self, operation_id: str, operation: Operation, member: Member, course_id: str, token: str
    ) -> None:
        """`exportCourse`: the chat service's ExportCourse stream, a `next` per chunk, then
        `complete`. Each frame waits until the socket has taken the one before (aiohttp's
        drain), so a long export follows the client's pace instead of filling the socket's
        buffer and being cut off as a slow consumer; the chat stream waits with it (gRPC flow
        control). Completing the operation cancels this task and with it the stream."""
        wiring = self.wiring
        call = wiring.chat.export(token, course_id)
        try:
            async for chunk in call:
                if self.closing:
                    return
                result = execute_event(wiring.schema, operation, chunk)
                assert isinstance(result, ExecutionResult)  # the resolvers are sync
                frame = member.prefix + orjson.dumps(format_result(result)) + b"}"
                await self.ws.send_str(frame.decode())
        except grpc.aio.AioRpcError as exc:
            self.operation_failed(operation_id, [format_error(from_grpc(exc))])
            return
        except ConnectionResetError:  # the socket closed under the export: nobody to tell
            return
        finally:
            call.cancel()
        if self.forget(operation_id) is not None:
            wiring.metrics.operations.labels("subscription", "ok").inc()
            self._complete(operation_id)


HANDLERS = {
    TRANSPORT_WS: {
        "connection_init": Connection.on_connection_init,
        "ping": Connection.on_ping,
        "pong": Connection.on_pong,
        "subscribe": Connection.on_subscribe,
        "complete": Connection.on_complete,
    },
    LEGACY_WS: {
        "connection_init": Connection.on_connection_init,
        "start": Connection.on_subscribe,
        "stop": Connection.on_complete,
        "connection_terminate": Connection.on_terminate,
    },
}
