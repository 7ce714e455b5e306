"""Fan-out of one event to many sockets, done once per group rather than once per socket.

A group is every subscription of one course whose operation renders an event to the same
payload (same document, same result-shaping variables). Per event the group executes the
document once, serializes once, and builds one WebSocket frame per distinct
(subprotocol, operation id) prefix; most clients reuse ids like "1", so most sockets get
the very same bytes. Frames go straight to each socket's transport: no task, no queue per
socket. A socket whose unsent bytes pass its limit is closed with 4008 (it resumes with
`after`), so it never delays the others.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from google.protobuf.message import Message
from graphql import ExecutionResult, GraphQLSchema

from nextcampus_graphql.metrics import GraphqlMetrics
from nextcampus_graphql.operations import Operation, execute_event, format_result

OPCODE_TEXT = 0x1


def websocket_text_frame(payload: bytes) -> bytes:
    """One unmasked, unfragmented text frame (RFC 6455 §5.2), as a server sends it."""
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", 0x80 | OPCODE_TEXT, length)
    elif length < 1 << 16:
        header = struct.pack("!BBH", 0x80 | OPCODE_TEXT, 126, length)
    else:
        header = struct.pack("!BBQ", 0x80 | OPCODE_TEXT, 127, length)
    return header + payload


class Sink(Protocol):
    """A socket as the fan-out engine sees it."""

    token: str
    expires_at: float

    def write_frame(self, frame: bytes) -> None: ...

    def write_ephemeral(self, frame: bytes) -> bool:
        """Write a frame that may be dropped (typing, presence): False when the socket has a
        backlog and the frame was not written."""
        ...

    def operation_failed(self, operation_id: str, errors: list[dict[str, Any]]) -> None: ...


@dataclass(eq=False, slots=True)
class Member:
    sink: Sink
    operation_id: str
    # `{"id":"1","type":"next","payload":` (or "data" in the legacy protocol)
    prefix: bytes

    def frame(self, payload: bytes) -> bytes:
        return websocket_text_frame(self.prefix + payload + b"}")


class Group:
    """The subscriptions of one course that share a fan-out key. Its root field (`field_name`)
    says which events it takes; the course's upstream stream picks them (upstream.py)."""

    def __init__(
        self,
        key: tuple[str, str | None, bytes],
        operation: Operation,
        schema: GraphQLSchema,
        metrics: GraphqlMetrics,
        on_empty: Callable[[Group], None],
    ) -> None:
        self.key = key
        self.field_name = operation.root_field.name.value
        self._operation = operation
        self._schema = schema
        self._metrics = metrics
        self._on_empty = on_empty
        self.members: dict[Member, None] = {}  # insertion-ordered set

    def render(self, event: Message | object) -> bytes:
        """The `payload` of a next/data message for this event (a ChatMessage, a CourseEvent,
        or a presence or typing update), serialized once. No context: nothing in it may
        depend on a viewer."""
        result = execute_event(self._schema, self._operation, event)
        assert isinstance(result, ExecutionResult)  # every subscription resolver is sync
        return orjson.dumps(format_result(result))

    def add(self, member: Member) -> None:
        self.members[member] = None

    def remove(self, member: Member) -> None:
        self.members.pop(member, None)
        if not self.members:
            self._on_empty(self)

    def publish(
        self, event: Message | object, *, occurred_at_ms: int | None = None, ephemeral: bool = False
    ) -> None:
        """Render `event` once and write it to every member; `occurred_at_ms`: when the change
        was stored (the delivery latency's start). An `ephemeral` event (typing, presence) is
        skipped by a socket with a backlog instead of counting towards cutting it off."""
        if not self.members:
            return
        payload = self.render(event)
        frames: dict[bytes, bytes] = {}
        metrics = self._metrics
        written = 0
        # A write can close a slow socket, which leaves its group: iterate over a copy.
        for member in list(self.members):
            frame = frames.get(member.prefix)
            if frame is None:
                frame = frames[member.prefix] = member.frame(payload)
            if not ephemeral:
                member.sink.write_frame(frame)
                written += 1
            elif member.sink.write_ephemeral(frame):
                written += 1
            else:
                metrics.ephemeral_dropped.inc()
        metrics.deliveries.inc(written)
        metrics.fanout_group_size.observe(len(self.members))
        if occurred_at_ms is not None:
            metrics.delivery_latency.observe(max(0.0, time.time() - occurred_at_ms / 1000))
