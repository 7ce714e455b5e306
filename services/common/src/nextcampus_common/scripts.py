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


def load_script(name: str) -> LuaScript:
    source = resources.files("nextcampus_common").joinpath(f"lua/{name}.lua").read_text()
    return LuaScript(name, source, hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest())


SEND = load_script("send")
DELETE = load_script("delete")
HISTORY = load_script("history")
RETRACT = load_script("retract")
EVENTS = load_script("events")
POLICY = load_script("policy")
RETIME = load_script("retime")
