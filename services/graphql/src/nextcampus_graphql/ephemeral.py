"""What a course's ephemeral events become for `presenceChanged` and `typingChanged` (they
arrive on the course's one SubscribeEvents upstream, without a cursor; upstream.py):

- `PresenceCoalescer`: joins and leaves of a course, at most one update per interval (the
  first at once, the next no sooner than the interval after it), each carrying the online
  count and every user whose state changed since the last one (their latest state: a user
  who came and went within the interval is a leave), at most `MAX_PRESENCE_CHANGES` of them
  (the rest follow in the next update) — never the member list.
- `TypingBoard`: who is typing now in a course and where, each until their event's TTL runs
  out without a renewal (or they send a message); every change sends the board.

Both render for every subscriber alike (the fan-out's payloads are the same bytes for all),
and the fan-out writes them as ephemeral frames: a socket with a backlog skips them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from nextcampus_common.proto.chat.v1.chat_pb2 import PresenceEvent, PresenceMember

# Changes one presence update carries at most; more wait for the next update.
MAX_PRESENCE_CHANGES = 200
# Typing users one update names at most (the most recent): "and 40 others" is not news.
MAX_TYPING_USERS = 20


@dataclass(frozen=True, slots=True)
class PresenceUpdate:
    """The root value of one `presenceChanged` event."""

    course_id: str
    online_count: int
    joined: list[PresenceMember]
    left: list[str]


@dataclass(frozen=True, slots=True)
class Typist:
    user_id: str
    thread_id: str | None
    expires_at: float  # time.time() seconds


@dataclass(frozen=True, slots=True)
class TypingUpdate:
    """The root value of one `typingChanged` event: everyone typing now, newest first."""

    course_id: str
    users: list[Typist]
    typing_count: int


@dataclass(eq=False)
class PresenceCoalescer:
    course_id: str
    interval_seconds: float
    publish: Callable[[PresenceUpdate], None]
    joined: dict[str, PresenceMember] = field(default_factory=dict)
    left: dict[str, None] = field(default_factory=dict)
    online_count: int | None = None
    last_sent: float = float("-inf")  # loop time
    timer: asyncio.TimerHandle | None = None

    def add(self, event: PresenceEvent) -> None:
        for member in event.joined:
            self.left.pop(member.user_id, None)
            self.joined[member.user_id] = member
        for user_id in event.left_user_ids:
            self.joined.pop(user_id, None)
            self.left[user_id] = None
        self.online_count = event.online_count
        self._schedule()

    def _schedule(self) -> None:
        if self.timer is not None:
            return
        loop = asyncio.get_running_loop()
        delay = max(0.0, self.last_sent + self.interval_seconds - loop.time())
        # Even at once, on the loop's next turn: a burst read from one socket read goes as one.
        self.timer = loop.call_later(delay, self.flush)

    def flush(self) -> None:
        self.timer = None
        if self.online_count is None or not (self.joined or self.left):
            return
        joined = list(self.joined.values())[:MAX_PRESENCE_CHANGES]
        left = list(self.left)[: MAX_PRESENCE_CHANGES - len(joined)]
        for member in joined:
            del self.joined[member.user_id]
        for user_id in left:
            del self.left[user_id]
        self.last_sent = asyncio.get_running_loop().time()
        self.publish(PresenceUpdate(self.course_id, self.online_count, joined, left))
        if self.joined or self.left:
            self._schedule()

    def close(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


@dataclass(eq=False)
class TypingBoard:
    course_id: str
    publish: Callable[[TypingUpdate], None]
    typists: dict[str, Typist] = field(default_factory=dict)  # oldest event first
    timer: asyncio.TimerHandle | None = None

    def typing(self, user_id: str, thread_id: str, ttl_ms: int) -> None:
        self.typists.pop(user_id, None)
        self.typists[user_id] = Typist(user_id, thread_id or None, time.time() + ttl_ms / 1000)
        self._send()
        self._schedule()

    def stopped(self, user_id: str) -> None:
        """The user sent a message: no longer typing it."""
        if self.typists.pop(user_id, None) is not None:
            self._send()

    def update(self) -> TypingUpdate:
        newest = list(reversed(self.typists.values()))
        return TypingUpdate(self.course_id, newest[:MAX_TYPING_USERS], len(newest))

    def _send(self) -> None:
        self.publish(self.update())

    def _schedule(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if not self.typists:
            return
        first = min(t.expires_at for t in self.typists.values())
        self.timer = asyncio.get_running_loop().call_later(
            max(0.0, first - time.time()), self._expire
        )

    def _expire(self) -> None:
        self.timer = None
        now = time.time()
        expired = [u for u, t in self.typists.items() if t.expires_at <= now]
        for user_id in expired:
            del self.typists[user_id]
        if expired:
            self._send()
        self._schedule()

    def close(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
