"""Redis key names of DESIGN.md §2. The `{course_id}` hash tag keeps one course in one slot,
so the Lua scripts can touch every key of a course atomically on one node."""

from __future__ import annotations

from dataclasses import dataclass

# Fields of the message hash, in the order the scripts' records carry them (lua/lib/course.lua
# MESSAGE_FIELDS; a test compares the two). `prev_id` is the id of the course's message
# before it; a tombstone of a message lost in a failover also has `retracted` = 1
# (retract.lua). `participants` is comma-separated (user ids have no comma), `reactions` JSON
# [[emoji, count], ...] (react.lua), `mentions` comma-separated user ids and
# `mentions_course` "1" for @course (send.lua). Questions (question.lua): `kind` "q" on a
# question, `resolved_at` (ms) on a resolved one, `endorsed_at` (ms) on an endorsed answer,
# `endorsed_count` on a question with endorsed answers. Anonymous to classmates (send.lua):
# `anonymous` "1" and the author's `pseudonym`.
MESSAGE_FIELDS = (
    "user_id",
    "content",
    "timestamp",
    "deleted",
    "client_message_id",
    "prev_id",
    "reply_to",
    "edited_at",
    "reply_count",
    "last_reply_at",
    "participants",
    "reactions",
    "pinned_at",
    "mentions",
    "mentions_course",
    "kind",
    "resolved_at",
    "endorsed_at",
    "endorsed_count",
    "anonymous",
    "pseudonym",
)
# Unread and mention counts are exact below this; COUNT_CAP itself means "this many or more"
# (lua/lib/course.lua says the same to the scripts).
COUNT_CAP = 100
# Fields of the policy hash the operator writes and the send script reads.
POLICY_FIELDS = (
    "ttl_seconds",
    "max_length",
    "read_only",
    "rate_limit_messages",
    "rate_limit_seconds",
    "edit_window_seconds",
    # Timetable modes (nextcampus_common/schedule.py): the windows as written (JSON) and
    # their segments in UTC milliseconds, which the scripts read.
    "schedule",
    "schedule_segments",
    # "classmates" when members may send anonymously to classmates (absent: they may not).
    "anonymous_posting",
)
# Written beside them: which CourseChatPolicy (`namespace/name`) governs the course, and,
# while the course's messages are being re-timed to a new TTL, a marker (policy.lua).
POLICY_OWNER_FIELD = "owner"
# The value of `anonymous_posting` that lets members send anonymously (send.lua reads it).
ANONYMOUS_TO_CLASSMATES = "classmates"
POLICY_RETIME_PENDING_FIELD = "retime_pending"


def course_id_of(key: str) -> str:
    """The course of a key (or channel) named by `CourseKeys`: what its hash tag holds."""
    return key[key.index("{") + 1 : key.index("}")]


@dataclass(frozen=True, slots=True)
class CourseKeys:
    course_id: str

    @property
    def prefix(self) -> str:
        return f"course:{{{self.course_id}}}:"

    @property
    def message_prefix(self) -> str:
        return f"{self.prefix}message:"

    def message(self, message_id: str) -> str:
        return f"{self.message_prefix}{message_id}"

    @property
    def messages(self) -> str:
        """Sorted set of message ids scored by sequence: history and replay without KEYS."""
        return f"{self.prefix}messages"

    @property
    def seq(self) -> str:
        """The newest message id of the course (never expires)."""
        return f"{self.prefix}seq"

    @property
    def policy(self) -> str:
        return f"{self.prefix}policy"

    @property
    def events(self) -> str:
        """The sharded pub/sub channel of new and deleted messages."""
        return f"{self.prefix}events"

    @property
    def log(self) -> str:
        """The course's event log (a stream): one entry per change, its id the cursor."""
        return f"{self.prefix}log"

    @property
    def client_prefix(self) -> str:
        return f"{self.prefix}client:"

    def client(self, user_id: str, client_message_id: str) -> str:
        return f"{self.client_prefix}{user_id}:{client_message_id}"

    def rate(self, user_id: str) -> str:
        """Per-user send rate state (GCRA theoretical arrival time, milliseconds)."""
        return f"{self.prefix}rate:{user_id}"

    def slow(self, user_id: str) -> str:
        """Slow mode: present (with a PX TTL) while the user must wait to send again."""
        return f"{self.prefix}slow:{user_id}"

    def action_rate(self, user_id: str) -> str:
        """Per-user rate state of the other changes (edits, reactions, endorsements,
        resolutions), as `rate`."""
        return f"{self.prefix}actions:{user_id}"

    # Beside each message, living as long as it (lua/lib/course.lua names them the same):
    def edits(self, message_id: str) -> str:
        """The message's earlier contents, oldest first (JSON {b: content, t: written ms})."""
        return f"{self.prefix}edits:{message_id}"

    def reactors(self, message_id: str) -> str:
        """Who reacted with what: user id -> space-separated emoji."""
        return f"{self.prefix}reactors:{message_id}"

    def thread(self, message_id: str) -> str:
        """A root's replies (sorted set of ids scored by id)."""
        return f"{self.prefix}thread:{message_id}"

    @property
    def reads(self) -> str:
        """Read markers: user id -> the newest message id they have read."""
        return f"{self.prefix}reads"

    def mentioned(self, user_id: str) -> str:
        """The ids of the messages mentioning a user (sorted set scored by id)."""
        return f"{self.prefix}mentioned:{user_id}"

    @property
    def mentioned_course(self) -> str:
        """The ids of the messages mentioning the whole course (@course)."""
        return f"{self.prefix}mentioned-course"

    @property
    def relogged(self) -> str:
        """Cursors of log entries a failover lost whose messages were restored (relog.lua)."""
        return f"{self.prefix}relogged"

    @property
    def pins(self) -> str:
        """The course's pinned message ids, scored by when they were pinned (ms)."""
        return f"{self.prefix}pins"

    # Questions and endorsed answers (question.lua, questions.lua)
    @property
    def open_questions(self) -> str:
        """The course's open questions (sorted set of ids scored by id)."""
        return f"{self.prefix}questions:open"

    @property
    def resolved_questions(self) -> str:
        """The course's resolved questions (sorted set of ids scored by id)."""
        return f"{self.prefix}questions:resolved"

    @property
    def endorsed(self) -> str:
        """The course's endorsed answers, scored by when they were endorsed (ms): while any
        is, the indexes do not expire (as with `pins`)."""
        return f"{self.prefix}endorsed"

    # Presence and typing (presence.lua, typing.lua): short-lived, never in the event log.
    @property
    def presence_instances(self) -> str:
        """The GraphQL processes holding users of the course: instance -> liveness deadline
        (ms), renewed by each instance's heartbeat."""
        return f"{self.prefix}presence"

    def presence(self, instance_id: str) -> str:
        """The users one GraphQL process has a subscription of the course for (a set)."""
        return f"{self.prefix}presence:{instance_id}"

    @property
    def online(self) -> str:
        """Every user online in the course (the union of the live instances' sets), scored 0:
        ordered by id for paging."""
        return f"{self.prefix}online"

    @property
    def online_since(self) -> str:
        """user -> when they came online (ms)."""
        return f"{self.prefix}online:since"

    def typing(self, user_id: str) -> str:
        """The user's typing throttle: set for `typing_throttle_seconds` per published event."""
        return f"{self.prefix}typing:{user_id}"
