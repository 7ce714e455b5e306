"""Clients of the gateway that behave like real ones, for the e2e suite.

- `GraphqlHttp`: queries and mutations over HTTP POST with a Bearer token.
- `resuming_subscriber`: `messageAdded` over graphql-transport-ws (`testing.ws.Subscriber`)
  that, whenever its socket ends without it asking, reconnects with backoff and resubscribes
  with `after` = the last id it received (DESIGN.md §3, hop 3).
- `ReliableSender`: sends with a fixed `clientMessageId` per message and retries every
  transient failure with that same id until the message is acknowledged.
- `check_delivery`: the §3 invariant over what subscribers received.

The clients record what happened and never repair it: a duplicate or a reordering shows in
`Subscriber.received` exactly as the wire carried it.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Self

import aiohttp

from testing.ws import RETRYABLE_CODES, Resume, Subscriber

SEND_MESSAGE = (
    "mutation Send($courseId: ID!, $content: String!, $clientMessageId: ID) {"
    " sendMessage(courseId: $courseId, content: $content, clientMessageId: $clientMessageId)"
    " { messageId content } }"
)
COURSE_POLICY = "query($c: ID!) { coursePolicy(courseId: $c) { ttlSeconds maxLength readOnly } }"
HISTORY = "query($c: ID!) { messages(courseId: $c) { messages { messageId content } } }"
# Gateway answers that mean "no upstream took the request": nothing ran, or it may have
# run and its answer was lost; a retry with the same clientMessageId is safe either way.
RETRYABLE_HTTP_STATUSES = frozenset({502, 503, 504})


# -- HTTP ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GraphqlResponse:
    status: int
    data: dict[str, Any] | None
    errors: list[dict[str, Any]]
    text: str = ""  # the raw body when it was not GraphQL JSON (an Envoy error page)

    @property
    def codes(self) -> set[str]:
        return {str(e.get("extensions", {}).get("code")) for e in self.errors}

    def describe(self) -> str:
        if self.errors:
            return f"HTTP {self.status}: " + "; ".join(
                f"{e.get('extensions', {}).get('code')}: {e.get('message')}" for e in self.errors
            )
        return f"HTTP {self.status}: {self.text[:200]!r}"


class GraphqlHttp:
    """POST GraphQL operations to `url` (the gateway's /graphql); one connection pool."""

    def __init__(self, url: str, *, request_timeout_seconds: float = 15.0) -> None:
        self.url = url
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=request_timeout_seconds)
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._session.close()

    async def execute(
        self, query: str, variables: Mapping[str, Any] | None = None, *, token: str | None = None
    ) -> GraphqlResponse:
        """One POST. Transport failures (reset, refused, timeout) raise aiohttp.ClientError or
        TimeoutError; any HTTP answer is returned, GraphQL JSON or not."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        body = {"query": query, "variables": dict(variables or {})}
        async with self._session.post(self.url, json=body, headers=headers) as response:
            text = await response.text()
            try:
                payload = await response.json(content_type=None)
            except ValueError:
                payload = None
        if not isinstance(payload, dict):
            return GraphqlResponse(response.status, None, [], text)
        return GraphqlResponse(response.status, payload.get("data"), payload.get("errors") or [])


# -- sending ---------------------------------------------------------------------------------


class SendFailed(AssertionError):
    """A message was refused for good, or not acknowledged within the retry budget."""


@dataclass
class ReliableSender:
    """Sends messages of one course as a pool of users, each message with its own fixed
    clientMessageId, retrying transient failures with that id until acknowledged.

    Message `n` is sent by `tokens[n % len(tokens)]` with clientMessageId `{run_id}-{n}`.
    `acknowledged` holds (message id, content) in the order the acknowledgements arrived.
    Keep the pool large enough that no user passes the course's rate limit: RATE_LIMITED is
    a failure of the test, not something to wait out."""

    http: GraphqlHttp
    course_id: str
    tokens: Sequence[str]
    run_id: str
    give_up_after_seconds: float = 30.0
    initial_backoff_seconds: float = 0.05
    max_backoff_seconds: float = 1.0
    acknowledged: list[tuple[int, str]] = field(default_factory=list, init=False)
    retries: Counter[str] = field(default_factory=Counter, init=False)  # why attempts repeated
    _changed: asyncio.Event = field(default_factory=asyncio.Event, init=False)

    @property
    def acknowledged_ids(self) -> list[int]:
        return [message_id for message_id, _ in self.acknowledged]

    def content_of(self, index: int) -> str:
        return f"{self.run_id} message {index}"

    async def send(self, index: int) -> int:
        """Send message `index` until it is acknowledged; its id."""
        token = self.tokens[index % len(self.tokens)]
        content = self.content_of(index)
        variables = {
            "courseId": self.course_id,
            "content": content,
            "clientMessageId": f"{self.run_id}-{index}",
        }
        deadline = time.monotonic() + self.give_up_after_seconds
        backoff = self.initial_backoff_seconds
        while True:
            try:
                response = await self.http.execute(SEND_MESSAGE, variables, token=token)
                reason = self._retry_reason(response)
                if reason is None:
                    assert response.data is not None
                    message = response.data["sendMessage"]
                    message_id = int(message["messageId"])
                    if message["content"] != content:
                        raise SendFailed(
                            f"message {index} acknowledged as {message_id} with the content "
                            f"{message['content']!r}, not {content!r}"
                        )
                    self.acknowledged.append((message_id, content))
                    self._changed.set()
                    return message_id
            except (aiohttp.ClientError, TimeoutError) as exc:
                reason = type(exc).__name__
            self.retries[reason] += 1
            if time.monotonic() + backoff > deadline:
                raise SendFailed(
                    f"message {index} of {self.course_id} not acknowledged after "
                    f"{self.give_up_after_seconds:.0f} s; last failure: {reason}"
                )
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.max_backoff_seconds)

    @staticmethod
    def _retry_reason(response: GraphqlResponse) -> str | None:
        """None when the send was acknowledged; why to retry; SendFailed when hopeless."""
        if response.status in RETRYABLE_HTTP_STATUSES and not response.errors:
            return f"HTTP {response.status}"
        if response.errors:
            codes = response.codes
            if codes <= RETRYABLE_CODES:
                return "/".join(sorted(codes))
            hint = " (spread the sends over more users)" if "RATE_LIMITED" in response.codes else ""
            raise SendFailed(f"send refused: {response.describe()}{hint}")
        if response.status != 200 or response.data is None:
            raise SendFailed(f"send refused: {response.describe()}")
        return None

    async def run(
        self, count: int, *, per_second: float, concurrency: int = 4, start: int = 0
    ) -> None:
        """Send messages `start … start+count-1` at a steady pace. With `concurrency` > 1 a
        message stuck in retries does not hold up the ones scheduled after it."""
        indexes = iter(range(start, start + count))
        began = time.monotonic()

        async def worker() -> None:
            for index in indexes:  # the iterator is shared: each index goes to one worker
                delay = began + (index - start) / per_second - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                await self.send(index)

        async with asyncio.TaskGroup() as group:
            for _ in range(concurrency):
                group.create_task(worker())

    async def wait_acknowledged(self, count: int, *, within: float) -> None:
        """Wait until at least `count` messages are acknowledged."""
        async with asyncio.timeout(within):
            while len(self.acknowledged) < count:
                self._changed.clear()
                await self._changed.wait()


# -- subscribing -----------------------------------------------------------------------------


def resuming_subscriber(
    ws_url: str, token: str, course_id: str, *, after: int | None, name: str = "subscriber"
) -> Subscriber:
    """`messageAdded(courseId, after)` subscribed like a real client (DESIGN.md §3, hop 3):
    whenever its socket ends without `close()` (1012, 1006, 4008, a reset, a refused
    connect…) it reconnects with backoff and subscribes again with `after` = the last id it
    received, and it hears of tombstones from messageDeleted on the same socket, as the web
    page does."""
    return Subscriber.message_added(
        ws_url, token, course_id, after=after, resume=Resume(), with_deletions=True, name=name
    )


async def start_subscribers(
    ws_url: str,
    tokens: Sequence[str],
    course_id: str,
    *,
    after: int | None,
    count: int,
    within: float,
) -> list[Subscriber]:
    """`count` resuming subscribers of one course, their tokens taken round-robin, each
    connected (within `within` seconds) and subscribed."""
    subscribers: list[Subscriber] = []
    try:
        for n, token in zip(range(count), itertools.cycle(tokens), strict=False):
            subscriber = resuming_subscriber(
                ws_url, token, course_id, after=after, name=f"subscriber-{n}"
            )
            subscribers.append(await subscriber.start(within=within))
    except BaseException:
        await asyncio.gather(*(s.close() for s in subscribers))
        raise
    return subscribers


async def wait_all_received(
    subscribers: Iterable[Subscriber], message_ids: Iterable[int], *, within: float
) -> None:
    """Wait (bounded) until every subscriber has received every id of `message_ids`."""
    wanted = set(message_ids)

    def has_all(subscriber: Subscriber) -> bool:
        return wanted <= {message_id for message_id, _ in subscriber.received}

    async with asyncio.timeout(within):
        await asyncio.gather(*(s.wait_until(has_all, within=within) for s in subscribers))


# -- the invariant ---------------------------------------------------------------------------


def delivery_problem(
    received: Sequence[tuple[int, str]],
    acknowledged: Sequence[tuple[int, str]],
    *,
    sole_sender: bool = False,
    tombstones: Iterable[int] = (),
) -> str | None:
    """What breaks DESIGN.md §3 in one subscriber's `received`, or None.

    Received ids must strictly increase (per-course order, nothing twice) and include every
    acknowledged id with its content; none of them may be retracted (`tombstones`). With
    `sole_sender` (the acknowledgements are every message of the course after the
    subscriber's `after`, and nobody deletes) nothing else may arrive either, unless it was
    retracted: a message a failover lost before it was acknowledged, which its sender's
    retry stored again under a new id. Any other extra id is a message stored twice or a
    message nobody sent."""
    gone = set(tombstones)
    first_at: dict[int, int] = {}
    for position, (message_id, _) in enumerate(received):
        if position and message_id <= received[position - 1][0]:
            previous = received[position - 1][0]
            if message_id in first_at:
                return (
                    f"duplicate: id {message_id} at position {position} (first at "
                    f"{first_at[message_id]}), after {previous}"
                )
            return f"out of order: id {message_id} at position {position} after {previous}"
        first_at[message_id] = position
    contents = dict(received)
    for message_id, content in acknowledged:
        if message_id in gone:
            return f"retracted: acknowledged id {message_id} was lost ({content!r})"
        if message_id not in contents:
            missing = sorted({m for m, _ in acknowledged} - contents.keys())
            before = max((m for m in contents if m < missing[0]), default=None)
            after = min((m for m in contents if m > missing[0]), default=None)
            return (
                f"lost: {len(missing)} acknowledged ids never arrived, first {missing[0]} "
                f"(received {before} then {after}); all missing: {_abbreviated(missing)}"
            )
        if contents[message_id] != content:
            return (
                f"wrong content: id {message_id} arrived as {contents[message_id]!r}, "
                f"acknowledged as {content!r}"
            )
    if sole_sender:
        extra = sorted(contents.keys() - {m for m, _ in acknowledged} - gone)
        if extra:
            return f"unsent: {len(extra)} ids nobody acknowledged: {_abbreviated(extra)}"
    return None


def _abbreviated(ids: Sequence[int], shown: int = 10) -> str:
    text = ", ".join(map(str, ids[:shown]))
    return text + (f", … ({len(ids) - shown} more)" if len(ids) > shown else "")


def check_delivery(
    subscribers: Iterable[Subscriber],
    acknowledged: Sequence[tuple[int, str]],
    *,
    sole_sender: bool = False,
) -> None:
    """Assert the §3 invariant for every subscriber; the message names each one that broke
    it, with its first problem, its reconnects and how its sockets ended."""
    problems = []
    for subscriber in subscribers:
        problem = delivery_problem(
            subscriber.received,
            acknowledged,
            sole_sender=sole_sender,
            tombstones=subscriber.tombstones,
        )
        if problem is not None:
            problems.append(
                f"{subscriber.name} ({len(subscriber.received)} received, "
                f"{subscriber.reconnects} reconnects, endings {subscriber.endings}): {problem}"
            )
    assert not problems, "delivery broken:\n" + "\n".join(problems)
