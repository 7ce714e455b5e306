"""The plain logic of presence and typing updates (ephemeral.py), tested directly: what a
coalesced presence update carries, and how the typing board changes."""

from __future__ import annotations

import asyncio

from nextcampus_common.proto.chat.v1.chat_pb2 import PresenceEvent, PresenceMember
from nextcampus_graphql.ephemeral import (
    MAX_PRESENCE_CHANGES,
    MAX_TYPING_USERS,
    PresenceCoalescer,
    PresenceUpdate,
    TypingBoard,
    TypingUpdate,
)


def joins(*users: str, count: int) -> PresenceEvent:
    members = [PresenceMember(user_id=u, since=1) for u in users]
    return PresenceEvent(joined=members, online_count=count)


def leaves(*users: str, count: int) -> PresenceEvent:
    return PresenceEvent(left_user_ids=list(users), online_count=count)


async def test_the_first_change_goes_at_once_and_later_ones_wait_for_the_interval():
    sent: list[PresenceUpdate] = []
    coalescer = PresenceCoalescer("c1", 60.0, sent.append)
    coalescer.add(joins("ann", count=1))
    await asyncio.sleep(0)  # the loop's next turn
    await asyncio.sleep(0)
    assert [([m.user_id for m in u.joined], u.online_count) for u in sent] == [(["ann"], 1)]

    # A burst within the interval: held, then one update with the latest state of each user.
    coalescer.add(joins("bob", "cat", count=3))
    coalescer.add(leaves("bob", "ann", count=1))
    coalescer.add(joins("ann", count=2))
    assert coalescer.timer is not None
    assert coalescer.timer.when() > asyncio.get_running_loop().time() + 50
    assert len(sent) == 1
    coalescer.flush()  # what the timer does
    update = sent[-1]
    assert [m.user_id for m in update.joined] == ["cat", "ann"]
    assert update.left == ["bob"]
    assert update.online_count == 2
    coalescer.close()


async def test_an_update_carries_a_bounded_number_of_changes_and_the_rest_follow():
    sent: list[PresenceUpdate] = []
    coalescer = PresenceCoalescer("c1", 60.0, sent.append)
    users = [f"u{i:04d}" for i in range(MAX_PRESENCE_CHANGES + 50)]
    coalescer.add(joins(*users, count=len(users)))
    coalescer.flush()
    assert len(sent[0].joined) == MAX_PRESENCE_CHANGES
    assert coalescer.timer is not None  # the rest is scheduled
    coalescer.flush()
    assert [m.user_id for u in sent for m in u.joined] == users
    assert all(u.online_count == len(users) for u in sent)
    coalescer.flush()  # nothing new: nothing sent
    assert len(sent) == 2
    coalescer.close()


async def test_the_typing_board_names_the_newest_typists_until_they_expire_or_send():
    sent: list[TypingUpdate] = []
    board = TypingBoard("c1", sent.append)
    for i in range(MAX_TYPING_USERS + 5):
        board.typing(f"u{i}", "", 60_000)
    latest = sent[-1]
    assert latest.typing_count == MAX_TYPING_USERS + 5
    assert len(latest.users) == MAX_TYPING_USERS
    assert latest.users[0].user_id == f"u{MAX_TYPING_USERS + 4}"  # the newest first
    assert latest.users[0].thread_id is None

    board.typing("u0", "42", 60_000)  # renewed, in a thread: the newest now
    assert (sent[-1].users[0].user_id, sent[-1].users[0].thread_id) == ("u0", "42")
    board.stopped("u0")  # sent their message
    assert "u0" not in [u.user_id for u in sent[-1].users]
    count = len(sent)
    board.stopped("nobody")
    assert len(sent) == count  # no change, no update

    nobody_types = asyncio.Event()

    def expired(update: TypingUpdate) -> None:
        if not update.users:
            nobody_types.set()

    expiring = TypingBoard("c2", expired)
    expiring.typing("quick", "", 0)  # no renewal within its TTL (0 ms here): it goes
    async with asyncio.timeout(10):
        await nobody_types.wait()
    board.close()
    expiring.close()
