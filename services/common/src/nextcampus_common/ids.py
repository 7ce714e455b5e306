"""The shapes of the ids that end up in Redis keys, checked before any key is built."""

from __future__ import annotations

import re

MAX_ID_LENGTH = 128
COURSE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
USER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$")
CLIENT_MESSAGE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# message ids are the decimal per-course sequence; 19 digits is int64's range.
MESSAGE_ID = re.compile(r"^[1-9][0-9]{0,18}$")
# event cursors are Redis stream ids: milliseconds and a sequence number.
# A GraphQL process's presence instance id (random per process, never shown to clients).
INSTANCE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
EVENT_CURSOR = re.compile(r"^[0-9]{1,15}-[0-9]{1,19}$")
# A cursor before every change of a course: ListEvents and SubscribeEvents after it start at
# the oldest change the log keeps (SubscribeEvents after "" would start live, later).
LOG_START_CURSOR = "0-0"


class InvalidId(ValueError):
    """An id that does not have the documented shape."""


def _check(value: object, pattern: re.Pattern[str], what: str, rule: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        shown = value if not isinstance(value, str) or len(value) <= 40 else value[:40] + "…"
        raise InvalidId(f"{what} {shown!r} is invalid: {rule}")
    return value


def check_course_id(value: object) -> str:
    return _check(value, COURSE_ID, "course id", "1-64 of A-Z a-z 0-9 . _ -, starting alphanumeric")


def check_user_id(value: object) -> str:
    return _check(value, USER_ID, "user id", "1-128 of A-Z a-z 0-9 . _ @ -, starting alphanumeric")


def check_client_message_id(value: object) -> str:
    return _check(value, CLIENT_MESSAGE_ID, "client message id", "1-128 of A-Z a-z 0-9 . _ : -")


def check_message_id(value: object) -> str:
    return _check(value, MESSAGE_ID, "message id", "a positive decimal number of up to 19 digits")


def check_instance_id(value: object) -> str:
    return _check(value, INSTANCE_ID, "instance id", "1-64 of A-Z a-z 0-9 _ -")


def check_event_cursor(value: object) -> str:
    return _check(value, EVENT_CURSOR, "event cursor", "as a ListEvents response gave it")


def event_cursor_key(cursor: str) -> tuple[int, int]:
    """A well-formed cursor (or "", before every change) in the log's order."""
    milliseconds, _, sequence = cursor.partition("-")
    return int(milliseconds or 0), int(sequence or 0)
