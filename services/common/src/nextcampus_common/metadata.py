"""gRPC metadata keys of ChatService beyond the proto: shared by the server and its clients."""

from __future__ import annotations

from collections.abc import Iterable

# `Bearer <jwt>`, on every call.
AUTHORIZATION = "authorization"
# Trailing metadata of a RESOURCE_EXHAUSTED send (rate limit) and of an UNAVAILABLE write
# that no replica confirmed: milliseconds until a retry makes sense.
RETRY_AFTER_MS = "retry-after-ms"
# Trailing metadata of every refused call: which problem it was (the chat service's
# `Problem` value), where one status code stands for several: FAILED_PRECONDITION is a
# read-only course ("read_only"), an expired event cursor ("cursor_expired") or a message's
# state or the course's rules ("failed_precondition": deleted, edit window closed, too many
# reactions or pins). Clients tell them apart by it, never by the text.
PROBLEM = "chat-problem"
# Initial metadata of SubscribeMessages, sent once the stream is live: the stream carries
# every message after this id, so a client whose stream breaks before its first message
# resumes from it with after_message_id and misses nothing.
STREAM_AFTER_MESSAGE_ID = "stream-after-message-id"
# SubscribeEvents' initial metadata, once the stream is live: it carries every change after
# this cursor ("": after none, the log was empty), so a client resumes from it.
STREAM_AFTER_CURSOR = "stream-after-cursor"


def metadata_value(metadata: Iterable[tuple[str, str | bytes]] | None, key: str) -> str | None:
    """The first value of `key`, as text (None when absent)."""
    for name, value in metadata or ():
        if name == key:
            return value if isinstance(value, str) else value.decode()
    return None
