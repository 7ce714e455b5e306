"""Anonymous to classmates (README, "Anonymous to classmates"): what the chat service's answers
hold for a caller who does not moderate a course. In each anonymous message of that course the
author is replaced by their pseudonym, and so is the actor of each change that author made
(an edit, a deletion, a reaction, resolving their question): the real author is in no byte
such a caller receives.

`seen_by` is applied at the service's edge to every unary answer and every streamed item, so
no RPC, present or future, can forget it. Answers with no anonymous message (nearly all) are
passed on as they are, without a copy; the others are copied before the change, since the
same objects may be shared (a course's feed hands one event to every stream).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import cache
from typing import TypeVar

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from nextcampus_common.proto.chat.v1.chat_pb2 import ChatMessage, CourseEvent

# Whether the caller may see the authors of a course's anonymous messages (moderates it).
Reveals = Callable[[str], bool]
Answer = TypeVar("Answer", bound=Message)

_MESSAGE = ChatMessage.DESCRIPTOR
_EVENT = CourseEvent.DESCRIPTOR


@cache
def _holders(descriptor: Descriptor) -> tuple[FieldDescriptor, ...]:
    """The fields of `descriptor` that may hold a message or an event (at any depth)."""

    def may_hold(message_type: Descriptor, seen: frozenset[Descriptor]) -> bool:
        if message_type in (_MESSAGE, _EVENT):
            return True
        if message_type in seen:  # a recursive type: its other fields decide
            return False
        return any(
            may_hold(field.message_type, seen | {message_type})
            for field in message_type.fields
            if field.message_type is not None
        )

    return tuple(
        field
        for field in descriptor.fields
        if field.message_type is not None and may_hold(field.message_type, frozenset())
    )


def _units(answer: Message) -> Iterator[Message]:
    """Every ChatMessage and CourseEvent of `answer` (not those inside an event: its own)."""
    descriptor = answer.DESCRIPTOR
    if descriptor in (_MESSAGE, _EVENT):
        yield answer
        return
    for field in _holders(descriptor):
        value = getattr(answer, field.name)
        if field.is_repeated:
            for item in value:
                yield from _units(item)
        elif answer.HasField(field.name):
            yield from _units(value)


def _veiled(message: ChatMessage, reveals: Reveals) -> bool:
    return message.anonymous and not reveals(message.course_id)


def _hides_anyone(unit: Message, reveals: Reveals) -> bool:
    if isinstance(unit, CourseEvent):
        return any(_veiled(m, reveals) for m in (unit.message, unit.root))
    assert isinstance(unit, ChatMessage)
    return _veiled(unit, reveals)


def _veil(unit: Message, reveals: Reveals) -> None:
    if isinstance(unit, CourseEvent):
        message = unit.message
        if _veiled(message, reveals) and unit.actor_user_id == message.user_id:
            unit.actor_user_id = message.pseudonym
        for part in (unit.message, unit.root):
            _veil(part, reveals)
        return
    assert isinstance(unit, ChatMessage)
    if _veiled(unit, reveals):
        unit.user_id = unit.pseudonym


def seen_by(answer: Answer, reveals: Reveals) -> Answer:
    """`answer` as a caller sees it who may see the authors of the courses `reveals` admits."""
    if not any(_hides_anyone(unit, reveals) for unit in _units(answer)):
        return answer
    veiled = type(answer)()
    veiled.CopyFrom(answer)
    for unit in _units(veiled):
        _veil(unit, reveals)
    return veiled
