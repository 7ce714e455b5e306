"""A process's sends to the chat service over a few long-lived SendMessages streams instead
of one unary SendMessage call each: a unary call costs the chat process more than the send
itself (README, "Performance"). The GraphQL processes send their users' messages so.

- `count` streams, opened when first needed; the channel's round_robin picks a chat pod for
  each as it opens, so they spread over the pods. Sends take the streams in turn.
- A send carries its sender's token. Its answer (matched by sequence) is the
  SendMessageResponse, or the very AioRpcError a unary call would raise (status code,
  details, `chat-problem` and `retry-after-ms` trailers): callers cannot tell them apart.
- A send refused UNAVAILABLE, or caught on a stream that broke (a chat pod gone), is tried
  again as gRPC's retry policy tries a unary call (`max_attempts`, backoff from 50 ms
  doubling to 1 s, within the deadline) on another stream. Every send carries a
  client_message_id, so a retry never stores it twice.
- A chat service without SendMessages (UNIMPLEMENTED: an older version during an upgrade)
  turns the streams off for a minute: sends go as unary calls meanwhile.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc

from nextcampus_common.logs import get_logger
from nextcampus_common.metadata import PROBLEM, RETRY_AFTER_MS
from nextcampus_common.proto.chat.v1 import chat_pb2, chat_pb2_grpc

log = get_logger(__name__)

FIRST_BACKOFF_SECONDS = 0.05
MAX_BACKOFF_SECONDS = 1.0
# How long sends go as unary calls after a chat pod did not know SendMessages.
UNARY_AFTER_UNIMPLEMENTED_SECONDS = 60.0

UnarySend = Callable[
    [chat_pb2.SendMessageRequest, str, float], Awaitable[chat_pb2.SendMessageResponse]
]


def rpc_error(
    code: grpc.StatusCode, details: str, *trailers: tuple[str, str]
) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(
        code, grpc.aio.Metadata(), grpc.aio.Metadata(*trailers), details=details
    )


STATUS_BY_NUMBER = {status.value[0]: status for status in grpc.StatusCode}


def failure_as_error(failure: chat_pb2.SendFailure) -> grpc.aio.AioRpcError:
    """A refused streamed send as the error SendMessage would have ended with."""
    trailers = [(PROBLEM, failure.problem)] if failure.problem else []
    if failure.HasField("retry_after_ms"):
        trailers.append((RETRY_AFTER_MS, str(failure.retry_after_ms)))
    code = STATUS_BY_NUMBER.get(failure.code, grpc.StatusCode.UNKNOWN)
    return rpc_error(code, failure.message, *trailers)


class _SendStream:
    """One SendMessages call: requests go through an outbox that gRPC drains in order (one
    writer), answers are matched to their waiting sends by sequence."""

    def __init__(self, stub: chat_pb2_grpc.ChatServiceStub) -> None:
        self._outbox: asyncio.Queue[chat_pb2.StreamedSend | None] = asyncio.Queue()
        self._waiting: dict[int, asyncio.Future[chat_pb2.StreamedSendResult]] = {}
        self.broken = False
        self._call = stub.SendMessages(self._requests())
        self._reader = asyncio.create_task(self._read(), name="SendMessages reader")

    async def _requests(self) -> AsyncIterator[chat_pb2.StreamedSend]:
        while (request := await self._outbox.get()) is not None:
            yield request

    async def _read(self) -> None:
        error = rpc_error(grpc.StatusCode.UNAVAILABLE, "the chat service ended the send stream")
        try:
            async for result in self._call:
                waiter = self._waiting.pop(result.sequence, None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(result)
        except grpc.aio.AioRpcError as exc:
            error = exc
        finally:
            self.broken = True
            for waiter in self._waiting.values():
                if not waiter.done():
                    waiter.set_exception(error)
            self._waiting.clear()

    async def send(
        self, request: chat_pb2.StreamedSend, within_seconds: float
    ) -> chat_pb2.StreamedSendResult:
        if self.broken:
            raise rpc_error(grpc.StatusCode.UNAVAILABLE, "the send stream is closed")
        waiter: asyncio.Future[chat_pb2.StreamedSendResult] = (
            asyncio.get_running_loop().create_future()
        )
        self._waiting[request.sequence] = waiter
        self._outbox.put_nowait(request)
        try:
            return await asyncio.wait_for(waiter, within_seconds)
        except TimeoutError:
            raise rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded") from None
        finally:
            self._waiting.pop(request.sequence, None)

    def close(self) -> None:
        self.broken = True
        self._outbox.put_nowait(None)
        self._call.cancel()
        self._reader.cancel()


class SendStreams:
    def __init__(
        self,
        stub: chat_pb2_grpc.ChatServiceStub,
        unary_send: UnarySend,
        *,
        count: int,
        max_attempts: int,
    ) -> None:
        self._stub = stub
        self._unary_send = unary_send
        self._streams: list[_SendStream | None] = [None] * count
        self._turn = itertools.cycle(range(count))
        self._sequence = itertools.count(1)
        self._max_attempts = max_attempts
        self._unary_until = 0.0  # monotonic
        self._closed = False

    def _next_stream(self) -> _SendStream:
        slot = next(self._turn)
        stream = self._streams[slot]
        if stream is None or stream.broken:
            if stream is not None:
                stream.close()
            stream = self._streams[slot] = _SendStream(self._stub)
        return stream

    async def send(
        self, token: str, request: chat_pb2.SendMessageRequest, deadline_seconds: float
    ) -> chat_pb2.SendMessageResponse:
        deadline = time.monotonic() + deadline_seconds
        backoff = FIRST_BACKOFF_SECONDS
        for attempt in range(1, self._max_attempts + 1):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
            if self._closed or time.monotonic() < self._unary_until:
                return await self._unary_send(request, token, remaining)
            streamed = chat_pb2.StreamedSend(
                sequence=next(self._sequence), authorization=f"Bearer {token}", send=request
            )
            try:
                result = await self._next_stream().send(streamed, remaining)
            except grpc.aio.AioRpcError as exc:
                if exc.code() is grpc.StatusCode.UNIMPLEMENTED:
                    log.warning("the chat service has no SendMessages: unary sends for a while")
                    self._unary_until = time.monotonic() + UNARY_AFTER_UNIMPLEMENTED_SECONDS
                    return await self._unary_send(request, token, deadline - time.monotonic())
                # The stream broke under it (a chat pod went away): it may or may not be
                # stored; its client_message_id makes another try safe.
                error = exc
                if exc.code() is grpc.StatusCode.DEADLINE_EXCEEDED or self._closed:
                    raise
            else:
                if result.HasField("sent"):
                    return result.sent
                error = failure_as_error(result.failed)
                if error.code() is not grpc.StatusCode.UNAVAILABLE:
                    raise error
            if attempt == self._max_attempts:
                raise error
            await asyncio.sleep(min(backoff, max(0.0, deadline - time.monotonic())))
            backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
        raise AssertionError("unreachable")

    def close(self) -> None:
        self._closed = True
        for stream in self._streams:
            if stream is not None:
                stream.close()
