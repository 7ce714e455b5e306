"""What a reaction may be: exactly one emoji, as the `emoji` package (the Unicode emoji data,
kept current with each Unicode release) knows it — skin tones, flags, keycaps and ZWJ
sequences included, anything else refused."""

from __future__ import annotations

import emoji

from nextcampus_chat.errors import ChatError, Problem

VARIATION_SELECTOR_16 = "\ufe0f"
# No emoji sequence is longer than this (family ZWJ sequences with skin tones are ~11 code
# points); anything longer is refused before the lookup.
MAX_EMOJI_CODE_POINTS = 16


def check_emoji(value: str) -> str:
    """`value` as the reaction it names, or INVALID_ARGUMENT. The text-style form of an emoji
    that has an emoji-style one ("❤" and "❤️") is taken as the emoji-style form, so one
    heart is one reaction."""
    if len(value) > MAX_EMOJI_CODE_POINTS or not emoji.is_emoji(value):
        shown = (
            value if len(value) <= MAX_EMOJI_CODE_POINTS else value[:MAX_EMOJI_CODE_POINTS] + "…"
        )
        raise ChatError(Problem.INVALID_ARGUMENT, f"emoji {shown!r} is not a single emoji")
    qualified = value + VARIATION_SELECTOR_16
    if not value.endswith(VARIATION_SELECTOR_16) and emoji.is_emoji(qualified):
        return qualified
    return value
