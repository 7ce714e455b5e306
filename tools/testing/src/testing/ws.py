"""GraphQL over WebSocket (graphql-transport-ws) as tests speak it.

- `Subscriber`: one subscription document and its variables, read in the background, every
  event kept as the wire carried it (a duplicate or a reordering shows in `events`, nothing
  is repaired). Optionally it resumes like a real client (`Resume`): whenever its socket ends
  without `close()` it reconnects with backoff and subscribes again with `after` = the last
  position it received (`messageAdded`: the last message's id; `courseEvents`: the last
  event's cursor). Optionally it also subscribes `messageDeleted` on the same socket, as the
  web page does, to learn of tombstones.
- `raw_socket`, `next_json`, `close_code`, `ready`, `still_serving`: a bare socket for tests
  of the protocol itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Self

import aiohttp

from nextcampus_graphql.connection import TRANSPORT_WS

MESSAGE_ADDED = (
    "subscription Added($courseId: ID!, $after: ID) {"
    " messageAdded(courseId: $courseId, after: $after)"
    " { messageId previousMessageId content deleted } }"
)
# Every change of a course, with what the e2e invariant over changes compares (e2e/changes.py):
# the message as each event read it, a reply's root, a reaction's emoji, and whether a
# deletion was a failover's retraction.
COURSE_EVENT_MESSAGE = "messageId userId content deleted editedAt reactions { emoji count }"
COURSE_EVENTS = (
    "subscription Events($courseId: ID!, $after: String) {"
    " courseEvents(courseId: $courseId, after: $after) {"
    f" __typename cursor actorId message {{ {COURSE_EVENT_MESSAGE} }}"
    f" ... on MessageAddedEvent {{ root {{ {COURSE_EVENT_MESSAGE} }} }}"
    " ... on MessageDeletedEvent { retracted }"
    " ... on ReactionAddedEvent { emoji }"
    " ... on ReactionRemovedEvent { emoji } } }"
)
# Tombstones of deleted messages, and of messages a Redis failover lost after subscribers
# had them (retracted).
MESSAGE_DELETED = (
    "subscription Deleted($courseId: ID!) { messageDeleted(courseId: $courseId) { messageId } }"
)
# Error codes after which the same request can succeed (the chat side was away).
RETRYABLE_CODES = frozenset({"UNAVAILABLE", "INTERNAL"})
# Operation ids on a subscriber's socket: its document, and messageDeleted when asked for.
_DOCUMENT_ID, _DELETIONS_ID = "1", "2"
# Bound of every single wait for a server's answer.
ANSWER_WITHIN_SECONDS = 20.0


class SubscriberFailed(AssertionError):
    """The server refused the subscription, the socket ended before the awaited condition
    held, or a resuming subscriber gave up."""


@dataclass(frozen=True)
class Received:
    """A messageAdded event as a subscriber received it (see `testing.plugin.assert_chain`)."""

    message_id: str
    previous_message_id: str
    deleted: bool


@dataclass(frozen=True)
class Resume:
    """How a subscriber resumes after its socket ends: after a backoff that doubles from
    `initial_backoff_seconds` up to `max_backoff_seconds`, until no socket has been
    acknowledged for `give_up_after_seconds`. A WebSocket ping every `heartbeat_seconds`
    ends a socket whose peer died silently, so that it resumes."""

    initial_backoff_seconds: float = 0.1
    max_backoff_seconds: float = 2.0
    give_up_after_seconds: float = 60.0
    heartbeat_seconds: float = 10.0


def after_message(event: Mapping[str, Any]) -> str | None:
    """Where `messageAdded` resumes after `event`: after a message, not after a tombstone (a
    resume after a lost message's id starts with its tombstone again)."""
    return None if event.get("deleted") else str(event["messageId"])


def after_event(event: Mapping[str, Any]) -> str | None:
    """Where `courseEvents` resumes after `event`: its cursor."""
    return str(event["cursor"])


class Subscriber:
    """`document` with `variables` over graphql-transport-ws, kept in the background.

    `events` holds the subscription's field of every event in arrival order. Without
    `resume` it reads one socket until the server ends it (`close_code`, `ended()`); with it,
    it resumes with `variables["after"]` = `resume_after` of the last event that names a
    position (the document must take `$after`): by default the last message received, as
    `messageAdded` resumes. Any error but UNAVAILABLE or INTERNAL (CURSOR_EXPIRED, say) ends
    it with `failure`. With `with_deletions` it also subscribes `messageDeleted` (variables
    `courseId`): `tombstones` then holds those ids too.

    Waits are bounded, and fail at once with `SubscriberFailed` when the subscriber failed
    or its socket ended (and it does not resume) before their condition held.
    """

    def __init__(
        self,
        url: str,
        token: str,
        document: str,
        variables: Mapping[str, Any] | None = None,
        *,
        resume: Resume | None = None,
        resume_after: Callable[[Mapping[str, Any]], str | None] = after_message,
        with_deletions: bool = False,
        name: str = "subscriber",
    ) -> None:
        self.url, self.token, self.document = url, token, document
        self.variables = dict(variables or {})
        self.resume, self.resume_after = resume, resume_after
        self.with_deletions, self.name = with_deletions, name
        self.events: list[dict[str, Any]] = []
        self.deleted_ids: list[int] = []  # from messageDeleted, with `with_deletions`
        self.reconnects = 0  # sockets acknowledged after the first
        self.endings: list[str] = []  # why each socket ended
        self.close_codes: list[int] = []  # of the sockets that ended with one
        self.failure: Exception | None = None
        self._connected = False  # a socket was acknowledged and the subscribe sent
        self._finished = False  # reads no more: the socket ended, or it failed or gave up
        self._changed = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def message_added(
        cls, url: str, token: str, course_id: str, *, after: int | str | None = None, **kw: Any
    ) -> Self:
        """messageAdded of `course_id` (after `after`, when given), every field of a message
        a delivery check needs."""
        variables = {"courseId": course_id, "after": None if after is None else str(after)}
        return cls(url, token, MESSAGE_ADDED, variables, **kw)

    @classmethod
    def course_events(
        cls, url: str, token: str, course_id: str, *, after: str | None = None, **kw: Any
    ) -> Self:
        """courseEvents of `course_id` after the cursor `after` (a history page's
        `eventCursor`, or an event's `cursor`), resuming after the last event's cursor."""
        variables = {"courseId": course_id, "after": after}
        return cls(url, token, COURSE_EVENTS, variables, resume_after=after_event, **kw)

    # -- what arrived ----------------------------------------------------------------------

    @property
    def ids(self) -> list[int]:
        """The messageId of every event, in arrival order (tombstones included)."""
        return [int(event["messageId"]) for event in self.events]

    @property
    def messages(self) -> list[Received]:
        return [
            Received(e["messageId"], e.get("previousMessageId") or "", bool(e.get("deleted")))
            for e in self.events
        ]

    @property
    def received(self) -> list[tuple[int, str]]:
        """(id, content) of every message that arrived as a message, not as a tombstone."""
        return [(int(e["messageId"]), e["content"]) for e in self.events if not e.get("deleted")]

    @property
    def tombstones(self) -> set[int]:
        """Ids the subscriber was told are gone: deleted events, and messageDeleted's."""
        deleted = {int(e["messageId"]) for e in self.events if e.get("deleted")}
        return deleted | set(self.deleted_ids)

    @property
    def close_code(self) -> int | None:
        """The close code of the last socket that ended with one."""
        return self.close_codes[-1] if self.close_codes else None

    # -- the life of it --------------------------------------------------------------------

    async def start(self, within: float = ANSWER_WITHIN_SECONDS) -> Self:
        """Connect and subscribe; returns once a socket is acknowledged and the subscribe is
        sent (a resuming subscriber keeps trying meanwhile)."""
        self._session = aiohttp.ClientSession()
        self._task = asyncio.create_task(self._run(), name=self.name)
        try:
            await self.wait_until(lambda s: s._connected, within=within)
        except BaseException:
            await self.close()
            raise
        return self

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    async def wait_until(self, condition: Callable[[Self], bool], *, within: float) -> None:
        async with asyncio.timeout(within):
            while not condition(self) and not self._finished:
                self._changed.clear()
                await self._changed.wait()
        if condition(self):
            return
        if self.failure is not None:
            raise SubscriberFailed(f"{self.name}: {self.failure}") from self.failure
        raise SubscriberFailed(f"{self.name}: the socket ended first ({self.endings[-1:]})")

    async def has_ids(self, ids: list[int], within: float = 30) -> None:
        wanted = set(ids)
        await self.wait_until(lambda s: wanted <= set(s.ids), within=within)

    async def until_live(self, send_probe: Callable[[], Awaitable[int]]) -> int:
        """Send probes until one arrives: the subscription is live. The id of that probe,
        the last one sent (so no later event is a probe)."""
        for _ in range(100):
            probe = await send_probe()
            with contextlib.suppress(TimeoutError):
                await self.has_ids([probe], within=0.5)
                return probe
        raise AssertionError(f"{self.name}: the subscription never went live")

    async def ended(self, within: float = 30) -> None:
        """Wait until it reads no more: the server ended its socket, or it failed."""
        await self.wait_until(lambda s: s._finished, within=within)

    # -- reading ---------------------------------------------------------------------------

    def _notify(self) -> None:
        self._changed.set()

    async def _run(self) -> None:
        resume = self.resume
        backoff = resume.initial_backoff_seconds if resume else 0.0
        outage_began = time.monotonic()
        try:
            while True:
                try:
                    acknowledged = await self._one_socket()
                except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                    acknowledged = False
                    self.endings.append(f"{type(exc).__name__}: {exc}"[:200])
                if resume is None:
                    if not acknowledged:
                        raise SubscriberFailed(f"no connection_ack: {self.endings[-1:]}")
                    return
                if acknowledged:
                    backoff = resume.initial_backoff_seconds
                    outage_began = time.monotonic()
                if time.monotonic() - outage_began > resume.give_up_after_seconds:
                    raise SubscriberFailed(
                        f"could not resume for {resume.give_up_after_seconds:.0f} s; "
                        f"last endings: {self.endings[-3:]}"
                    )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, resume.max_backoff_seconds)
        except Exception as exc:
            self.failure = exc
        finally:
            self._finished = True
            self._notify()

    async def _one_socket(self) -> bool:
        """Connect, subscribe, read until the socket ends; whether it was acknowledged."""
        assert self._session is not None
        acknowledged = False
        async with self._session.ws_connect(
            self.url,
            protocols=[TRANSPORT_WS],
            heartbeat=self.resume.heartbeat_seconds if self.resume else None,
            timeout=aiohttp.ClientWSTimeout(ws_close=5.0),
        ) as ws:
            await ws.send_json(
                {"type": "connection_init", "payload": {"authorization": f"Bearer {self.token}"}}
            )
            async for frame in ws:
                if frame.type is not aiohttp.WSMsgType.TEXT:
                    continue
                message = frame.json()
                kind = message.get("type")
                if kind == "connection_ack":
                    acknowledged = True
                    await self._subscribe(ws)
                elif kind == "ping":
                    await ws.send_json({"type": "pong"})
                elif kind == "next":
                    self._keep(message)
                elif kind == "error":
                    codes = {e.get("extensions", {}).get("code") for e in message["payload"]}
                    if self.resume is None or not codes <= RETRYABLE_CODES:
                        after = self._resume_position()
                        raise SubscriberFailed(
                            f"subscription refused (after {after!r}): {message['payload']}"
                        )
                    self.endings.append(f"error {sorted(codes)}")
                    return acknowledged  # subscribe again on a new socket, after backoff
                elif kind == "complete":
                    self.endings.append("complete")  # a course's stream never completes: resume
                    return acknowledged
                else:
                    raise SubscriberFailed(f"unexpected message: {message}")
            code = ws.close_code
            self.endings.append(
                f"close {code}" + (f": {ws.exception()!r}" if ws.exception() else "")
            )
            if code is not None:
                self.close_codes.append(code)
            return acknowledged

    async def _subscribe(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        if self._connected:
            self.reconnects += 1
        variables = self.variables
        if self.resume is not None:
            variables = {**variables, "after": self._resume_position()}
        operations = [(_DOCUMENT_ID, self.document)]
        if self.with_deletions:
            operations.append((_DELETIONS_ID, MESSAGE_DELETED))
        for operation_id, document in operations:
            payload = {"query": document, "variables": variables}
            await ws.send_json({"id": operation_id, "type": "subscribe", "payload": payload})
        self._connected = True
        self._notify()

    def _resume_position(self) -> str | None:
        """Where a resumed subscription starts: the last position received, else where the
        first one did."""
        for event in reversed(self.events):
            position = self.resume_after(event)
            if position is not None:
                return position
        after: str | None = self.variables.get("after")
        return after

    def _keep(self, message: dict[str, Any]) -> None:
        payload = message.get("payload") or {}
        if payload.get("errors") or not payload.get("data"):
            raise SubscriberFailed(f"an event with errors: {payload}")
        # A subscription has exactly one root field: the event is its value.
        (event,) = payload["data"].values()
        if message.get("id") == _DELETIONS_ID:
            self.deleted_ids.append(int(event["messageId"]))
        else:
            self.events.append(event)
        self._notify()


# -- a bare socket, for tests of the protocol ----------------------------------------------


@contextlib.asynccontextmanager
async def raw_socket(
    url: str, protocol: str | None = TRANSPORT_WS, **kw: Any
) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
    """An aiohttp WebSocket speaking `protocol` (None: no subprotocol), with no frame limit;
    `connector` goes to its session, anything else to `ws_connect` (`params`, `headers`)."""
    connector = kw.pop("connector", None)
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.ws_connect(
            url, protocols=[protocol] if protocol else (), autoping=True, max_msg_size=0, **kw
        ) as ws,
    ):
        yield ws


async def next_json(
    ws: aiohttp.ClientWebSocketResponse, *, keepalives: bool = False
) -> dict[str, Any]:
    """The next protocol message. The server's keepalives (`ping`, legacy `ka`) come every
    few seconds whatever a test does: they are answered and skipped unless `keepalives`."""
    while True:
        message = await ws.receive(timeout=ANSWER_WITHIN_SECONDS)
        assert message.type is aiohttp.WSMsgType.TEXT, message
        result: dict[str, Any] = message.json()
        if keepalives or result.get("type") not in ("ping", "ka"):
            return result
        if result["type"] == "ping":
            await ws.send_json({"type": "pong"})


async def close_code(ws: aiohttp.ClientWebSocketResponse) -> tuple[int | None, str]:
    """Read until the server closes (within 30 s, whatever it sends meanwhile); its close
    code and reason."""
    async with asyncio.timeout(30):
        while True:
            message = await ws.receive()
            if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                return ws.close_code, str(message.extra or "")


async def ready(ws: aiohttp.ClientWebSocketResponse, token: str) -> None:
    """connection_init with `token`, and its connection_ack."""
    await ws.send_json({"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}})
    assert await next_json(ws) == {"type": "connection_ack"}


async def still_serving(url: str, token: str) -> None:
    """A new socket is acknowledged and answers a ping: the server is fine."""
    async with raw_socket(url) as ws:
        await ready(ws, token)
        await ws.send_json({"type": "ping"})
        assert await next_json(ws) == {"type": "pong"}
