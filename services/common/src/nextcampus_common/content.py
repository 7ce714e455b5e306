"""What message content may contain, and how stored content is shown on a terminal.

Refused (the chat service answers INVALID_ARGUMENT): the C0 controls other than tab and
newline, DEL and the C1 controls. They carry no text, and on a terminal they act: ESC (and
its C1 form CSI, U+009B) starts sequences that move the cursor, rewrite lines or set the
window title; a carriage return overwrites the line it ends. Carriage returns are refused
too: a chat message's line break is a newline.

Stored: the bidi controls (embeddings and overrides U+202A–U+202E, isolates U+2066–U+2069,
the marks U+200E, U+200F and U+061C). Right-to-left text needs them, but an unclosed
override reorders what follows it on the same line; so the web page isolates every
message, and a terminal is shown them as escapes (`shown_on_terminal`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# C0 without TAB (U+0009) and LF (U+000A), DEL, C1.
_REFUSED = "\x00-\x08\x0b-\x1f\x7f-\x9f"
_BIDI_CONTROLS = "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
REFUSED_CHARACTER = re.compile(f"[{_REFUSED}]")
# What a terminal must never receive raw from a message: the refused characters (messages
# stored before the rule, or written by something other than the chat service) and the
# bidi controls.
_ESCAPED_ON_TERMINAL = re.compile(f"[{_REFUSED}{_BIDI_CONTROLS}]")


@dataclass(frozen=True, slots=True)
class ControlCharacter:
    """A refused character of some content, and where it is (counting characters from 0)."""

    character: str
    position: int

    @property
    def code_point(self) -> str:
        return f"U+{ord(self.character):04X}"

    def problem(self) -> str:
        return (
            f"content contains the control character {self.code_point} at position "
            f"{self.position} (counted from 0); newline and tab are the only control "
            "characters allowed"
        )


def first_control_character(content: str) -> ControlCharacter | None:
    """The first character of `content` that a message may not contain, if any."""
    found = REFUSED_CHARACTER.search(content)
    return None if found is None else ControlCharacter(found.group(), found.start())


def _escape(found: re.Match[str]) -> str:
    code = ord(found.group())
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def shown_on_terminal(text: str, continuation: str = "") -> str:
    """`text` safe to print on a terminal: control and bidi characters as visible escapes
    (`\\x1b`, `\\u202e`), tabs and newlines kept, every line after the first prefixed with
    `continuation` (so that a line of a message cannot pass for a line of its own)."""
    escaped = _ESCAPED_ON_TERMINAL.sub(_escape, text)
    return escaped.replace("\n", "\n" + continuation) if continuation else escaped
