"""Delivery through the real processes: 2 GraphQL + 2 chat + a Redis Cluster. In order,
once, across processes; one upstream stream per course per GraphQL process; resume with
`after`; a chat process killed with -9 mid-subscription loses and repeats nothing."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from devstack.scrape import scrape
from testing.plugin import assert_chain
from testing.ws import Subscriber

SEND = "mutation($c: ID!, $t: String!, $k: ID) { sendMessage(courseId: $c, content: $t, clientMessageId: $k) { messageId } }"


async def send(
    http: aiohttp.ClientSession,
    url: str,
    token: str,
    course_id: str,
    text: str,
    key: str | None = None,
) -> int:
    async with http.post(
        url,
        json={"query": SEND, "variables": {"c": course_id, "t": text, "k": key}},
        headers={"Authorization": f"Bearer {token}"},
    ) as response:
        body = await response.json()
    assert "errors" not in body, body
    return int(body["data"]["sendMessage"]["messageId"])


async def live(subscriber: Subscriber, http, url, token, course_id) -> int:
    return await subscriber.until_live(lambda: send(http, url, token, course_id, "probe"))


async def test_subscribers_on_a_receive_in_order_once_what_b_accepts(
    topology, make_token, course_id
):
    token = make_token("alice", [course_id])
    a_ws = topology.graphql_urls[0].replace("http", "ws", 1)
    # 25 readers (one user may hold only max_sockets_per_user sockets on a process).
    subscribers = [
        await Subscriber.message_added(
            a_ws, make_token(f"reader-{n}", [course_id]), course_id
        ).start()
        for n in range(25)
    ]
    try:
        async with aiohttp.ClientSession() as http:
            b = topology.graphql_urls[1]
            for subscriber in subscribers:
                await live(subscriber, http, b, token, course_id)
            sent = [await send(http, b, token, course_id, f"m{i}") for i in range(40)]
            for subscriber in subscribers:
                await subscriber.has_ids(sent)
                tail = subscriber.ids[subscriber.ids.index(sent[0]) :]
                assert tail == sent  # in order, once
                assert_chain(subscriber.messages)
        # ONE upstream stream for the 25 sockets: on GraphQL A, and on the chat side.
        metrics_a = scrape(topology.graphql_metrics_urls[0])
        assert metrics_a["nextcampus_graphql_upstream_streams"] == 1
        assert metrics_a["nextcampus_graphql_subscriptions"] == 25
        chat_streams = sum(
            scrape(f"http://127.0.0.1:{port}/metrics")["nextcampus_chat_active_streams"]
            for port in topology.chat_metrics_ports
        )
        assert chat_streams == 1
    finally:
        for subscriber in subscribers:
            await subscriber.close()


async def test_a_dropped_socket_resumes_with_after(topology, make_token, course_id):
    token = make_token("alice", [course_id])
    urls = topology.graphql_urls
    async with aiohttp.ClientSession() as http:
        first = await Subscriber.message_added(
            urls[0].replace("http", "ws", 1), token, course_id
        ).start()
        probe = await live(first, http, urls[1], token, course_id)
        before = [await send(http, urls[1], token, course_id, f"a{i}") for i in range(5)]
        await first.has_ids(before)
        await first.close()  # the socket drops
        missed = [await send(http, urls[1], token, course_id, f"b{i}") for i in range(5)]
        resumed = await Subscriber.message_added(
            urls[1].replace("http", "ws", 1), token, course_id, after=before[-1]
        ).start()
        try:
            after = [await send(http, urls[0], token, course_id, f"c{i}") for i in range(5)]
            await resumed.has_ids(missed + after)
            assert resumed.ids == missed + after
            assert_chain(resumed.messages, after=before[-1])
            assert first.ids == [probe, *before]
        finally:
            await resumed.close()


@pytest.mark.chaos
async def test_kill_9_of_the_chat_process_under_a_subscription(topology, make_token, course_id):
    token = make_token("alice", [course_id])
    urls = topology.graphql_urls
    subscriber = await Subscriber.message_added(
        urls[0].replace("http", "ws", 1), token, course_id
    ).start()
    try:
        async with aiohttp.ClientSession() as http:
            acked = [await live(subscriber, http, urls[1], token, course_id)]
            streaming = [
                index
                for index, port in enumerate(topology.chat_metrics_ports)
                if scrape(f"http://127.0.0.1:{port}/metrics")["nextcampus_chat_active_streams"]
            ]
            assert len(streaming) == 1
            for n in range(120):
                if n == 40:
                    topology.chats[streaming[0]].kill()
                # The client retries with its clientMessageId until a send is acknowledged.
                for _attempt in range(50):
                    try:
                        acked.append(await send(http, urls[1], token, course_id, f"m{n}", f"k-{n}"))
                        break
                    except AssertionError:
                        await asyncio.sleep(0.1)
            assert len(acked) == len(set(acked)) == 121
            await subscriber.has_ids(acked)
            tail = subscriber.ids[subscriber.ids.index(acked[0]) :]
            assert tail == sorted(acked)
            assert_chain(subscriber.messages)
        metrics_a = scrape(topology.graphql_metrics_urls[0])
        reopened = sum(
            v
            for k, v in metrics_a.items()
            if k.startswith("nextcampus_graphql_upstream_reconnects_total")
        )
        assert reopened >= 1
    finally:
        await subscriber.close()


async def test_the_upstream_stream_closes_with_its_last_subscriber(topology, make_token, course_id):
    token = make_token("alice", [course_id])
    url = topology.graphql_urls[0]
    metrics_url = topology.graphql_metrics_urls[0]
    subscribers = [
        await Subscriber.message_added(url.replace("http", "ws", 1), token, course_id).start()
        for _ in range(3)
    ]
    async with aiohttp.ClientSession() as http:
        for subscriber in subscribers:
            await live(subscriber, http, url, token, course_id)
    assert scrape(metrics_url)["nextcampus_graphql_upstream_streams"] == 1
    for subscriber in subscribers:
        await subscriber.close()
    for _ in range(100):  # the server notices the closed sockets asynchronously
        if scrape(metrics_url)["nextcampus_graphql_upstream_streams"] == 0:
            break
        await asyncio.sleep(0.1)
    metrics = scrape(metrics_url)
    assert metrics["nextcampus_graphql_upstream_streams"] == 0
    assert metrics["nextcampus_graphql_subscriptions"] == 0
