"""The Lua scripts of the data model, loaded from the package and identified by SHA1."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources


@dataclass(frozen=True, slots=True)
class LuaScript:
    name: str
    source: str
    sha: str


def _lua(path: str) -> str:
    return resources.files("nextcampus_common").joinpath(f"lua/{path}.lua").read_text()


def load_script(name: str, *, with_course_library: bool = True) -> LuaScript:
    """A script, after the course library (`lua/lib/course.lua`: the message record, the keys
    beside a message, the steps every change takes) unless it needs none."""
    source = _lua(name)
    if with_course_library:
        source = _lua("lib/course") + "\n" + source
    return LuaScript(name, source, hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest())


SEND = load_script("send")
DELETE = load_script("delete")
HISTORY = load_script("history")
EXPORT = load_script("export")
RETRACT = load_script("retract")
EVENTS = load_script("events")
POLICY = load_script("policy", with_course_library=False)
RETIME = load_script("retime")
EDIT = load_script("edit")
REACT = load_script("react")
PIN = load_script("pin")
QUESTION = load_script("question")
QUESTIONS = load_script("questions")
THREAD = load_script("thread")
READ = load_script("read")
RELOG = load_script("relog")
MARK_READ = load_script("mark_read")
UNREAD = load_script("unread")
MENTIONS = load_script("mentions")
PRESENCE = load_script("presence")
TYPING = load_script("typing")
