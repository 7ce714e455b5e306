"""The event format of a course's sharded pub/sub channel (`course:{c}:events`), in one place.

Every change of a course is published there as one JSON object (README, "Data model"):

    k  kind: "a" a message was added, "d" it is a tombstone (deleted, or retracted), "n"
       another change (an edit, a reaction, a pin): only `c` follows, and only the course's
       event log says what changed (the chat service's log tails read it when told)
    c  course id
    i  message id (decimal string)
    u  author's user id
    b  content ("" in a tombstone)
    t  timestamp, milliseconds since the epoch (decimal string)
    m  client message id
    p  the course's message id before it ("" for the first; absent in events of writers
       older than `prev_id`, whose ids were contiguous)
    r  1 when the tombstone retracts a message a Redis failover lost (absent otherwise)
    q  the root of the thread the message replies to (absent when it is not a reply)
    o  the users the message mentions, comma-separated (absent when none)
    w  1 when it mentions the whole course, @course (absent otherwise)
    y  "q" when an added message is a question (absent otherwise; never in a tombstone)
    v  the author's pseudonym when the message was sent anonymously to classmates (absent
       otherwise); `u` is the author all the same: only the chat service's answers to those
       who do not moderate the course put the pseudonym in its place

A notice may be ephemeral — "e" names what it says, and it is never in the event log (older
readers take it for a plain notice and look at the log once, finding nothing new):

    e  "t" a user is typing (typing.lua): u = the user, h = the thread's root ("" for the
       main conversation), x = how long it stands without a renewal (ms);
       "p" presence changed (presence.lua): j = [[user, since ms], ...] came online,
       l = [user, ...] went offline, n = how many are online now;
       "r" a user's read marker moved (mark_read.lua): u = the user (never the position)

The Lua scripts publish it themselves (send.lua: "a"; delete.lua: "d"; retract.lua: "d"
with r = 1; edit.lua, react.lua, pin.lua, question.lua: "n"), in the same round trip as the write; `encode_event` builds the same object in
Python, for tests. The two encoders must match: services/chat/tests/test_events.py decodes
what each script publishes on a real Redis Cluster and compares it with `encode_event`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final, Literal, NotRequired, TypedDict

import orjson

from nextcampus_common.proto.chat.v1.chat_pb2 import (
    ChatMessage,
    CourseEventKind,
    MessageKind,
    PresenceEvent,
    PresenceMember,
    TypingEvent,
)
from nextcampus_common.proto.chat.v1.chat_pb2 import CourseEvent as LoggedEvent

ADDED: Final = "a"
DELETED: Final = "d"
NOTICE: Final = "n"
TYPING: Final = "t"
PRESENCE: Final = "p"
READ: Final = "r"

# Per event beyond its content: the message object and its other fields. What an event
# costs a queue that holds it is this plus its content's bytes.
EVENT_OVERHEAD_BYTES = 256


class EventFields(TypedDict):
    """The JSON object on the channel, field by field (see the module's docstring)."""

    k: Literal["a", "d", "n"]
    c: str
    i: str
    u: str
    b: str
    t: str
    m: str
    p: NotRequired[str]
    r: NotRequired[int]
    q: NotRequired[str]
    o: NotRequired[str]
    w: NotRequired[int]
    y: NotRequired[str]
    v: NotRequired[str]


@dataclass(frozen=True, slots=True)
class CourseEvent:
    """One event of a course's channel: an added message or a tombstone."""

    message: ChatMessage
    # The id before it on the primary that wrote it (0: none; None: unknown, an event of an
    # older writer), and whether the tombstone retracts a message a failover lost.
    prev: int | None = None
    retracted: bool = False
    # Roughly the memory the event holds (content dominates): what it costs a queue.
    size_bytes: int = field(init=False)

    def __post_init__(self) -> None:
        size_bytes = EVENT_OVERHEAD_BYTES + len(self.message.content.encode())
        object.__setattr__(self, "size_bytes", size_bytes)

    @property
    def sequence(self) -> int:
        return int(self.message.message_id)

    @classmethod
    def from_message(cls, message: ChatMessage, *, retracted: bool = False) -> CourseEvent:
        """The event of a stored message (read from the index instead of the channel)."""
        prev = message.previous_message_id
        return cls(message, prev=int(prev) if prev else 0, retracted=retracted)


@dataclass(frozen=True, slots=True)
class ChangeNotice:
    """Kind "n": some change other than a new message or a tombstone went into the course's
    event log (which alone says what it was)."""

    course_id: str
    size_bytes: int = EVENT_OVERHEAD_BYTES


@dataclass(frozen=True, slots=True)
class EphemeralNotice:
    """A notice with "e": typing, presence or a read marker, as the event streams that asked for ephemeral
    events carry it (a CourseEvent without a cursor). None of the course's log."""

    event: LoggedEvent
    size_bytes: int = EVENT_OVERHEAD_BYTES

    @property
    def course_id(self) -> str:
        return self.event.message.course_id


def _as_list(value: object) -> list[Any]:
    """A JSON array from Lua's cjson, which encodes an empty table as an object."""
    return value if isinstance(value, list) else []


def _ephemeral(raw: dict[str, Any]) -> EphemeralNotice | None:
    kind = raw.get("e")
    course = ChatMessage(course_id=raw["c"])
    if kind == TYPING:
        event = LoggedEvent(
            kind=CourseEventKind.TYPING,
            actor_user_id=str(raw["u"]),
            message=course,
            typing=TypingEvent(thread_id=str(raw.get("h") or ""), ttl_ms=int(raw["x"])),
        )
        return EphemeralNotice(event)
    if kind == PRESENCE:
        joined = [PresenceMember(user_id=str(u), since=int(t)) for u, t in _as_list(raw["j"])]
        left = [str(u) for u in _as_list(raw["l"])]
        event = LoggedEvent(
            kind=CourseEventKind.PRESENCE_CHANGED,
            message=course,
            presence=PresenceEvent(joined=joined, left_user_ids=left, online_count=int(raw["n"])),
        )
        return EphemeralNotice(event, EVENT_OVERHEAD_BYTES + 32 * (len(joined) + len(left)))
    if kind == READ:
        event = LoggedEvent(
            kind=CourseEventKind.READ_STATE_CHANGED, actor_user_id=str(raw["u"]), message=course
        )
        return EphemeralNotice(event)
    return None


def decode_event(payload: str | bytes) -> CourseEvent | ChangeNotice | EphemeralNotice:
    raw: EventFields = orjson.loads(payload)
    if raw["k"] == NOTICE:
        if "e" in raw:
            ephemeral = _ephemeral(dict(raw))
            if ephemeral is not None:
                return ephemeral
        return ChangeNotice(raw["c"])
    prev = raw.get("p")
    return CourseEvent(
        ChatMessage(
            course_id=raw["c"],
            message_id=raw["i"],
            user_id=raw["u"],
            content=raw["b"],
            timestamp=int(raw["t"]),
            deleted=raw["k"] == DELETED,
            client_message_id=raw["m"],
            previous_message_id=prev or "",
            reply_to_message_id=raw.get("q", ""),
            mention_ids=raw["o"].split(",") if "o" in raw else [],
            mentions_course=bool(raw.get("w")),
            kind=MessageKind.MESSAGE_KIND_QUESTION
            if raw.get("y") == "q"
            else MessageKind.MESSAGE_KIND_UNSPECIFIED,
            anonymous="v" in raw,
            pseudonym=raw.get("v", ""),
        ),
        prev=None if prev is None else int(prev or 0),
        retracted=bool(raw.get("r")),
    )


def encode_event(event: CourseEvent) -> bytes:
    """The JSON the Lua scripts publish for `event` (for tests: the scripts publish in Redis)."""
    message = event.message
    fields: EventFields = {
        "k": DELETED if message.deleted else ADDED,
        "c": message.course_id,
        "i": message.message_id,
        "u": message.user_id,
        "b": message.content,
        "t": str(message.timestamp),
        "m": message.client_message_id,
    }
    if event.prev is not None:
        fields["p"] = str(event.prev) if event.prev else ""
    if event.retracted:
        fields["r"] = 1
    if message.reply_to_message_id:
        fields["q"] = message.reply_to_message_id
    if message.mention_ids:
        fields["o"] = ",".join(message.mention_ids)
    if message.mentions_course:
        fields["w"] = 1
    if message.kind == MessageKind.MESSAGE_KIND_QUESTION and not message.deleted:
        fields["y"] = "q"
    if message.anonymous:
        fields["v"] = message.pseudonym
    return orjson.dumps(fields)
