"""`exportCourse` over real WebSockets (gql, both subprotocols) on the real stack (Redis
Cluster, chat, GraphQL): a moderator's subscription streams the course's NDJSON in chunks and
completes; everyone else gets FORBIDDEN, a malformed course BAD_USER_INPUT."""

from __future__ import annotations

from typing import Any

import pytest
from gql import GraphQLRequest
from gql.transport.exceptions import TransportQueryError

from nextcampus_graphql.connection import LEGACY_WS, TRANSPORT_WS
from testing.exports import check_rich_course, parse, populate
from testing.ws import close_code, raw_socket

EXPORT = "subscription($c: ID!) { exportCourse(courseId: $c) { lines } }"


async def chunks_of(session: Any, course_id: str) -> list[list[str]]:
    """Every chunk until the subscription completes."""
    request = GraphQLRequest(EXPORT, variable_values={"c": course_id})
    return [result["exportCourse"]["lines"] async for result in session.subscribe(request)]


@pytest.mark.parametrize("protocol", [TRANSPORT_WS, LEGACY_WS])
async def test_a_moderator_streams_the_course_and_the_subscription_completes(
    ws_session, client_for, course_id, protocol
):
    course = await populate(
        client_for("stu", [course_id]), client_for("mod", [course_id], [course_id]), course_id
    )
    # Enough content for several chunks of the chat service's 64 KiB.
    student = client_for("stu", [course_id])
    for i in range(60):
        sent = await student.send(course_id, f"long {i} " + "y" * 3000)
        course.ids.append(sent.message.message_id)
    moderator = await ws_session("mod", [course_id], protocol, moderates=[course_id])

    chunks = await chunks_of(moderator, course_id)

    assert len(chunks) > 2
    check_rich_course(parse(line for chunk in chunks for line in chunk), course)


async def refusal(session: Any, course_id: str) -> dict[str, Any]:
    with pytest.raises(TransportQueryError) as refused:
        await chunks_of(session, course_id)
    assert refused.value.errors is not None
    error: dict[str, Any] = refused.value.errors[0]
    return error


async def test_only_moderators_of_the_course_may_export_it(ws_session, client_for, course_id):
    await client_for("stu", [course_id]).send(course_id, "hello")
    student = await ws_session("stu", [course_id])
    error = await refusal(student, course_id)
    assert error["extensions"]["code"] == "FORBIDDEN"
    assert f"only moderators of course {course_id} may export it" in error["message"]
    elsewhere = await ws_session("mod", [course_id, "other"], moderates=["other"])
    assert (await refusal(elsewhere, course_id))["extensions"]["code"] == "FORBIDDEN"
    stranger = await ws_session("eve", ["other"], moderates=["other"])
    error = await refusal(stranger, course_id)
    assert error["extensions"]["code"] == "FORBIDDEN"
    assert "not in course" in error["message"]


async def test_a_malformed_course_id_is_bad_input(ws_session):
    moderator = await ws_session("mod", ["ok"], moderates=["ok"])
    error = await refusal(moderator, "bad course!")
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert "course id" in error["message"]


async def test_without_a_token_there_is_no_export(graphql_server):
    async with raw_socket(graphql_server.ws_url, TRANSPORT_WS) as ws:
        await ws.send_json(
            {"id": "1", "type": "subscribe", "payload": {"query": EXPORT, "variables": {"c": "ok"}}}
        )
        assert (await close_code(ws))[0] == 4401  # subscribe before an acknowledged init
    async with raw_socket(graphql_server.ws_url, TRANSPORT_WS) as ws:
        await ws.send_json({"type": "connection_init", "payload": {}})
        code, reason = await close_code(ws)
        assert code == 4403
        assert "missing token" in reason
