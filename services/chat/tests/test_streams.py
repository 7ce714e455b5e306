"""Delivery: in order, once, across processes, through resumes, pub/sub loss and failover."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import grpc
import pytest
import redis

from nextcampus_common.chat_api import ChatClient, stream_live_after
from nextcampus_common.keys import CourseKeys
from testing.plugin import Collector, assert_chain, established


async def test_stream_on_one_process_gets_what_another_accepts(topology, make_token, course_id):
    token = make_token("alice", [course_id])
    a, b = (ChatClient(target, token) for target in topology.chat_targets)
    collector = Collector(a.subscribe(course_id))
    try:
        first = await established(collector, lambda: b.send(course_id, "probe"))
        sent = [int((await b.send(course_id, f"m{i}")).message.message_id) for i in range(30)]
        await collector.has_ids(sent)
        assert collector.ids == [first, *sent]
        contents = [m.content for m in collector.messages]
        assert contents == ["probe", *(f"m{i}" for i in range(30))]
    finally:
        await collector.close()
        await a.close()
        await b.close()


async def test_resume_replays_then_goes_live_without_gap_or_duplicate(client_for, course_id):
    """Race: subscribers join with `after` at random points while sends run concurrently."""
    alice = client_for("alice", [course_id])
    first = int((await alice.send(course_id, "start")).message.message_id)
    stop = asyncio.Event()
    acked: list[int] = [first]

    async def sender() -> None:
        i = 0
        while not stop.is_set():
            acked.append(int((await alice.send(course_id, f"m{i}")).message.message_id))
            i += 1

    sending = asyncio.create_task(sender())
    collectors = []
    try:
        for _ in range(25):
            await asyncio.sleep(random.uniform(0, 0.02))
            after = random.choice(acked)
            collectors.append((after, Collector(alice.subscribe(course_id, str(after)))))
        await asyncio.sleep(0.2)
    finally:
        stop.set()
        await sending
    last = acked[-1]
    for after, collector in collectors:
        await collector.wait_for(lambda c, last=last: bool(c.ids) and c.ids[-1] >= last)
        await collector.close()
        assert collector.ids[-1] == last
        assert_chain(collector.messages, after=after)


async def test_streams_of_one_course_share_one_redis_subscription(
    chat_server, client_for, course_id, redis_cluster
):
    alice = client_for("alice", [course_id])
    collectors = [Collector(alice.subscribe(course_id)) for _ in range(20)]
    try:
        for collector in collectors:
            await established(collector, lambda: alice.send(course_id, "probe"))
        assert chat_server.metrics.courses_subscribed._value.get() == 1
        assert chat_server.metrics.active_streams._value.get() == 20
        channel = CourseKeys(course_id).events
        port = redis_cluster.primary_for(channel)
        counts = redis.Redis(port=port, decode_responses=True).execute_command(
            "PUBSUB", "SHARDNUMSUB", channel
        )
        assert counts == [channel, 1]
    finally:
        for collector in collectors:
            await collector.close()


async def test_lost_pubsub_connection_loses_no_message(client_for, course_id, redis_cluster):
    """Redis drops the subscription connection; messages sent meanwhile still arrive."""
    alice = client_for("alice", [course_id])
    collector = Collector(alice.subscribe(course_id))
    try:
        probe = await established(collector, lambda: alice.send(course_id, "probe"))
        port = redis_cluster.primary_for(CourseKeys(course_id).events)
        node = redis.Redis(port=port)
        sent = []
        for round_ in range(5):
            node.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
            for i in range(5):
                sent.append(int((await alice.send(course_id, f"r{round_}-{i}")).message.message_id))
        await collector.has_ids(sent)
        assert_chain(collector.messages)
        assert collector.ids == [probe, *sent]
    finally:
        await collector.close()


@pytest.mark.chaos
async def test_failover_of_the_course_primary_loses_no_acknowledged_message(
    own_redis_cluster, chat_settings_factory, make_token, course_id
):
    """kill -9 the primary that owns the course's slot while sends (retried with the same
    client_message_id) and a subscriber run: every acknowledged message arrives once, in order.
    The promoted replica has no replica of its own until the killed node rejoins (restarted
    as Kubernetes would): sends are refused (UNAVAILABLE) in that window, then go on."""
    from nextcampus_chat.server import build_server

    server = build_server(chat_settings_factory(redis_nodes=own_redis_cluster.nodes))
    await server.start()
    client = ChatClient(f"127.0.0.1:{server.port}", make_token("alice", [course_id]))
    collector = Collector(client.subscribe(course_id))
    acked: list[int] = []
    try:
        await established(collector, lambda: client.send(course_id, "probe"))
        acked.extend(collector.ids)

        async def send_with_retries(n: int) -> None:
            while True:
                try:
                    response = await client.send(course_id, f"m{n}", f"cm-{n}", deadline_seconds=5)
                except grpc.aio.AioRpcError as exc:
                    if exc.code() not in (
                        grpc.StatusCode.UNAVAILABLE,
                        grpc.StatusCode.DEADLINE_EXCEEDED,
                    ):
                        raise
                    await asyncio.sleep(0.1)
                    continue
                acked.append(int(response.message.message_id))
                return

        victim = own_redis_cluster.primary_for(CourseKeys(course_id).seq)
        rejoined = None
        for n in range(300):
            if n == 100:
                own_redis_cluster.kill_node(victim)
                rejoined = asyncio.create_task(
                    asyncio.to_thread(own_redis_cluster.restart_replaced_node, victim)
                )
            await send_with_retries(n)
        assert rejoined is not None
        await rejoined
        assert len(set(acked)) == len(acked) == 301
        await collector.has_ids(acked, within=30)
        assert collector.ids == sorted(acked)
        assert_chain(collector.messages)
        assert server.metrics.gap_fills.labels("resubscribe")._value.get() >= 1
    finally:
        await collector.close()
        await client.close()
        await server.stop()


async def cut_off_as_slow(slow: grpc.aio.UnaryStreamCall, server: Any) -> None:
    """Reading on, the stream ends UNAVAILABLE (resume with after_message_id), counted."""

    async def read_to_the_end() -> None:
        while True:
            await slow.read()

    with pytest.raises(grpc.aio.AioRpcError) as cut:
        await asyncio.wait_for(read_to_the_end(), 20)
    assert cut.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "fell behind" in (cut.value.details() or "")
    assert server.metrics.slow_consumers._value.get() == 1


async def test_slow_consumer_is_cut_off_while_a_fast_one_keeps_up(
    chat_settings_factory, make_token, course_id
):
    from nextcampus_chat.server import build_server

    server = build_server(chat_settings_factory(stream_queue_size=4))
    await server.start()
    token = make_token("alice", [course_id])
    client = ChatClient(f"127.0.0.1:{server.port}", token)
    # A fixed 64 KiB HTTP/2 window (no BDP growth), so a reader that stops backs up quickly.
    slow_client = ChatClient(
        f"127.0.0.1:{server.port}", token, options=[("grpc.http2.bdp_probe", 0)]
    )
    fast = Collector(client.subscribe(course_id))
    slow = slow_client.subscribe(course_id)
    try:
        await established(fast, lambda: client.send(course_id, "probe"))
        await slow.read()  # the probe: the slow stream is live, then it stops reading
        # Large messages fill the HTTP/2 window, so the server-side queue backs up.
        sent = [
            int((await client.send(course_id, f"{i} " + "x" * 3000)).message.message_id)
            for i in range(150)
        ]
        await fast.has_ids(sent)
        assert_chain(fast.messages)
        await cut_off_as_slow(slow, server)
    finally:
        await fast.close()
        slow.cancel()
        await client.close()
        await slow_client.close()
        await server.stop()


async def test_a_slow_stream_is_cut_off_by_the_bytes_it_holds(
    chat_settings_factory, make_token, course_id
):
    """A queue of many events is cheap, of many large ones is not: the byte bound cuts a
    stream off long before its count bound would."""
    from nextcampus_chat.server import build_server

    server = build_server(
        chat_settings_factory(stream_queue_size=100_000, stream_queue_bytes=1_048_576)
    )
    await server.start()
    token = make_token("alice", [course_id])
    client = ChatClient(f"127.0.0.1:{server.port}", token)
    slow_client = ChatClient(
        f"127.0.0.1:{server.port}", token, options=[("grpc.http2.bdp_probe", 0)]
    )
    slow = slow_client.subscribe(course_id)
    try:
        await stream_live_after(slow)
        probe = await client.send(course_id, "probe")
        assert (await slow.read()).message_id == probe.message.message_id
        for i in range(150):  # 16 KB each: 2.4 MB, far more than a stopped reader's windows
            await client.send(course_id, f"{i} " + "😀" * 3990)
        await cut_off_as_slow(slow, server)
    finally:
        slow.cancel()
        await client.close()
        await slow_client.close()
        await server.stop()


async def test_graceful_shutdown_ends_streams_so_clients_resume(
    chat_settings_factory, make_token, course_id
):
    from nextcampus_chat.server import build_server

    server = build_server(chat_settings_factory())
    await server.start()
    client = ChatClient(f"127.0.0.1:{server.port}", make_token("alice", [course_id]))
    collector = Collector(client.subscribe(course_id))
    try:
        await established(collector, lambda: client.send(course_id, "probe"))
        await server.stop()
        await collector.wait_for(lambda c: c.error is not None)
        assert collector.error is not None
        assert collector.error.code() == grpc.StatusCode.UNAVAILABLE
        assert "after_message_id" in (collector.error.details() or "")
    finally:
        await collector.close()
        await client.close()
        await server.stop()


async def test_first_subscriptions_of_many_courses_at_once_all_go_live(client_for):
    """Regression: concurrent first subscriptions on one Redis node once shared a lazily
    opened pub/sub connection badly, and some streams stayed silent."""
    courses = [f"burst-{n}-{random.randrange(10**9)}" for n in range(40)]
    alice = client_for("alice", courses)
    collectors = [Collector(alice.subscribe(course)) for course in courses]
    try:
        async with asyncio.timeout(30):
            await asyncio.gather(*(stream_live_after(c.call) for c in collectors))
        sent = [int((await alice.send(course, "hello")).message.message_id) for course in courses]
        for collector, message_id in zip(collectors, sent, strict=True):
            await collector.has_ids([message_id])
    finally:
        for collector in collectors:
            await collector.close()


async def test_many_streams_leaving_at_once_do_not_disturb_the_ones_that_stay(client_for):
    """Regression: streams cancelled together cut each other's unsubscribe in half and
    left the node's shared pub/sub connection broken."""
    courses = [f"churn-{n}-{random.randrange(10**9)}" for n in range(30)]
    stay = f"stay-{random.randrange(10**9)}"
    alice = client_for("alice", [*courses, stay])
    staying = Collector(alice.subscribe(stay))
    try:
        await stream_live_after(staying.call)
        for _round in range(3):
            leaving = [Collector(alice.subscribe(course)) for course in courses]
            async with asyncio.timeout(30):
                await asyncio.gather(*(stream_live_after(c.call) for c in leaving))
            for collector in leaving:
                collector.call.cancel()
            await asyncio.gather(*(c.close() for c in leaving))
            message_id = int((await alice.send(stay, "still here")).message.message_id)
            await staying.has_ids([message_id])
        assert_chain(staying.messages)
    finally:
        await staying.close()
