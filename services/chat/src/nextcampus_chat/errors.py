"""What can go wrong with a request, independent of the transport that reports it."""

from __future__ import annotations

import enum


class Problem(enum.Enum):
    UNAUTHENTICATED = "unauthenticated"
    PERMISSION_DENIED = "permission_denied"
    INVALID_ARGUMENT = "invalid_argument"
    RATE_LIMITED = "rate_limited"
    # Rate-limited by the course's slow mode (one message per N s), not by the rate limit:
    # the same status, told apart by clients that show the mode (trailing PROBLEM).
    SLOW_MODE = "slow_mode"
    NOT_FOUND = "not_found"
    READ_ONLY = "read_only"
    UNAVAILABLE = "unavailable"
    SLOW_CONSUMER = "slow_consumer"
    SHUTTING_DOWN = "shutting_down"
    # A cursor older than what the course's event log keeps: reload the history.
    CURSOR_EXPIRED = "cursor_expired"
    # The message's state or the course's rules do not allow it now (deleted, edit window
    # closed, too many reactions or pins).
    FAILED_PRECONDITION = "failed_precondition"


class ChatError(Exception):
    def __init__(self, problem: Problem, message: str, *, retry_after_ms: int | None = None):
        super().__init__(message)
        self.problem = problem
        self.message = message
        self.retry_after_ms = retry_after_ms
