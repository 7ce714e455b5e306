"""Clients of the gateway that behave like real ones, for the e2e suite.

- `GraphqlHttp`: queries and mutations over HTTP POST with a Bearer token.
- `resuming_subscriber`: `messageAdded` over graphql-transport-ws (`testing.ws.Subscriber`)
  that, whenever its socket ends without it asking, reconnects with backoff and resubscribes
  with `after` = the last id it received (DESIGN.md §3, hop 3).
- `resuming_event_subscriber`: `courseEvents` the same way, resuming after the last cursor.
- `ReliableSender`: sends with a fixed `clientMessageId` per message and retries every
  transient failure with that same id until the message is acknowledged (`Retry`).
- `MixedWorkload`: sends, replies, reactions, edits and deletes, each change with a fixed
  client id retried until acknowledged, recording each acknowledged change in order.
- `check_delivery`: the §3 invariant over what `messageAdded` subscribers received;
  `check_course_events` the one over every change (e2e/changes.py), against the store
  (`read_store`).

The clients record what happened and never repair it: a duplicate or a reordering shows in
`Subscriber.events` exactly as the wire carried it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Self

import aiohttp

from e2e.changes import (
    ADDED,
    DELETED,
    EDITED,
    REACTION_ADDED,
    REACTION_REMOVED,
    Acknowledged,
    Change,
    MessageState,
    course_events_problem,
)
from testing.ws import RETRYABLE_CODES, Resume, Subscriber, SubscriberFailed

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
    """A change (a message sent, edited, …) was refused for good, or not acknowledged within
    the retry budget."""


def _never(_response: GraphqlResponse) -> bool:
    return False


@dataclass(frozen=True)
class Retry:
    """How a client retries a change that did not get through, with the same client id (so
    that the retry is applied once): after a backoff doubling from `initial_backoff_seconds`
    up to `max_backoff_seconds`, for at most `give_up_after_seconds`."""

    give_up_after_seconds: float = 30.0
    initial_backoff_seconds: float = 0.05
    max_backoff_seconds: float = 1.0

    async def until_acknowledged(
        self,
        http: GraphqlHttp,
        query: str,
        variables: Mapping[str, Any],
        *,
        token: str,
        what: str,
        retries: Counter[str],
        refused_for_good: Callable[[GraphqlResponse], bool] = _never,
    ) -> dict[str, Any] | None:
        """The mutation's answer once acknowledged, retrying transient failures (counted in
        `retries` by reason); None when `refused_for_good` accepts the refusal; SendFailed on
        any other refusal, or when the budget is spent."""
        deadline = time.monotonic() + self.give_up_after_seconds
        backoff = self.initial_backoff_seconds
        while True:
            try:
                response = await http.execute(query, variables, token=token)
                if response.errors and refused_for_good(response):
                    return None
                reason = self._retry_reason(response, what)
                if reason is None:
                    assert response.data is not None
                    (answer,) = response.data.values()
                    return dict(answer)
            except (aiohttp.ClientError, TimeoutError) as exc:
                reason = type(exc).__name__
            retries[reason] += 1
            if time.monotonic() + backoff > deadline:
                raise SendFailed(
                    f"{what} not acknowledged after {self.give_up_after_seconds:.0f} s; "
                    f"last failure: {reason}"
                )
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.max_backoff_seconds)

    @staticmethod
    def _retry_reason(response: GraphqlResponse, what: str) -> str | None:
        """None when the change was acknowledged; why to retry; SendFailed when hopeless."""
        if response.status in RETRYABLE_HTTP_STATUSES and not response.errors:
            return f"HTTP {response.status}"
        if response.errors:
            codes = response.codes
            if codes <= RETRYABLE_CODES:
                return "/".join(sorted(codes))
            hint = " (spread the changes over more users)" if "RATE_LIMITED" in codes else ""
            raise SendFailed(f"{what} refused: {response.describe()}{hint}")
        if response.status != 200 or response.data is None:
            raise SendFailed(f"{what} refused: {response.describe()}")
        return None


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
        content = self.content_of(index)
        variables = {
            "courseId": self.course_id,
            "content": content,
            "clientMessageId": f"{self.run_id}-{index}",
        }
        retry = Retry(
            self.give_up_after_seconds, self.initial_backoff_seconds, self.max_backoff_seconds
        )
        message = await retry.until_acknowledged(
            self.http,
            SEND_MESSAGE,
            variables,
            token=self.tokens[index % len(self.tokens)],
            what=f"message {index} of {self.course_id}",
            retries=self.retries,
        )
        assert message is not None  # nothing is refused for good without `refused_for_good`
        message_id = int(message["messageId"])
        if message["content"] != content:
            raise SendFailed(
                f"message {index} acknowledged as {message_id} with the content "
                f"{message['content']!r}, not {content!r}"
            )
        self.acknowledged.append((message_id, content))
        self._changed.set()
        return message_id

    async def run(
        self, count: int, *, per_second: float, concurrency: int = 4, start: int = 0
    ) -> None:
        """Send messages `start … start+count-1` at a steady pace. With `concurrency` > 1 a
        message stuck in retries does not hold up the ones scheduled after it."""
        await paced(self.send, count, per_second=per_second, concurrency=concurrency, start=start)

    async def wait_acknowledged(self, count: int, *, within: float) -> None:
        """Wait until at least `count` messages are acknowledged."""
        async with asyncio.timeout(within):
            while len(self.acknowledged) < count:
                self._changed.clear()
                await self._changed.wait()


async def paced(
    act: Callable[[int], Awaitable[object]],
    count: int,
    *,
    per_second: float,
    concurrency: int,
    start: int = 0,
) -> None:
    """`act(index)` for `start … start+count-1`, index n no sooner than n/`per_second` after
    the start, by `concurrency` workers (one stuck in retries holds up no other)."""
    indexes = iter(range(start, start + count))
    began = time.monotonic()

    async def worker() -> None:
        for index in indexes:  # the iterator is shared: each index goes to one worker
            delay = began + (index - start) / per_second - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await act(index)

    async with asyncio.TaskGroup() as group:
        for _ in range(concurrency):
            group.create_task(worker())


# -- a mixed workload ------------------------------------------------------------------------

SEND_OR_REPLY = (
    "mutation Send($courseId: ID!, $content: String!, $clientMessageId: ID, $replyTo: ID) {"
    " sendMessage(courseId: $courseId, content: $content, clientMessageId: $clientMessageId,"
    " replyTo: $replyTo) { messageId content } }"
)
EDIT_MESSAGE = (
    "mutation Edit($courseId: ID!, $messageId: ID!, $content: String!, $clientMutationId: ID) {"
    " editMessage(courseId: $courseId, messageId: $messageId, content: $content,"
    " clientMutationId: $clientMutationId) { messageId content deleted } }"
)
ADD_REACTION = (
    "mutation React($courseId: ID!, $messageId: ID!, $emoji: String!, $clientMutationId: ID) {"
    " addReaction(courseId: $courseId, messageId: $messageId, emoji: $emoji,"
    " clientMutationId: $clientMutationId) { messageId deleted } }"
)
REMOVE_REACTION = (
    "mutation Unreact($courseId: ID!, $messageId: ID!, $emoji: String!, $clientMutationId: ID) {"
    " removeReaction(courseId: $courseId, messageId: $messageId, emoji: $emoji,"
    " clientMutationId: $clientMutationId) { messageId deleted } }"
)
DELETE_MESSAGE = (
    "mutation Delete($courseId: ID!, $messageId: ID!, $clientMutationId: ID) {"
    " deleteMessage(courseId: $courseId, messageId: $messageId,"
    " clientMutationId: $clientMutationId) { messageId deleted } }"
)
# Every message after `after`, as the store keeps it: what the invariant compares.
STORE_PAGE = (
    "query Store($courseId: ID!, $after: ID) {"
    " messages(courseId: $courseId, after: $after, limit: 200) {"
    " messages { messageId content deleted editedAt reactions { emoji count } } hasMore } }"
)

EVENT_CURSOR = (
    "query Cursor($courseId: ID!) { messages(courseId: $courseId, limit: 1) { eventCursor } }"
)

SEND, REACT, EDIT, DELETE = "send", "react", "edit", "delete"
# Change n of a mixed workload is MIX[n % 20]: 70 % sends, 15 % reactions, 10 % edits,
# 5 % deletes, spread out.
MIX = (
    *(SEND, SEND, REACT, SEND, EDIT, SEND, SEND, REACT, SEND, SEND),
    *(DELETE, SEND, SEND, EDIT, SEND, REACT, SEND, SEND, SEND, SEND),
)
REPLY_EVERY = 5  # a send whose index is a multiple of it replies to a recent message
REMOVE_SHARE = 0.3  # of the reactions: a reaction taken back, when there is one to take
RECENT = 20  # changes target one of the newest acknowledged messages
# Emoji without a text-style form (no variation selector): an event names them as sent. Two
# only, so that many users react with the same one and its count passes 1.
EMOJIS = ("👍", "🎉")
User = tuple[str, str]  # (user id, token)


@dataclass
class MixedWorkload:
    """Changes of one course as a class would make them: change n is MIX[n % 20] — a send (by
    user n; a reply when n is a multiple of REPLY_EVERY), a reaction (added by user n, or one acknowledged before
    taken back by its user), an edit (by the author of a recent message), a delete (by its
    author or the moderator). Targets are among the RECENT newest acknowledged messages not
    being deleted; with none yet, the change is a send instead.

    Each change has a fixed client id (`{run_id}-{n}`: clientMessageId of a send,
    clientMutationId of the others), retried with it until acknowledged. A change refused
    with FAILED_PRECONDITION because the workload deleted its target meanwhile (a reaction,
    an edit, a reply to it) is `refused`; any other refusal fails the run. Each change keys
    its event uniquely: a message is edited and deleted at most once, and a user adds an
    emoji to a message at most once (and takes it back at most once).

    `acknowledged` holds each acknowledged change (e2e.changes.Acknowledged) in the order the
    acknowledgements came. Keep `users` many enough that none passes a rate limit (sends: 10
    per 10 s; edits and reactions together: 30 per 10 s)."""

    http: GraphqlHttp
    course_id: str
    users: Sequence[User]
    moderator: User
    run_id: str
    retry: Retry = field(default_factory=Retry)
    acknowledged: list[Acknowledged] = field(default_factory=list, init=False)
    refused: list[str] = field(default_factory=list, init=False)  # why, one per change
    attempted: Counter[str] = field(default_factory=Counter, init=False)  # by kind
    retries: Counter[str] = field(default_factory=Counter, init=False)  # why attempts repeated
    slowest_seconds: float = field(default=0.0, init=False)  # from first attempt to answer
    _sent: list[tuple[int, str]] = field(default_factory=list, init=False)
    _authors: dict[int, User] = field(default_factory=dict, init=False)
    _deleting: set[int] = field(default_factory=set, init=False)  # a delete was started
    _edited: set[int] = field(default_factory=set, init=False)  # an edit was started
    _reacted: set[tuple[int, str, str]] = field(default_factory=set, init=False)
    _removable: list[tuple[int, User, str]] = field(default_factory=list, init=False)
    _changed: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    _open: asyncio.Event = field(default_factory=asyncio.Event, init=False)  # not `held`
    _idle: asyncio.Event = field(default_factory=asyncio.Event, init=False)  # none in flight
    _in_flight: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self._open.set()
        self._idle.set()
        # Which targets, which emoji, who deletes: choices of a test, no secret in them.
        self._random = random.Random(self.run_id)  # noqa: S311

    # -- what happened -----------------------------------------------------------------------

    @property
    def sent(self) -> list[tuple[int, str]]:
        """(message id, content) of each acknowledged send, in acknowledgement order."""
        return list(self._sent)

    @property
    def deleted_ids(self) -> set[int]:
        return {a.change.message_id for a in self.acknowledged if a.change.kind == DELETED}

    @property
    def edits(self) -> dict[int, str]:
        """The acknowledged edit of each edited message: its content."""
        return {
            a.change.message_id: a.change.detail
            for a in self.acknowledged
            if a.change.kind == EDITED
        }

    def summary(self) -> str:
        kinds = Counter(a.change.kind.removesuffix("Event") for a in self.acknowledged)
        return (
            f"{len(self.acknowledged)} changes acknowledged {dict(kinds)}, "
            f"{len(self.refused)} refused, retries {dict(self.retries)}, slowest "
            f"{self.slowest_seconds:.1f} s"
        )

    # -- making changes --------------------------------------------------------------------

    async def run(self, count: int, *, per_second: float, concurrency: int = 4) -> None:
        """Changes 0 … count-1 at a steady pace (see `paced`)."""
        await paced(self.change, count, per_second=per_second, concurrency=concurrency)

    async def wait_acknowledged(self, count: int, *, within: float) -> None:
        """Wait until at least `count` changes are acknowledged."""
        async with asyncio.timeout(within):
            while len(self.acknowledged) < count:
                self._changed.clear()
                await self._changed.wait()

    @contextlib.asynccontextmanager
    async def held(self, *, within: float) -> AsyncIterator[None]:
        """Inside, no change is in flight and none starts (the paced ones catch up after):
        for a fault that must strike between two changes."""
        self._open.clear()
        try:
            async with asyncio.timeout(within):
                await self._idle.wait()
            yield
        finally:
            self._open.set()

    async def change(self, index: int) -> None:
        """Make change `index` until acknowledged (or refused by the workload's own race)."""
        await self._open.wait()
        self._in_flight += 1
        self._idle.clear()
        try:
            after = len(self.acknowledged)  # acknowledged before this change is first tried
            began = time.monotonic()
            kind = MIX[index % len(MIX)]
            made = {REACT: self._react, EDIT: self._edit, DELETE: self._delete}.get(kind)
            if made is None or not await made(index, after):
                await self._send(index, after)
            self.slowest_seconds = max(self.slowest_seconds, time.monotonic() - began)
        finally:
            self._in_flight -= 1
            if not self._in_flight:
                self._idle.set()

    def _recent(self) -> list[int]:
        return [m for m, _ in self._sent[-RECENT:] if m not in self._deleting]

    def _user(self, index: int) -> User:
        return self.users[index % len(self.users)]

    async def _send(self, index: int, after: int) -> None:
        user_id, token = self._user(index)
        recent = self._recent()
        reply_to = self._random.choice(recent) if index % REPLY_EVERY == 0 and recent else None
        content = f"{self.run_id} change {index}"
        variables = {
            "courseId": self.course_id,
            "content": content,
            "clientMessageId": f"{self.run_id}-{index}",
            "replyTo": None if reply_to is None else str(reply_to),
        }
        what = f"change {index} (send{'' if reply_to is None else f' replying to {reply_to}'})"
        message = await self._until_acknowledged(
            SEND, what, SEND_OR_REPLY, variables, token, target=reply_to
        )
        if message is None:
            return
        message_id = int(message["messageId"])
        if message["content"] != content:
            raise SendFailed(f"{what} acknowledged as {message_id} with {message['content']!r}")
        self._sent.append((message_id, content))
        self._authors[message_id] = (user_id, token)
        self._acknowledge(Change(ADDED, message_id, user_id, content), after)

    async def _react(self, index: int, after: int) -> bool:
        removable = [r for r in self._removable if r[0] not in self._deleting]
        if removable and self._random.random() < REMOVE_SHARE:
            message_id, user, emoji = self._random.choice(removable)
            self._removable.remove((message_id, user, emoji))
            kind, query = REACTION_REMOVED, REMOVE_REACTION
        else:
            user = self._user(index)
            choices = [
                (m, e)
                for m in self._recent()
                for e in EMOJIS
                if (m, user[0], e) not in self._reacted
            ]
            if not choices:
                return False
            message_id, emoji = self._random.choice(choices)
            self._reacted.add((message_id, user[0], emoji))
            kind, query = REACTION_ADDED, ADD_REACTION
        variables = {
            "courseId": self.course_id,
            "messageId": str(message_id),
            "emoji": emoji,
            "clientMutationId": f"{self.run_id}-{index}",
        }
        what = f"change {index} ({kind} {emoji} on {message_id} by {user[0]})"
        answer = await self._until_acknowledged(
            REACT, what, query, variables, user[1], target=message_id
        )
        if answer is not None:
            if kind == REACTION_ADDED:
                self._removable.append((message_id, user, emoji))
            self._acknowledge(Change(kind, message_id, user[0], emoji), after)
        return True

    async def _edit(self, index: int, after: int) -> bool:
        choices = [m for m in self._recent() if m not in self._edited]
        if not choices:
            return False
        message_id = self._random.choice(choices)
        self._edited.add(message_id)
        user_id, token = self._authors[message_id]
        content = f"{self.run_id} change {index}: an edit of {message_id}"
        variables = {
            "courseId": self.course_id,
            "messageId": str(message_id),
            "content": content,
            "clientMutationId": f"{self.run_id}-{index}",
        }
        what = f"change {index} (edit of {message_id} by {user_id})"
        message = await self._until_acknowledged(
            EDIT, what, EDIT_MESSAGE, variables, token, target=message_id
        )
        if message is None:
            return True
        if message["content"] != content and not message["deleted"]:
            raise SendFailed(f"{what} acknowledged with {message['content']!r}")
        self._acknowledge(Change(EDITED, message_id, user_id, content), after)
        return True

    async def _delete(self, index: int, after: int) -> bool:
        choices = self._recent()
        if not choices:
            return False
        message_id = self._random.choice(choices)
        self._deleting.add(message_id)
        by_author = self._random.random() < 0.5
        user_id, token = self._authors[message_id] if by_author else self.moderator
        variables = {
            "courseId": self.course_id,
            "messageId": str(message_id),
            "clientMutationId": f"{self.run_id}-{index}",
        }
        what = f"change {index} (delete of {message_id} by {user_id})"
        message = await self._until_acknowledged(DELETE, what, DELETE_MESSAGE, variables, token)
        assert message is not None  # a delete is never refused for good
        if not message["deleted"]:
            raise SendFailed(f"{what} acknowledged, and the message is not deleted")
        self._acknowledge(Change(DELETED, message_id, user_id), after)
        return True

    async def _until_acknowledged(
        self,
        kind: str,
        what: str,
        query: str,
        variables: Mapping[str, Any],
        token: str,
        *,
        target: int | None = None,
    ) -> dict[str, Any] | None:
        """The change's answer once acknowledged; None when it was refused because the
        workload deleted `target` meanwhile (recorded in `refused`)."""
        self.attempted[kind] += 1

        def raced(response: GraphqlResponse) -> bool:
            return response.codes == {"FAILED_PRECONDITION"} and target in self._deleting

        answer = await self.retry.until_acknowledged(
            self.http,
            query,
            variables,
            token=token,
            what=what,
            retries=self.retries,
            refused_for_good=raced,
        )
        if answer is None:
            self.refused.append(f"{what}: the workload deleted {target} meanwhile")
        return answer

    def _acknowledge(self, change: Change, after: int) -> None:
        self.acknowledged.append(Acknowledged(change, after))
        self._changed.set()


async def event_cursor(http: GraphqlHttp, course_id: str, token: str) -> str:
    """The course's newest change now (a history page's `eventCursor`): `courseEvents` after
    it carries every later change."""
    response = await http.execute(EVENT_CURSOR, {"courseId": course_id}, token=token)
    assert not response.errors, response.describe()
    assert response.data is not None, response.describe()
    cursor: str = response.data["messages"]["eventCursor"]
    return cursor


async def read_store(
    http: GraphqlHttp, course_id: str, token: str, *, after: int
) -> dict[int, MessageState]:
    """Every message of the course after `after`, as the store keeps it (history pages)."""
    store: dict[int, MessageState] = {}
    cursor: str | None = str(after)
    while True:
        response = await http.execute(
            STORE_PAGE, {"courseId": course_id, "after": cursor}, token=token
        )
        assert not response.errors, response.describe()
        assert response.data is not None, response.describe()
        page = response.data["messages"]
        for message in page["messages"]:
            store[int(message["messageId"])] = MessageState.of(message)
        if not page["hasMore"] or not page["messages"]:
            return store
        cursor = page["messages"][-1]["messageId"]


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


def resuming_event_subscriber(
    ws_url: str, token: str, course_id: str, *, after: str | None, name: str = "events"
) -> Subscriber:
    """`courseEvents(courseId, after)` subscribed like a real client: whenever its socket ends
    without `close()` it reconnects with backoff and subscribes again after the last cursor
    it received. CURSOR_EXPIRED (a real client reloads the history) ends it with a failure:
    no test here waits long enough for a cursor to expire."""
    return Subscriber.course_events(
        ws_url, token, course_id, after=after, resume=Resume(), name=name
    )


async def start_subscribers(
    ws_url: str,
    tokens: Sequence[str],
    course_id: str,
    *,
    after: int | str | None,
    count: int,
    within: float,
    course_events: bool = False,
) -> list[Subscriber]:
    """`count` resuming subscribers of one course, their tokens taken round-robin, each
    connected (within `within` seconds) and subscribed: to `messageAdded` after the message
    id `after`, or with `course_events` to `courseEvents` after the cursor `after`."""
    subscribers: list[Subscriber] = []
    try:
        for n, token in zip(range(count), itertools.cycle(tokens), strict=False):
            if course_events:
                subscriber = resuming_event_subscriber(
                    ws_url,
                    token,
                    course_id,
                    after=None if after is None else str(after),
                    name=f"events-{n}",
                )
            else:
                subscriber = resuming_subscriber(
                    ws_url,
                    token,
                    course_id,
                    after=None if after is None else int(after),
                    name=f"subscriber-{n}",
                )
            subscribers.append(await subscriber.start(within=within))
    except BaseException:
        await asyncio.gather(*(s.close() for s in subscribers))
        raise
    return subscribers


async def wait_all_received(
    subscribers: Iterable[Subscriber],
    message_ids: Iterable[int],
    *,
    within: float,
    deleted: Iterable[int] = (),
) -> None:
    """Wait (bounded) until every subscriber has received every id of `message_ids` (those
    of `deleted` as a message or as a tombstone)."""
    wanted = set(message_ids)
    may_be_gone = wanted & set(deleted)

    def has_all(subscriber: Subscriber) -> bool:
        arrived = {message_id for message_id, _ in subscriber.received}
        return wanted - arrived <= may_be_gone and wanted - arrived <= subscriber.tombstones

    async with asyncio.timeout(within):
        await asyncio.gather(*(s.wait_until(has_all, within=within) for s in subscribers))


# -- the invariants --------------------------------------------------------------------------


def delivery_problem(
    received: Sequence[tuple[int, str]],
    acknowledged: Sequence[tuple[int, str]],
    *,
    sole_sender: bool = False,
    tombstones: Iterable[int] = (),
    deleted: Iterable[int] = (),
    edits: Mapping[int, str] | None = None,
) -> str | None:
    """What breaks DESIGN.md §3 in one subscriber's `received`, or None.

    Received ids must strictly increase (per-course order, nothing twice) and include every
    acknowledged id with its content; none of them may be retracted (`tombstones`). Ids of
    `deleted` (acknowledged messages deleted since) may arrive as their tombstone instead;
    ids of `edits` with the edit's content instead. With `sole_sender` (the acknowledgements
    are every message of the course after the subscriber's `after`) nothing else may arrive
    either, unless it was retracted: a message a failover lost before it was acknowledged,
    which its sender's retry stored again under a new id. Any other extra id is a message
    stored twice or a message nobody sent."""
    deleted_ids = set(deleted)
    told_gone = set(tombstones)
    gone = told_gone - deleted_ids  # retracted: lost in a failover
    edits = edits or {}
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
    missing = [
        m
        for m, _ in acknowledged
        if m not in contents and not (m in deleted_ids and m in told_gone)
    ]
    if missing:
        before = max((m for m in contents if m < missing[0]), default=None)
        after = min((m for m in contents if m > missing[0]), default=None)
        return (
            f"lost: {len(missing)} acknowledged ids never arrived, first {missing[0]} "
            f"(received {before} then {after}); all missing: {_abbreviated(missing)}"
        )
    for message_id, content in acknowledged:
        arrived = contents.get(message_id, content)
        if arrived not in (content, edits.get(message_id)):
            return (
                f"wrong content: id {message_id} arrived as {arrived!r}, "
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
    deleted: Iterable[int] = (),
    edits: Mapping[int, str] | None = None,
) -> None:
    """Assert the §3 invariant for every subscriber; the message names each one that broke
    it, with its first problem, its reconnects and how its sockets ended."""
    deleted = set(deleted)
    problems = []
    for subscriber in subscribers:
        problem = delivery_problem(
            subscriber.received,
            acknowledged,
            sole_sender=sole_sender,
            tombstones=subscriber.tombstones,
            deleted=deleted,
            edits=edits,
        )
        if problem is not None:
            problems.append(_broken(subscriber, len(subscriber.received), problem))
    assert not problems, "delivery broken:\n" + "\n".join(problems)


async def check_course_events(
    subscribers: Iterable[Subscriber],
    acknowledged: Sequence[Acknowledged],
    store: Mapping[int, MessageState],
    *,
    within: float,
) -> None:
    """Wait (bounded) until every `courseEvents` subscriber's events satisfy the invariant
    over changes (e2e.changes.course_events_problem), then assert it: the message names each
    one that broke it, with its first problem, its reconnects and how its sockets ended."""
    subscribers = list(subscribers)

    def holds(subscriber: Subscriber) -> bool:
        return course_events_problem(subscriber.events, acknowledged, store) is None

    deadline = time.monotonic() + within
    for subscriber in subscribers:  # one shared deadline
        with contextlib.suppress(TimeoutError, SubscriberFailed):
            await subscriber.wait_until(holds, within=max(0.0, deadline - time.monotonic()))
    problems = []
    for subscriber in subscribers:
        problem = course_events_problem(subscriber.events, acknowledged, store)
        if subscriber.failure is not None:
            problem = f"failed: {subscriber.failure}; " + (problem or "")
        if problem is not None:
            problems.append(_broken(subscriber, len(subscriber.events), problem))
    assert not problems, "changes broken:\n" + "\n".join(problems)


def _broken(subscriber: Subscriber, received: int, problem: str) -> str:
    return (
        f"{subscriber.name} ({received} received, {subscriber.reconnects} reconnects, "
        f"endings {subscriber.endings}): {problem}"
    )
