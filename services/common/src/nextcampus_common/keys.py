"""Redis key names of DESIGN.md §2. The `{course_id}` hash tag keeps one course in one slot,
so the Lua scripts can touch every key of a course atomically on one node."""

from __future__ import annotations

from dataclasses import dataclass

# Fields of the message hash, in the order the scripts return them. `prev_id` is the id of
# the course's message before it; a tombstone of a message lost in a failover also has
# `retracted` = 1 (retract.lua).
MESSAGE_FIELDS = ("user_id", "content", "timestamp", "deleted", "client_message_id", "prev_id")
# Fields of the policy hash the operator writes and the send script reads.
POLICY_FIELDS = (
    "ttl_seconds",
    "max_length",
    "read_only",
    "rate_limit_messages",
    "rate_limit_seconds",
)
# Written beside them: which CourseChatPolicy (`namespace/name`) governs the course, and,
# while the course's messages are being re-timed to a new TTL, a marker (policy.lua).
POLICY_OWNER_FIELD = "owner"
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
