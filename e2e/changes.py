"""The invariant of DESIGN.md §3 over every change of a course (`courseEvents`), as pure
functions over what a subscriber received, what the workload had acknowledged and what the
store holds at the end (e2e/clients.py drives the workload and reads the store).

- `course_events_problem`: one subscriber's events. Cursors strictly increase (each change
  once, in order); every acknowledged change arrives as its event (kind, message, actor,
  emoji; a send's or an edit's content), after the changes acknowledged before it was first
  tried; every other event is one a failover undid later (a `MessageRestoredEvent` for its
  message, or a retraction of a message whose send was never acknowledged); and the state
  the events leave — each message as the newest event that carried it says, a reply's root
  included — is the store's.
- `store_problem`: the store holds exactly what was acknowledged (acknowledged means kept,
  through any failover), and nothing else.

Nothing here repairs what it reads: each function names the first problem it finds, with
enough around it (positions, cursors) to find it in a log.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from nextcampus_common.ids import event_cursor_key

# The kinds of change, named as their events' __typename.
ADDED = "MessageAddedEvent"
EDITED = "MessageEditedEvent"
DELETED = "MessageDeletedEvent"
REACTION_ADDED = "ReactionAddedEvent"
REACTION_REMOVED = "ReactionRemovedEvent"
RESTORED = "MessageRestoredEvent"
REACTIONS = frozenset({REACTION_ADDED, REACTION_REMOVED})

Event = Mapping[str, Any]  # one courseEvents payload, as testing.ws.COURSE_EVENTS selects it
ChangeKey = tuple[str, int, str, str]  # kind, message id, actor, emoji ("" unless a reaction)


@dataclass(frozen=True)
class Change:
    """One change the workload made: its kind, the message, who made it, and what it says —
    the content of a send or an edit, the emoji of a reaction ("" for a delete)."""

    kind: str
    message_id: int
    actor_id: str
    detail: str = ""

    @property
    def key(self) -> ChangeKey:
        """What its event must match. A send's or an edit's content is not part of it: an
        event carries the message as it is when read, edited or deleted since perhaps."""
        return (
            self.kind,
            self.message_id,
            self.actor_id,
            self.detail if self.kind in REACTIONS else "",
        )


@dataclass(frozen=True)
class Acknowledged:
    """An acknowledged change, and how many acknowledgements came before its first attempt:
    the events of those come before its own (the log's order is the order of time)."""

    change: Change
    after: int


@dataclass(frozen=True)
class MessageState:
    """What the invariant compares of a message."""

    content: str
    deleted: bool
    edited: bool
    reactions: tuple[tuple[str, int], ...]  # (emoji, count), in the order they were first used

    @classmethod
    def of(cls, message: Mapping[str, Any]) -> MessageState:
        """From a ChatMessage as GraphQL answers it (content deleted editedAt reactions)."""
        return cls(
            content=message["content"],
            deleted=bool(message["deleted"]),
            edited=message.get("editedAt") is not None,
            reactions=tuple((r["emoji"], int(r["count"])) for r in message.get("reactions") or ()),
        )


def event_key(event: Event) -> ChangeKey:
    return (
        event["__typename"],
        int(event["message"]["messageId"]),
        event.get("actorId") or "",
        event.get("emoji") or "",
    )


def is_undoing(event: Event) -> bool:
    """A failover's correction, made by no one: a restored message, or the retraction of a
    message it lost."""
    return event["__typename"] == RESTORED or (
        event["__typename"] == DELETED and bool(event.get("retracted"))
    )


def final_state(events: Iterable[Event]) -> dict[int, MessageState]:
    """Each message as the newest event that carried it says (a reply's root too)."""
    state: dict[int, MessageState] = {}
    for event in events:
        state[int(event["message"]["messageId"])] = MessageState.of(event["message"])
        root = event.get("root")
        if root:
            state[int(root["messageId"])] = MessageState.of(root)
    return state


def course_events_problem(
    events: Sequence[Event],
    acknowledged: Sequence[Acknowledged],
    store: Mapping[int, MessageState],
) -> str | None:
    """What breaks the invariant in one subscriber's `events`, or None (see the module).

    `events` are every event after the subscriber's first `after`; `acknowledged` every change
    the workload had acknowledged, in acknowledgement order, all made after that cursor;
    `store` every message sent after it, as the store keeps it now."""
    return (
        _order_problem(events)
        or _matching_problem(events, acknowledged)
        or _state_problem(final_state(events), store, "the events leave", "the store holds")
    )


def _order_problem(events: Sequence[Event]) -> str | None:
    first_at: dict[tuple[int, int], int] = {}
    previous: tuple[int, int] | None = None
    for position, event in enumerate(events):
        key = event_cursor_key(event["cursor"])
        if previous is not None and key <= previous:
            what = "duplicate" if key in first_at else "out of order"
            first = f" (first at {first_at[key]})" if key in first_at else ""
            return (
                f"{what}: cursor {event['cursor']} at position {position}{first} after "
                f"{events[position - 1]['cursor']}: {_describe(event)}"
            )
        first_at[key] = position
        previous = key
    return None


def _matching_problem(events: Sequence[Event], acknowledged: Sequence[Acknowledged]) -> str | None:
    acknowledged_keys = {a.change.key for a in acknowledged}
    sent = {a.change.message_id for a in acknowledged if a.change.kind == ADDED}
    occurrences: dict[ChangeKey, list[int]] = defaultdict(list)
    undone_at: dict[int, list[int]] = defaultdict(list)  # message id -> positions
    for position, event in enumerate(events):
        message_id = int(event["message"]["messageId"])
        if is_undoing(event):
            undone_at[message_id].append(position)
        else:
            occurrences[event_key(event)].append(position)
    for message_id, positions in undone_at.items():
        retractions = [p for p in positions if events[p]["__typename"] == DELETED]
        if message_id in sent and retractions:
            return (
                f"retracted: the acknowledged message {message_id} was lost (position "
                f"{retractions[0]}, cursor {events[retractions[0]]['cursor']})"
            )
        if message_id not in sent and not retractions:
            return (
                f"restored a message nobody sent: {message_id} at position {positions[0]}: "
                f"{_describe(events[positions[0]])}"
            )
    # Only an acknowledged change's last occurrence stands: any other must be undone by a
    # failover later on (a retry may be applied again before the loss is noticed).
    for key, positions in occurrences.items():
        stands = key in acknowledged_keys
        for index, position in enumerate(positions):
            if stands and index == len(positions) - 1:
                continue
            if any(undone > position for undone in undone_at[key[1]]):
                continue
            if stands:
                return (
                    f"twice: {_describe(events[position])} at positions {position} and "
                    f"{positions[index + 1]}, and no failover undid the first"
                )
            return (
                f"a change nobody acknowledged, and no failover undid it: "
                f"{_describe(events[position])} at position {position}"
            )
    missing = [a for a in acknowledged if a.change.key not in occurrences]
    if missing:
        shown = ", ".join(_describe_change(a.change) for a in missing[:5])
        more = f", … ({len(missing) - 5} more)" if len(missing) > 5 else ""
        index = acknowledged.index(missing[0])
        return (
            f"lost: {len(missing)} acknowledged changes never arrived, first number "
            f"{index + 1} of the {len(acknowledged)} acknowledged: {shown}{more} "
            f"({len(events)} events received)"
        )
    return _content_problem(events, acknowledged, occurrences) or _time_order_problem(
        acknowledged, occurrences
    )


def _content_problem(
    events: Sequence[Event],
    acknowledged: Sequence[Acknowledged],
    occurrences: Mapping[ChangeKey, list[int]],
) -> str | None:
    """The standing event of each send and edit carries what was acknowledged (or a later
    state: the message's edit, its deletion)."""
    sends = {a.change.message_id: a.change.detail for a in acknowledged if a.change.kind == ADDED}
    edits = {a.change.message_id: a.change.detail for a in acknowledged if a.change.kind == EDITED}
    for entry in acknowledged:
        change = entry.change
        if change.kind not in (ADDED, EDITED):
            continue
        position = occurrences[change.key][-1]
        message = events[position]["message"]
        if message["deleted"]:
            continue
        edited = message.get("editedAt") is not None
        if change.kind == EDITED and not edited:
            return f"an edit without editedAt: {_describe(events[position])} at {position}"
        wanted = edits.get(change.message_id) if edited else sends.get(change.message_id)
        if message["content"] != wanted:
            return (
                f"wrong content: {_describe(events[position])} at position {position} carries "
                f"{message['content']!r}, acknowledged as {wanted!r}"
            )
    return None


def _time_order_problem(
    acknowledged: Sequence[Acknowledged], occurrences: Mapping[ChangeKey, list[int]]
) -> str | None:
    """A change first tried after another was acknowledged comes after it."""
    standing = [occurrences[a.change.key][-1] for a in acknowledged]
    latest: list[int] = []  # latest[i]: the latest position among acknowledged[0..i]
    for position in standing:
        latest.append(max(position, latest[-1]) if latest else position)
    for index, entry in enumerate(acknowledged):
        if entry.after and standing[index] < latest[entry.after - 1]:
            earlier = standing[: entry.after].index(latest[entry.after - 1])
            return (
                f"out of time order: {_describe_change(entry.change)} (position "
                f"{standing[index]}) was first tried after "
                f"{_describe_change(acknowledged[earlier].change)} was acknowledged, and "
                f"arrived before it (position {latest[entry.after - 1]})"
            )
    return None


def store_problem(
    acknowledged: Sequence[Acknowledged], store: Mapping[int, MessageState]
) -> str | None:
    """Whether `store` (every message sent after the workload began) is exactly what the
    acknowledged changes made: each acknowledged send kept, with its acknowledged edit, its
    acknowledged reactions, deleted when its deletion was acknowledged; and any other message
    a tombstone (a send a failover lost, retracted)."""
    expected: dict[int, MessageState] = {}
    sends = {a.change.message_id: a.change for a in acknowledged if a.change.kind == ADDED}
    edits = {a.change.message_id: a.change.detail for a in acknowledged if a.change.kind == EDITED}
    deleted = {a.change.message_id for a in acknowledged if a.change.kind == DELETED}
    counts: dict[int, Counter[str]] = defaultdict(Counter)
    for entry in acknowledged:
        change = entry.change
        if change.kind in REACTIONS:
            counts[change.message_id][change.detail] += 1 if change.kind == REACTION_ADDED else -1
    for message_id, send in sends.items():
        if message_id in deleted:
            expected[message_id] = MessageState("", deleted=True, edited=False, reactions=())
            continue
        kept = store.get(message_id)
        order = [emoji for emoji, _ in kept.reactions] if kept else []
        wanted = {emoji: n for emoji, n in counts[message_id].items() if n}
        ordered = sorted(wanted, key=lambda e: order.index(e) if e in order else len(order))
        expected[message_id] = MessageState(
            content=edits.get(message_id, send.detail),
            deleted=False,
            edited=message_id in edits,
            reactions=tuple((emoji, wanted[emoji]) for emoji in ordered),
        )
    for message_id, kept in store.items():
        if message_id not in sends and kept.deleted:
            expected[message_id] = kept  # a retracted send that a retry stored again
    return _state_problem(store, expected, "the store holds", "the acknowledged changes make")


def _state_problem(
    found: Mapping[int, MessageState],
    wanted: Mapping[int, MessageState],
    found_is: str,
    wanted_is: str,
) -> str | None:
    differences = []
    for message_id in sorted(found.keys() | wanted.keys()):
        have, want = found.get(message_id), wanted.get(message_id)
        if have != want:
            differences.append(f"{message_id}: {found_is} {have}, {wanted_is} {want}")
    if not differences:
        return None
    more = f"; … ({len(differences) - 3} more)" if len(differences) > 3 else ""
    return f"state: {len(differences)} messages differ: " + "; ".join(differences[:3]) + more


def _describe(event: Event) -> str:
    kind, message_id, actor, emoji = event_key(event)
    extra = f" {emoji}" if emoji else ""
    if event.get("retracted"):
        extra += " (retracted)"
    return f"{kind} of {message_id} by {actor or '-'}{extra} [{event['cursor']}]"


def _describe_change(change: Change) -> str:
    return f"{change.kind} of {change.message_id} by {change.actor_id} {change.detail!r}"
