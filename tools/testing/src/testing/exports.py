"""Course exports in tests (README, "Exporting a course"): one course with everything an
export carries, and the check that an export holds all of it. Shared by the chat service's,
GraphQL's, chatctl's and the operator's tests, so each checks the same course the same way."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from nextcampus_common.chat_api import ChatClient
from nextcampus_common.proto.chat.v1 import chat_pb2


@dataclass(frozen=True, slots=True)
class RichCourse:
    """The ids of what `populate` made."""

    course_id: str
    question: str
    answer: str  # endorsed
    root: str  # a thread's root with reactions
    reply: str
    edited: str  # edited twice
    deleted: str  # a tombstone
    ids: list[str] = field(default_factory=list)  # every message, oldest first


async def populate(student: ChatClient, moderator: ChatClient, course_id: str) -> RichCourse:
    """A course with a question and its endorsed answer, a thread, reactions of two users,
    a message edited twice and a deleted one. `student` and `moderator` are clients of the
    course (the moderator moderates it)."""
    api = moderator.api

    async def sent(client: ChatClient, content: str, **kw: Any) -> str:
        return (await client.send(course_id, content, **kw)).message.message_id

    question = await sent(student, "When is the exam?", question=True)
    answer = await sent(moderator, "Friday, 9:00 in room 101", reply_to=question)
    await api.change_question(moderator.token, course_id, answer, change="endorse")
    root = await sent(student, "Anyone for a study group? 📚")
    reply = await sent(moderator, "Count me in", reply_to=root)
    await api.react(student.token, course_id, root, "👍", add=True)
    await api.react(moderator.token, course_id, root, "👍", add=True)
    await api.react(moderator.token, course_id, root, "🎉", add=True)
    edited = await sent(student, "first draft")
    await api.edit(student.token, course_id, edited, "second draft")
    await api.edit(student.token, course_id, edited, "final text")
    deleted = await sent(student, "oops, wrong course")
    await student.delete(course_id, deleted)
    ids = [question, answer, root, reply, edited, deleted]
    return RichCourse(course_id, question, answer, root, reply, edited, deleted, ids)


@dataclass(frozen=True, slots=True)
class ParsedExport:
    header: dict[str, Any]
    messages: list[dict[str, Any]]  # the message lines, in order
    end: dict[str, Any] | None  # None: the export was cut short

    def by_id(self) -> dict[str, dict[str, Any]]:
        return {line["message"]["messageId"]: line for line in self.messages}

    def message(self, message_id: str) -> chat_pb2.ChatMessage:
        """A message line read back into the proto, as a client of the format would."""
        return json_format.ParseDict(self.by_id()[message_id]["message"], chat_pb2.ChatMessage())


def parse(lines: Iterable[str]) -> ParsedExport:
    """NDJSON lines (with or without their newlines), checked for the format's shape."""
    parsed = [json.loads(line) for line in lines if line.strip()]
    assert parsed, "an export has at least its header"
    header, rest = parsed[0], parsed[1:]
    assert header["type"] == "course", header
    end = rest.pop() if rest and rest[-1]["type"] == "end" else None
    assert all(line["type"] == "message" for line in rest), [line["type"] for line in rest]
    return ParsedExport(header, rest, end)


def read(path: str | Path) -> ParsedExport:
    """An export file, parsed."""
    return parse(Path(path).read_text(encoding="utf-8").splitlines())


def check_rich_course(export: ParsedExport, course: RichCourse) -> None:
    """`export` holds everything `populate` made, oldest first, and is complete."""
    assert export.header["courseId"] == course.course_id
    assert export.header["exportedAt"].endswith("Z")
    assert {"ttlSeconds", "maxLength", "readOnly", "editWindowSeconds"} <= set(
        export.header["policy"]
    )
    ids = [line["message"]["messageId"] for line in export.messages]
    assert ids == course.ids
    assert export.end == {"type": "end", "messages": len(course.ids)}
    lines = export.by_id()

    question, answer = export.message(course.question), export.message(course.answer)
    assert question.kind == chat_pb2.MESSAGE_KIND_QUESTION
    assert question.endorsed_answer_count == 1
    assert answer.reply_to_message_id == course.question
    assert answer.endorsed_at > 0

    root = export.message(course.root)
    assert root.content == "Anyone for a study group? 📚"
    assert root.reply_count == 1
    assert [(r.emoji, r.count) for r in root.reactions] == [("👍", 2), ("🎉", 1)]
    assert export.message(course.reply).reply_to_message_id == course.root
    reactors = {r["userId"]: sorted(r["emoji"]) for r in lines[course.root]["reactors"]}
    student, moderator = root.user_id, answer.user_id
    assert reactors == {student: ["👍"], moderator: sorted(["👍", "🎉"])}

    edited = export.message(course.edited)
    assert edited.content == "final text"
    assert edited.edited_at > 0
    versions = lines[course.edited]["versions"]
    assert [v["content"] for v in versions] == ["first draft", "second draft"]
    assert all(int(v["writtenAt"]) > 0 for v in versions)

    tombstone = export.message(course.deleted)
    assert tombstone.deleted
    assert tombstone.content == ""
    assert lines[course.deleted]["versions"] == []
    assert lines[course.deleted]["reactors"] == []
    # Every field of the proto is there, defaults included (a field added later is too).
    names = {f.json_name for f in chat_pb2.ChatMessage.DESCRIPTOR.fields}
    assert all(set(line["message"]) == names for line in export.messages)
