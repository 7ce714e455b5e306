"""The operation layer without a server: guards, and which subscriptions share a fan-out
group (the same payload for every event)."""

from __future__ import annotations

import pytest

from nextcampus_graphql.operations import OperationError, OperationFactory
from nextcampus_graphql.schema import build_schema


@pytest.fixture(scope="module")
def factory() -> OperationFactory:
    return OperationFactory(
        build_schema(), max_query_bytes=2048, max_depth=4, max_cost=5000, page_limit=200
    )


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
    shallow = OperationFactory(
        build_schema(), max_query_bytes=2048, max_depth=2, max_cost=5000, page_limit=200
    )
    with pytest.raises(OperationError, match="nested 3 levels deep"):
        shallow.prepare({"query": deep})


HISTORY = """query History($c: ID!, $limit: Int) {
  messages(courseId: $c, limit: $limit) {
    messages { messageId userId content timestamp deleted } hasMore
  }
}"""


@pytest.mark.parametrize(
    ("query", "variables", "cost"),
    [
        ("{ me { userId courseIds } }", {}, 3),
        # The web page's history: 1 + 50 × ((1 + 5) + 1), the default page of 50.
        (HISTORY, {"c": "c"}, 351),
        (HISTORY, {"c": "c", "limit": 200}, 1401),
        (HISTORY, {"c": "c", "limit": 5000}, 1401),  # clamped: the resolver refuses it
        (HISTORY, {"c": "c", "limit": -3}, 8),
        # Aliases are each executed, a repeated field once.
        ("{ a: me { userId } b: me { userId } }", {}, 4),
        ("{ me { userId } me { userId } }", {}, 2),
        # Fragments as if written out; a skipped field costs nothing.
        (
            'query { messages(courseId: "c", limit: 10) { ...P } } '
            "fragment P on MessagePage { messages { ... on ChatMessage { messageId } } }",
            {},
            21,
        ),
        ("query($s: Boolean!) { me @skip(if: $s) { userId } }", {"s": True}, 0),
        (
            'subscription { ...A } fragment A on Subscription { messageAdded(courseId: "c") { messageId content } }',
            {},
            3,
        ),
    ],
)
def test_cost(factory, query, variables, cost):
    assert factory.prepare({"query": query, "variables": variables}).cost == cost


def test_an_operation_over_the_cost_is_refused_before_it_runs():
    cheap = OperationFactory(
        build_schema(), max_query_bytes=2048, max_depth=4, max_cost=400, page_limit=200
    )
    assert cheap.prepare({"query": HISTORY, "variables": {"c": "c"}}).cost == 351
    with pytest.raises(OperationError) as refused:
        cheap.prepare({"query": HISTORY, "variables": {"c": "c", "limit": 60}})
    (error,) = refused.value.errors
    assert error.message.startswith("the operation costs 421; the limit is 400")
    assert error.extensions == {
        "code": "BAD_USER_INPUT",
        "limit": "max_query_cost",
        "cost": 421,
        "maxCost": 400,
    }


@pytest.mark.parametrize(
    "query",
    [
        "subscription($c: ID!, $after: ID) { ...A } fragment A on Subscription "
        "{ messageAdded(courseId: $c, after: $after) { messageId } }",
        "subscription($c: ID!, $after: ID) "
        "{ ... on Subscription { messageAdded(courseId: $c, after: $after) { messageId } } }",
    ],
    ids=["spread", "inline"],
)
def test_the_root_field_of_a_subscription_through_fragments(factory, query):
    a = factory.prepare({"query": query, "variables": {"c": "c1", "after": "5"}})
    b = factory.prepare({"query": query, "variables": {"c": "c2"}})
    assert a.root_field.name.value == "messageAdded"
    assert a.root_arguments(factory.schema) == {"course_id": "c1", "after": "5"}
    assert a.fanout_key() == b.fanout_key()  # the course and `after` do not split groups


@pytest.mark.parametrize(
    ("query", "words"),
    [
        (
            'subscription { messageAdded(courseId: "c") @include(if: false) { messageId } }',
            "exactly one field; this one selects 0",
        ),
        (
            'subscription($s: Boolean!) { messageAdded(courseId: "c") @include(if: $s) '
            "{ messageId } }",
            "was not provided a runtime value",
        ),
    ],
)
def test_a_subscription_root_field_under_skip_or_include_is_refused(factory, query, words):
    with pytest.raises(OperationError, match=words) as refused:
        factory.prepare({"query": query, "variables": {"s": False}})
    assert refused.value.errors[0].extensions["code"] == "BAD_USER_INPUT"
