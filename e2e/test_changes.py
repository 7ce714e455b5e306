"""The invariants the chaos tests assert (e2e.changes, e2e.clients.delivery_problem), on
sequences made by hand: a good one passes, each kind of breakage is named."""

from __future__ import annotations

from typing import Any

import pytest

from e2e.changes import (
    ADDED,
    DELETED,
    EDITED,
    REACTION_ADDED,
    REACTION_REMOVED,
    RESTORED,
    Acknowledged,
    Change,
    MessageState,
    course_events_problem,
    final_state,
    store_problem,
)
from e2e.clients import delivery_problem


def message(
    message_id: int,
    content: str = "",
    *,
    deleted: bool = False,
    edited: bool = False,
    reactions: tuple[tuple[str, int], ...] = (),
) -> dict[str, Any]:
    return {
        "messageId": str(message_id),
        "userId": "u",
        "content": "" if deleted else content or f"m{message_id}",
        "deleted": deleted,
        "editedAt": "2025-01-01T00:00:00+00:00" if edited and not deleted else None,
        "reactions": [{"emoji": e, "count": n} for e, n in reactions],
    }


class Log:
    """Events of one course as a subscriber receives them: cursors 1-0, 2-0, … unless given."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def add(self, kind: str, actor: str | None, carried: dict[str, Any], **extra: Any) -> Log:
        cursor = extra.pop("cursor", f"{len(self.events) + 1}-0")
        self.events.append(
            {"__typename": kind, "cursor": cursor, "actorId": actor, "message": carried, **extra}
        )
        return self


def acked(*changes: Change) -> list[Acknowledged]:
    """Each change first tried after the one before it was acknowledged."""
    return [Acknowledged(change, after) for after, change in enumerate(changes)]


def state(
    content: str,
    *,
    deleted: bool = False,
    edited: bool = False,
    reactions: tuple[tuple[str, int], ...] = (),
) -> MessageState:
    return MessageState(content, deleted, edited, reactions)


# A good run: two sends (the second a reply), a reaction added and taken back, another kept,
# an edit, a delete by the moderator.
SENDS = (Change(ADDED, 1, "ann", "m1"), Change(ADDED, 2, "bob", "m2"))
GOOD_CHANGES = (
    *SENDS,
    Change(REACTION_ADDED, 1, "bob", "👍"),
    Change(REACTION_ADDED, 1, "cid", "🎉"),
    Change(REACTION_REMOVED, 1, "bob", "👍"),
    Change(EDITED, 1, "ann", "m1, edited"),
    Change(DELETED, 2, "mod"),
)


def good_log() -> Log:
    return (
        Log()
        .add(ADDED, "ann", message(1))
        .add(ADDED, "bob", message(2), root=message(1))
        .add(REACTION_ADDED, "bob", message(1, reactions=(("👍", 1),)), emoji="👍")
        .add(REACTION_ADDED, "cid", message(1, reactions=(("👍", 1), ("🎉", 1))), emoji="🎉")
        .add(REACTION_REMOVED, "bob", message(1, reactions=(("🎉", 1),)), emoji="👍")
        .add(EDITED, "ann", message(1, "m1, edited", edited=True, reactions=(("🎉", 1),)))
        .add(DELETED, "mod", message(2, deleted=True), retracted=False)
    )


GOOD_STORE = {
    1: state("m1, edited", edited=True, reactions=(("🎉", 1),)),
    2: state("", deleted=True),
}


def test_a_good_run_holds():
    assert course_events_problem(good_log().events, acked(*GOOD_CHANGES), GOOD_STORE) is None
    assert store_problem(acked(*GOOD_CHANGES), GOOD_STORE) is None


def test_a_replayed_added_event_carries_the_message_as_it_is_now():
    """After a reconnect the send's event is read after its edit: edited content is fine."""
    log = Log().add(ADDED, "ann", message(1, "m1, edited", edited=True))
    log.add(EDITED, "ann", message(1, "m1, edited", edited=True))
    changes = acked(SENDS[0], Change(EDITED, 1, "ann", "m1, edited"))
    assert course_events_problem(log.events, changes, {1: state("m1, edited", edited=True)}) is None


def test_the_root_of_a_reply_counts_as_its_newest_state():
    log = Log().add(ADDED, "ann", message(1))
    log.add(ADDED, "bob", message(2), root=message(1, reactions=(("👍", 1),)))
    assert final_state(log.events)[1] == state("m1", reactions=(("👍", 1),))


def test_a_lost_unacknowledged_send_is_retracted_and_stored_again():
    """The first attempt (3) was lost with the primary; the retry stored it as 4."""
    log = Log().add(ADDED, "ann", message(3, "again"))
    log.add(DELETED, "ann", message(3, deleted=True), retracted=True)
    log.add(ADDED, "ann", message(4, "again"))
    store = {3: state("", deleted=True), 4: state("again")}
    changes = acked(Change(ADDED, 4, "ann", "again"))
    assert course_events_problem(log.events, changes, store) is None
    assert store_problem(changes, store) is None


@pytest.mark.parametrize("restored_last", [False, True])
def test_a_lost_first_attempt_then_its_retry_is_one_change(restored_last):
    """A reaction's first attempt was seen and lost; its retry applied again. The restore
    may come between them or after both (the loss noticed after the retry)."""
    log = Log().add(ADDED, "ann", message(1))
    log.add(REACTION_ADDED, "bob", message(1, reactions=(("👍", 1),)), emoji="👍")
    if not restored_last:
        log.add(RESTORED, None, message(1))
    log.add(REACTION_ADDED, "bob", message(1, reactions=(("👍", 1),)), emoji="👍")
    if restored_last:
        log.add(RESTORED, None, message(1, reactions=(("👍", 1),)))
    changes = acked(SENDS[0], Change(REACTION_ADDED, 1, "bob", "👍"))
    store = {1: state("m1", reactions=(("👍", 1),))}
    assert course_events_problem(log.events, changes, store) is None


def test_a_lost_change_refused_later_is_restored():
    """Not acknowledged (refused after the loss: its message was deleted): restored."""
    log = Log().add(ADDED, "ann", message(1))
    log.add(REACTION_ADDED, "bob", message(1, reactions=(("👍", 1),)), emoji="👍")
    log.add(RESTORED, None, message(1))
    log.add(DELETED, "ann", message(1, deleted=True), retracted=False)
    changes = acked(SENDS[0], Change(DELETED, 1, "ann"))
    assert course_events_problem(log.events, changes, {1: state("", deleted=True)}) is None


def broken(change: str) -> tuple[Log, list[Acknowledged], dict[int, MessageState]]:
    """The good run, broken in one way."""
    log, changes, store = good_log(), acked(*GOOD_CHANGES), dict(GOOD_STORE)
    events = log.events
    if change == "duplicate":
        events.insert(3, dict(events[2]))
    elif change == "out of order":
        events[2], events[3] = events[3], events[2]
    elif change == "lost":
        del events[5]  # the edit
        events[-1]["message"] = message(2, deleted=True)
    elif change == "wrong content":
        events[0]["message"] = message(1, "m1 changed")
        del events[1:]
        changes, store = acked(SENDS[0]), {1: state("m1 changed")}
    elif change == "wrong actor":
        events[-1]["actorId"] = "ann"
    elif change == "wrong emoji":
        events[3]["emoji"] = "🔥"
    elif change == "unacknowledged":
        changes = changes[:-1]  # the delete was never acknowledged
    elif change == "twice":
        again = dict(events[3], cursor="8-0")
        events.append(again)
    elif change == "retracted":
        events[-1]["retracted"] = True
    elif change == "nobody sent":
        log.add(ADDED, "eve", message(9))
        store[9] = state("m9")
    elif change == "restored nobody":
        log.add(RESTORED, None, message(9))
        store[9] = state("m9")
    elif change == "time order":
        # the delete was tried after the edit was acknowledged, and came first
        events[5], events[6] = events[6], events[5]
        events[5]["cursor"], events[6]["cursor"] = "6-0", "7-0"
    elif change == "state":
        store[1] = state("m1, edited", edited=True, reactions=(("🎉", 2),))
    elif change == "unseen message":
        store[5] = state("m5")
    return log, changes, store


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ("duplicate", "duplicate: cursor 3-0 at position 3 (first at 2)"),
        ("out of order", "out of order: cursor 3-0 at position 3"),
        ("lost", "lost: 1 acknowledged changes never arrived, first number 6 of the 7"),
        ("wrong content", "wrong content: MessageAddedEvent of 1 by ann"),
        ("wrong actor", "a change nobody acknowledged, and no failover undid it: "),
        ("wrong emoji", "ReactionAddedEvent of 1 by cid 🔥"),
        ("unacknowledged", "a change nobody acknowledged, and no failover undid it: "),
        ("twice", "twice: ReactionAddedEvent of 1 by cid 🎉 [4-0] at positions 3 and 7"),
        ("retracted", "retracted: the acknowledged message 2 was lost"),
        ("nobody sent", "MessageAddedEvent of 9 by eve"),
        ("restored nobody", "restored a message nobody sent: 9"),
        ("time order", "out of time order: MessageDeletedEvent of 2 by mod"),
        ("state", "state: 1 messages differ: 1: the events leave"),
        ("unseen message", "5: the events leave None, the store holds"),
    ],
)
def test_a_broken_run_is_named(change, says):
    log, changes, store = broken(change)
    problem = course_events_problem(log.events, changes, store)
    assert problem is not None
    assert says in problem, problem


@pytest.mark.parametrize(
    ("store", "says"),
    [
        ({1: state("m1, edited", edited=True, reactions=(("🎉", 1),))}, "2: the store holds None"),
        ({**GOOD_STORE, 2: state("m2")}, "2: the store holds MessageState(content='m2'"),
        ({**GOOD_STORE, 1: state("m1", reactions=(("🎉", 1),))}, "1: the store holds"),
        ({**GOOD_STORE, 1: state("m1, edited", edited=True)}, "reactions=(('🎉', 1),)"),
        ({**GOOD_STORE, 7: state("m7")}, "7: the store holds MessageState(content='m7'"),
    ],
)
def test_a_store_without_an_acknowledged_change_is_named(store, says):
    problem = store_problem(acked(*GOOD_CHANGES), store)
    assert problem is not None
    assert says in problem, problem


def test_a_retracted_message_in_the_store_is_no_change():
    store = {**GOOD_STORE, 7: state("", deleted=True)}
    assert store_problem(acked(*GOOD_CHANGES), store) is None


# -- delivery_problem (messageAdded) with deletes and edits ---------------------------------


def test_a_deleted_message_may_arrive_as_its_tombstone_and_an_edited_one_edited():
    acknowledged = [(1, "a"), (2, "b"), (3, "c")]
    received = [(1, "a"), (3, "c, edited")]
    assert delivery_problem(received, acknowledged, sole_sender=True, tombstones={2}) == (
        "retracted: acknowledged id 2 was lost ('b')"
    )
    assert (
        delivery_problem(
            received,
            acknowledged,
            sole_sender=True,
            tombstones={2},
            deleted={2},
            edits={3: "c, edited"},
        )
        is None
    )


def test_a_deleted_message_still_has_to_arrive():
    problem = delivery_problem([(1, "a")], [(1, "a"), (2, "b")], deleted={2})
    assert problem is not None
    assert problem.startswith("lost: 1 acknowledged ids never arrived, first 2")


def test_an_edit_nobody_made_is_wrong_content():
    problem = delivery_problem([(1, "x")], [(1, "a")], edits={1: "a, edited"})
    assert problem == "wrong content: id 1 arrived as 'x', acknowledged as 'a'"
