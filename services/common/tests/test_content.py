"""The content rules: which characters a message may not contain, and how stored content is
made safe for a terminal."""

from __future__ import annotations

from nextcampus_common.content import first_control_character, shown_on_terminal

BIDI_CONTROLS = [0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)]


def test_refused_are_c0_but_tab_and_newline_del_and_c1():
    refused = {
        code for code in range(0x3000) if first_control_character(f"ok {chr(code)}") is not None
    }
    assert refused == {*range(0x20), 0x7F, *range(0x80, 0xA0)} - {0x09, 0x0A}


def test_the_first_refused_character_is_named_with_its_position():
    found = first_control_character("héllo\x1b[31m\x07")
    assert found is not None
    assert (found.code_point, found.position) == ("U+001B", 5)
    assert found.problem().startswith(
        "content contains the control character U+001B at position 5 (counted from 0)"
    )
    assert first_control_character("שלום\u202e\tline\nnext 😀") is None


def test_terminal_sees_escapes_instead_of_control_and_bidi_characters():
    hostile = "".join(chr(c) for c in [*range(0x20), 0x7F, *range(0x80, 0xA0), *BIDI_CONTROLS])
    shown = shown_on_terminal(hostile)
    assert shown.isascii()
    for escape in ("\\x1b", "\\x0d", "\\x9b", "\\u202e", "\\u2066"):
        assert escape in shown
    # Tab and newline stay what they are.
    assert "\t" in shown
    assert shown.count("\n") == 1


def test_terminal_lines_after_the_first_are_prefixed():
    assert shown_on_terminal("one\ntwo\nthree", continuation="  ") == "one\n  two\n  three"
    assert shown_on_terminal("plain text, no change: café 😀") == "plain text, no change: café 😀"
