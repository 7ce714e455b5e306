"""GraphQL errors with `extensions.code`, and how gRPC status codes map onto them."""

from __future__ import annotations

import enum

import grpc
from graphql import GraphQLError

from nextcampus_common.metadata import PROBLEM, RETRY_AFTER_MS, metadata_value


class Code(enum.StrEnum):
    UNAUTHENTICATED = "UNAUTHENTICATED"
    FORBIDDEN = "FORBIDDEN"
    BAD_USER_INPUT = "BAD_USER_INPUT"
    RATE_LIMITED = "RATE_LIMITED"
    NOT_FOUND = "NOT_FOUND"
    READ_ONLY = "READ_ONLY"
    UNAVAILABLE = "UNAVAILABLE"
    INTERNAL = "INTERNAL"
    # An event cursor older than what the course's event log keeps: reload the history
    # (`messages`) and subscribe again after its `eventCursor`.
    CURSOR_EXPIRED = "CURSOR_EXPIRED"
    # The message's state or the course's rules do not allow the change now (the message
    # was deleted, the edit window closed, too many reactions or pins): no use retrying.
    FAILED_PRECONDITION = "FAILED_PRECONDITION"


CODE_OF_STATUS: dict[grpc.StatusCode, Code] = {
    grpc.StatusCode.UNAUTHENTICATED: Code.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED: Code.FORBIDDEN,
    grpc.StatusCode.INVALID_ARGUMENT: Code.BAD_USER_INPUT,
    grpc.StatusCode.RESOURCE_EXHAUSTED: Code.RATE_LIMITED,
    grpc.StatusCode.NOT_FOUND: Code.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION: Code.READ_ONLY,
    grpc.StatusCode.UNAVAILABLE: Code.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED: Code.UNAVAILABLE,
    grpc.StatusCode.CANCELLED: Code.UNAVAILABLE,
}


class ApiError(GraphQLError):
    """A GraphQL error a client can act on: `extensions.code` says what went wrong."""

    def __init__(self, code: Code, message: str, **extensions: object) -> None:
        super().__init__(message, extensions={"code": code.value, **extensions})
        self.code = code


# FAILED_PRECONDITION stands for several problems; the chat service names which in the
# trailing metadata (nextcampus_common.metadata.PROBLEM). Without it (an older chat
# service) it was a read-only course.
CODE_OF_PROBLEM: dict[str, Code] = {
    "read_only": Code.READ_ONLY,
    "cursor_expired": Code.CURSOR_EXPIRED,
    "failed_precondition": Code.FAILED_PRECONDITION,
}

CURSOR_EXPIRED_MESSAGE = (
    "the cursor is older than what the course's event log keeps: reload the history "
    "(query `messages`) and subscribe again with `after` = its `eventCursor`"
)


def from_grpc(exc: grpc.aio.AioRpcError) -> ApiError:
    code = CODE_OF_STATUS.get(exc.code(), Code.INTERNAL)
    trailing = exc.trailing_metadata()
    if exc.code() is grpc.StatusCode.FAILED_PRECONDITION:
        code = CODE_OF_PROBLEM.get(metadata_value(trailing, PROBLEM) or "", Code.READ_ONLY)
        if code is Code.CURSOR_EXPIRED:
            return ApiError(code, CURSOR_EXPIRED_MESSAGE)
    extensions: dict[str, object] = {}
    if metadata_value(trailing, PROBLEM) == "slow_mode":
        extensions["reason"] = "SLOW_MODE"  # not the rate limit: the course's slow mode
    retry_after_ms = metadata_value(trailing, RETRY_AFTER_MS)
    if retry_after_ms is not None:
        extensions["retryAfterMs"] = int(retry_after_ms)
    elif code is Code.RATE_LIMITED:
        # RESOURCE_EXHAUSTED without the rate limit's hint came from the transport (a
        # message over a size limit): not something a client can wait out.
        code = Code.INTERNAL
    message = exc.details() or exc.code().name
    if code is Code.INTERNAL:
        message = "internal error in the chat service"
    return ApiError(code, message, **extensions)


def from_grpc_events(exc: grpc.aio.AioRpcError) -> ApiError:
    """A failure of a call on the course's event log (ListEvents, SubscribeEvents after a
    cursor): there FAILED_PRECONDITION means the cursor expired, not a read-only course."""
    if exc.code() is grpc.StatusCode.FAILED_PRECONDITION:
        return ApiError(Code.CURSOR_EXPIRED, CURSOR_EXPIRED_MESSAGE)
    return from_grpc(exc)
