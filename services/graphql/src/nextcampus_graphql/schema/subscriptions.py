"""Subscription fields. Their events come from the fan-out engine (`fanout.py`), which
executes each subscription document once per event for every socket that shares it; here
an event (a ChatMessage, or for `courseEvents` a CourseEvent) is simply the field's value."""

from __future__ import annotations

from typing import Any

import graphene

from nextcampus_graphql.schema.events import CourseEvent
from nextcampus_graphql.schema.types import ChatMessage, MyUpdate

MESSAGE_ADDED = "messageAdded"
MESSAGE_DELETED = "messageDeleted"
COURSE_EVENTS = "courseEvents"
MY_UPDATES = "myUpdates"


def _event(root: Any, _info: Any, **_args: Any) -> Any:
    return root


class Subscription(graphene.ObjectType):
    message_added = graphene.Field(
        ChatMessage,
        required=True,
        course_id=graphene.ID(required=True),
        after=graphene.ID(description="replay every message after this id first, then live"),
        resolver=_event,
        description="every message of the course once, in order (deleted ones as tombstones)",
    )
    message_deleted = graphene.Field(
        ChatMessage,
        required=True,
        course_id=graphene.ID(required=True),
        resolver=_event,
        description="tombstones of messages deleted from now on",
    )
    course_events = graphene.Field(
        CourseEvent,
        required=True,
        course_id=graphene.ID(required=True),
        after=graphene.String(
            description="an event's `cursor`, or a history page's `eventCursor`: every change "
            "after it first, then live (null: live only). A cursor older than the course's "
            "event log keeps ends the subscription with CURSOR_EXPIRED: reload the history"
        ),
        resolver=_event,
        description="every change of the course once, in order: messages added, edited, "
        "deleted, reactions, pins (fragments on the event types select what each carries)",
    )
    my_updates = graphene.Field(
        MyUpdate,
        required=True,
        after=graphene.String(description="the `cursor` of the last update you received"),
        resolver=_event,
        description="your unread and mention counts in every course of your token: first "
        "one update per course (live from then on), then a course's whenever they change (at "
        "most one update per course per second), with the new mentions of you",
    )
