"""The operation layer without a server: guards, and which subscriptions share a fan-out
group (the same payload for every event)."""

from __future__ import annotations

import pytest

from nextcampus_graphql.operations import OperationError, OperationFactory
from nextcampus_graphql.schema import build_schema


@pytest.fixture(scope="module")
def factory() -> OperationFactory:
    return OperationFactory(build_schema(), max_query_bytes=2048, max_depth=4)


ADDED = """subscription($c: ID!, $after: ID, $withUser: Boolean = true) {
  messageAdded(courseId: $c, after: $after) { messageId userId @include(if: $withUser) }
}"""


def test_course_and_after_do_not_split_groups_but_result_shaping_variables_do(factory):
    a = factory.prepare({"query": ADDED, "variables": {"c": "c1", "after": "5"}})
    b = factory.prepare({"query": ADDED, "variables": {"c": "c2"}})
    c = factory.prepare({"query": ADDED, "variables": {"c": "c1", "withUser": False}})
    assert a.fanout_key() == b.fanout_key()
    assert a.fanout_key() != c.fanout_key()
    assert a.root_arguments(factory.schema) == {"course_id": "c1", "after": "5"}


def test_documents_are_parsed_once(factory):
    first = factory.prepare({"query": ADDED, "variables": {"c": "c1"}})
    second = factory.prepare({"query": ADDED, "variables": {"c": "c2"}})
    assert first.document is second.document


@pytest.mark.parametrize(
    ("payload", "words"),
    [
        ("query", "must be an object"),
        ({"query": ""}, "non-empty string"),
        ({"query": "{ me { userId } }", "variables": "x"}, "must be an object"),
        ({"query": "{ me { userId } }", "operationName": 3}, "must be a string"),
        ({"query": "{ me { userId } }" + " " * 3000}, "larger than 2048 bytes"),
        ({"query": "query A { me { userId } } query B { me { userId } }"}, "pick one"),
        ({"query": "query A { me { userId } }", "operationName": "B"}, "no operation named 'B'"),
        ({"query": ADDED, "variables": {"c": 5.5}}, "Variable '$c'"),
        (
            {"query": '{ messages(courseId: "c") { messages { messageId } } }'},
            None,
        ),
        (
            {
                "query": 'subscription { messageAdded(courseId: "c") { messageId } messageDeleted(courseId: "c") { messageId } }'
            },
            "must select only one top level field",
        ),
    ],
)
def test_guards(factory, payload, words):
    if words is None:  # depth 3 is within the limit of 4
        factory.prepare(payload)
        return
    with pytest.raises(OperationError) as refused:
        factory.prepare(payload)
    assert words in str(refused.value)
    for error in refused.value.errors:
        assert error.extensions["code"] == "BAD_USER_INPUT"


def test_depth_counts_through_fragments(factory):
    deep = """query { messages(courseId: "c") { ...M } }
    fragment M on MessagePage { messages { ...N } }
    fragment N on ChatMessage { messageId }"""
    assert factory.prepare({"query": deep})
    shallow = OperationFactory(build_schema(), max_query_bytes=2048, max_depth=2)
    with pytest.raises(OperationError, match="nested 3 levels deep"):
        shallow.prepare({"query": deep})
