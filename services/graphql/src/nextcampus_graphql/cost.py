"""The static cost of an operation, computed before it runs (with its variables, since a page
size can be a variable), in the manner of graphql-ruby's `max_complexity` and GitHub's node
limit: the number of fields execution would resolve, a page's fields once per message.

- Every field that execution resolves costs 1: each alias separately (an alias is resolved
  again), fields repeated under one response name once (execution merges them), fragments and
  inline fragments as if written out, a field left out by `@skip`/`@include` not at all.
  Fields are collected exactly as graphql-core's execution collects them.
- A field that declares a cost in its extensions (`COST_EXTENSION`: its resolver makes a round
  trip of its own to the chat service, as `ChatMessage.editHistory`) costs that instead of 1.
- The selection of a field with a `limit` argument (`messages(limit)`, a page of history) or
  a `first` argument (`presence { members(first) }`) costs that many times over: clamped to
  1…history page limit (a larger one is refused by the resolver before any work), its
  schema default (50) when absent.

So `messages(courseId: $c, limit: 50) { messages { messageId content } hasMore }` costs
1 + 50 × ((1 + 2) + 1) = 201. The cost of each distinct selection is computed once, which
keeps this quick however often fragments spread into each other.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    GraphQLError,
    GraphQLField,
    GraphQLObjectType,
    GraphQLSchema,
    OperationDefinitionNode,
    SchemaMetaFieldDef,
    TypeMetaFieldDef,
    TypeNameMetaFieldDef,
    get_named_type,
    is_abstract_type,
)
from graphql.execution.collect_fields import collect_fields, collect_sub_fields
from graphql.execution.values import get_argument_values

PAGE_SIZE_ARGUMENTS = ("limit", "first")
# A field's own cost, in its `extensions` (the schema sets it), when it is more than 1.
COST_EXTENSION = "cost"
META_FIELDS = {
    "__schema": SchemaMetaFieldDef,
    "__type": TypeMetaFieldDef,
    "__typename": TypeNameMetaFieldDef,
}


class _Costing:
    def __init__(
        self,
        schema: GraphQLSchema,
        fragments: Mapping[str, FragmentDefinitionNode],
        variables: Mapping[str, Any],
        page_limit: int,
    ) -> None:
        self.schema = schema
        self.fragments = dict(fragments)
        self.variables = dict(variables)
        self.page_limit = page_limit
        # (object type, the field nodes merged under one response name) → their selection's
        # cost: the same nodes reached along many paths are costed once.
        self.selection_costs: dict[tuple[str, tuple[int, ...]], int] = {}

    def fields(self, parent: GraphQLObjectType, fields: Mapping[str, list[FieldNode]]) -> int:
        total = 0
        for nodes in fields.values():
            name = nodes[0].name.value
            definition: GraphQLField | None = META_FIELDS.get(name) or parent.fields.get(name)
            if definition is None:  # validation reports it
                total += 1
                continue
            own = (definition.extensions or {}).get(COST_EXTENSION, 1)
            total += own + self.page_size(nodes[0], definition) * self.selection(
                get_named_type(definition.type), nodes
            )
        return total

    def selection(self, field_type: Any, nodes: list[FieldNode]) -> int:
        if not any(node.selection_set for node in nodes):
            return 0
        if is_abstract_type(field_type):  # the costliest of the types it may be
            possible = self.schema.get_possible_types(field_type)
            return max((self.selection(t, nodes) for t in possible), default=0)
        if not isinstance(field_type, GraphQLObjectType):
            return 0
        key = (field_type.name, tuple(id(node) for node in nodes))
        cost = self.selection_costs.get(key)
        if cost is None:
            sub_fields = collect_sub_fields(
                self.schema, self.fragments, self.variables, field_type, nodes
            )
            cost = self.selection_costs[key] = self.fields(field_type, sub_fields)
        return cost

    def page_size(self, node: FieldNode, definition: GraphQLField) -> int:
        name = next((a for a in PAGE_SIZE_ARGUMENTS if a in definition.args), None)
        if name is None:
            return 1
        try:
            value = get_argument_values(definition, node, self.variables).get(name)
        except GraphQLError:  # execution reports it
            return 1
        if not isinstance(value, int):
            return 1
        return min(max(value, 1), self.page_limit)


def operation_cost(
    schema: GraphQLSchema,
    fragments: Mapping[str, FragmentDefinitionNode],
    operation: OperationDefinitionNode,
    variables: Mapping[str, Any],
    *,
    page_limit: int,
) -> int:
    """The cost of `operation` (validated) with its coerced `variables`."""
    root = schema.get_root_type(operation.operation)
    assert root is not None  # validated: the schema has this operation type
    costing = _Costing(schema, fragments, variables, page_limit)
    return costing.fields(
        root,
        collect_fields(schema, costing.fragments, costing.variables, root, operation.selection_set),
    )
