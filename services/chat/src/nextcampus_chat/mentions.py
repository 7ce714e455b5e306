"""`@user` and `@course` in a message's content (README, "Read state, unread counts and
mentions"): parsed once, at the send, into the message's mention_ids and mentions_course."""

from __future__ import annotations

import re
from dataclasses import dataclass

from nextcampus_chat.errors import ChatError, Problem

# `@` and a user id (nextcampus_common.ids.USER_ID), not inside a word or an e-mail address:
# "ask @kim." mentions kim, "kim@uni.example" mentions no one. Trailing dots, dashes,
# underscores and at signs end a sentence rather than a user id.
MENTION = re.compile(r"(?<![A-Za-z0-9._@-])@([A-Za-z0-9][A-Za-z0-9._@-]{0,127})")
TRAILING = "._@-"
# `@course`: everyone in the course (so no user id "course" can be mentioned by itself).
COURSE = "course"
MAX_MENTIONED_USERS = 20


@dataclass(frozen=True, slots=True)
class Mentions:
    user_ids: tuple[str, ...]  # in the order first named, each once
    course: bool


def parse_mentions(content: str) -> Mentions:
    users: dict[str, None] = {}
    course = False
    for match in MENTION.finditer(content):
        name = match.group(1).rstrip(TRAILING)
        if name == COURSE:
            course = True
        else:
            users[name] = None
    if len(users) > MAX_MENTIONED_USERS:
        raise ChatError(
            Problem.INVALID_ARGUMENT,
            f"a message may mention at most {MAX_MENTIONED_USERS} users "
            f"(this one mentions {len(users)}); use @course to reach everyone",
        )
    return Mentions(tuple(users), course)
