"""A course's policy hash written as the operator writes it, for tests of the chat service
and GraphQL that need one rule in force without the operator (its own tests cover the
CRD → hash step)."""

from __future__ import annotations

from typing import Any

from nextcampus_common.keys import ANONYMOUS_TO_CLASSMATES, CourseKeys


def allow_anonymous(cluster_client: Any, course_id: str, allowed: bool = True) -> None:
    """`anonymousPosting: ToClassmates` (or, with `allowed` False, Disabled) for the course."""
    key = CourseKeys(course_id).policy
    if allowed:
        cluster_client.hset(key, "anonymous_posting", ANONYMOUS_TO_CLASSMATES)
    else:
        cluster_client.hdel(key, "anonymous_posting")
