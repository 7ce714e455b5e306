"""From a request's text to an operation ready to run: parse and validate once per distinct
document (cached), with the guards of a public endpoint (size, depth), then coerce the
variables and refuse an operation that costs too much (`cost.py`) before it runs. Shared by
HTTP POST and both WebSocket subprotocols, as is `run_operation` with its cap on response
bytes."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from graphql import (
    ASTValidationRule,
    DocumentNode,
    ExecutionResult,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLSchema,
    InlineFragmentNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    ValidationContext,
    VariableNode,
    execute,
    get_operation_ast,
    parse,
    specified_rules,
    validate,
    visit,
)
from graphql.execution.collect_fields import collect_fields
from graphql.execution.values import get_argument_values, get_variable_values
from graphql.language import Visitor
from graphql.pyutils import AwaitableOrValue

from nextcampus_common.logs import get_logger
from nextcampus_graphql.cost import operation_cost
from nextcampus_graphql.errors import ApiError, Code

log = get_logger(__name__)

DOCUMENT_CACHE_SIZE = 512
# The largest integer every JSON client reads exactly (JavaScript's Number.MAX_SAFE_INTEGER).
JSON_SAFE_INTEGER = 2**53 - 1

# (document text, operation name, result-shaping variables as JSON): see `fanout_key`.
FanoutKey = tuple[str, str | None, bytes]


class OperationError(Exception):
    """The request cannot run: these errors go back as the operation's errors."""

    def __init__(self, errors: list[GraphQLError]) -> None:
        super().__init__("; ".join(e.message for e in errors))
        self.errors = errors


def _bad_input(message: str) -> OperationError:
    return OperationError([ApiError(Code.BAD_USER_INPUT, message)])


def _depth(
    selection_set: SelectionSetNode | None,
    fragments: Mapping[str, FragmentDefinitionNode],
    fragment_depths: dict[str, int],
    visiting: frozenset[str] = frozenset(),
) -> int:
    """The nesting of fields below `selection_set`. Each fragment's depth is computed once
    (`fragment_depths`): fragments that spread each other twice over would otherwise take
    time exponential in their number."""
    if selection_set is None:
        return 0
    deepest = 0
    for selection in selection_set.selections:
        if isinstance(selection, FieldNode):
            depth = 1 + _depth(selection.selection_set, fragments, fragment_depths, visiting)
        elif isinstance(selection, InlineFragmentNode):
            depth = _depth(selection.selection_set, fragments, fragment_depths, visiting)
        elif isinstance(selection, FragmentSpreadNode):
            name = selection.name.value
            fragment = fragments.get(name)
            if fragment is None or name in visiting:  # other rules report these
                continue
            known = fragment_depths.get(name)
            if known is None:
                known = fragment_depths[name] = _depth(
                    fragment.selection_set, fragments, fragment_depths, visiting | {name}
                )
            depth = known
        else:  # pragma: no cover - graphql-core has no other selection kinds
            continue
        deepest = max(deepest, depth)
    return deepest


def depth_limit_rule(max_depth: int) -> type[ASTValidationRule]:
    class DepthLimit(ASTValidationRule):
        def enter_operation_definition(self, node: OperationDefinitionNode, *_: Any) -> None:
            context: ValidationContext = self.context  # type: ignore[assignment]
            fragments = {
                d.name.value: d
                for d in context.document.definitions
                if isinstance(d, FragmentDefinitionNode)
            }
            depth = _depth(node.selection_set, fragments, {})
            if depth > max_depth:
                self.report_error(
                    GraphQLError(
                        f"query is nested {depth} levels deep; the limit is {max_depth}",
                        node,
                        extensions={"code": Code.BAD_USER_INPUT.value},
                    )
                )

    return DepthLimit


@dataclass(frozen=True, slots=True)
class Document:
    """A parsed, validated document (cached by its text)."""

    text: str
    node: DocumentNode
    fragments: dict[str, FragmentDefinitionNode]


@dataclass(frozen=True, slots=True)
class Operation:
    document: Document
    definition: OperationDefinitionNode
    kind: OperationType
    name: str | None
    variables: dict[str, Any]
    cost: int
    # A subscription's one root field, as graphql-core collects it (through fragments and
    # inline fragments): every node selecting it, all with the same arguments (validated).
    root_fields: tuple[FieldNode, ...] = ()
    # The variables as the request gave them: what execution coerces (again). Coerced values
    # do not always coerce twice: an enum's is its graphene member, not its name.
    given_variables: dict[str, Any] = field(default_factory=dict)

    # -- subscriptions ---------------------------------------------------------------------

    @property
    def root_field(self) -> FieldNode:
        assert self.root_fields, "only subscriptions have a root field"
        return self.root_fields[0]

    def root_arguments(self, schema: GraphQLSchema) -> dict[str, Any]:
        """The coerced arguments of the (single) root field of a subscription."""
        root_type = schema.subscription_type
        assert root_type is not None
        field_name = self.root_field.name.value
        try:
            return get_argument_values(
                root_type.fields[field_name], self.root_field, self.variables
            )
        except GraphQLError as exc:
            raise OperationError([exc]) from exc

    def fanout_key(self) -> FanoutKey:
        """Operations with equal keys render every event to the same payload: the same
        document, and the same values of the variables the result depends on. Variables
        used only as root-field arguments (the course, `after`) select events, they do not
        shape the result, so they are left out."""
        used = _result_variables(self.document.node, self.root_fields)
        shaping = {name: self.variables.get(name) for name in sorted(used)}
        return (self.document.text, self.name, orjson.dumps(shaping))


def _result_variables(document: DocumentNode, roots: tuple[FieldNode, ...]) -> frozenset[str]:
    root_argument_variables = {
        id(arg.value)
        for root in roots
        for arg in root.arguments
        if isinstance(arg.value, VariableNode)
    }
    names: set[str] = set()

    class Collect(Visitor):
        def enter_variable(self, node: VariableNode, *_: Any) -> None:
            if id(node) not in root_argument_variables:
                names.add(node.name.value)

        def enter_variable_definition(self, *_: Any) -> Any:
            return self.SKIP  # the declarations are not uses

    visit(document, Collect())
    return frozenset(names)


class OperationFactory:
    """Parses and validates each distinct document once; coerces variables per request."""

    def __init__(
        self,
        schema: GraphQLSchema,
        *,
        max_query_bytes: int,
        max_depth: int,
        max_cost: int,
        page_limit: int,
    ) -> None:
        self.schema = schema
        self._max_query_bytes = max_query_bytes
        self._max_cost = max_cost
        self._page_limit = page_limit
        self._rules = [*specified_rules, depth_limit_rule(max_depth)]
        self._documents = functools.lru_cache(maxsize=DOCUMENT_CACHE_SIZE)(self._document)

    def _document(self, text: str) -> Document | OperationError:
        try:
            node = parse(text, no_location=False, max_tokens=2_000)
        except GraphQLError as exc:
            exc.extensions = {"code": Code.BAD_USER_INPUT.value}
            return OperationError([exc])
        try:
            errors = validate(self.schema, node, self._rules, max_errors=10)
        except GraphQLError as exc:
            # A rule that cannot finish raises instead of reporting (graphql-core's
            # single-field rule on `@include(if: $var)` at a subscription's root): still
            # the client's document, still an answer.
            errors = [exc]
        if errors:
            for error in errors:
                error.extensions = {"code": Code.BAD_USER_INPUT.value, **(error.extensions or {})}
            return OperationError(list(errors))
        fragments = {
            d.name.value: d for d in node.definitions if isinstance(d, FragmentDefinitionNode)
        }
        return Document(text, node, fragments)

    def prepare(self, payload: object) -> Operation:
        """`payload` is the request: {query, variables?, operationName?, extensions?}."""
        if not isinstance(payload, dict):
            raise _bad_input("the request must be an object with a `query`")
        query = payload.get("query")
        if not isinstance(query, str) or not query.strip():
            raise _bad_input("`query` must be a non-empty string")
        if len(query.encode()) > self._max_query_bytes:
            raise _bad_input(f"query is larger than {self._max_query_bytes} bytes")
        variables = payload.get("variables")
        if variables is not None and not isinstance(variables, dict):
            raise _bad_input("`variables` must be an object")
        operation_name = payload.get("operationName")
        if operation_name is not None and not isinstance(operation_name, str):
            raise _bad_input("`operationName` must be a string")
        document = self._documents(query)
        if isinstance(document, OperationError):
            raise document
        definition = get_operation_ast(document.node, operation_name)
        if definition is None:
            raise _bad_input(
                f"no operation named {operation_name!r}"
                if operation_name
                else "the document has several operations: pick one with `operationName`"
            )
        coerced = get_variable_values(
            self.schema, definition.variable_definitions or (), variables or {}
        )
        if isinstance(coerced, list):
            for error in coerced:
                error.extensions = {"code": Code.BAD_USER_INPUT.value}
            raise OperationError(coerced)
        # Before anything runs: a document of a few KB can ask for a hundred pages at once.
        try:
            cost = operation_cost(
                self.schema, document.fragments, definition, coerced, page_limit=self._page_limit
            )
            root_fields: tuple[FieldNode, ...] = ()
            if definition.operation is OperationType.SUBSCRIPTION:
                root_fields = self._subscription_root(document, definition, coerced)
        except GraphQLError as exc:  # a directive's argument that execution would refuse
            exc.extensions = {"code": Code.BAD_USER_INPUT.value}
            raise OperationError([exc]) from exc
        if cost > self._max_cost:
            raise OperationError(
                [
                    ApiError(
                        Code.BAD_USER_INPUT,
                        f"the operation costs {cost}; the limit is {self._max_cost} "
                        "(each field 1, a page's fields times its `limit`): "
                        "ask for fewer fields or smaller pages",
                        limit="max_query_cost",
                        cost=min(cost, JSON_SAFE_INTEGER),
                        maxCost=self._max_cost,
                    )
                ]
            )
        return Operation(
            document=document,
            definition=definition,
            kind=definition.operation,
            name=operation_name,
            variables=coerced,
            cost=cost,
            root_fields=root_fields,
            given_variables=dict(variables or {}),
        )

    def _subscription_root(
        self, document: Document, definition: OperationDefinitionNode, variables: dict[str, Any]
    ) -> tuple[FieldNode, ...]:
        """The one root field as graphql-core's execution collects it: through fragment
        spreads and inline fragments, minus what `@skip`/`@include` leave out."""
        root_type = self.schema.subscription_type
        assert root_type is not None  # validated: the document has a subscription
        fields = collect_fields(
            self.schema, document.fragments, variables, root_type, definition.selection_set
        )
        if len(fields) != 1:
            raise _bad_input(
                f"a subscription must select exactly one field; this one selects {len(fields)}"
            )
        (nodes,) = fields.values()
        return tuple(nodes)


def execute_event(
    schema: GraphQLSchema, operation: Operation, root_value: Any
) -> AwaitableOrValue[ExecutionResult]:
    """A subscription's document executed for one event (its root value): what a `next`
    message's payload is made of."""
    return execute(
        schema,
        operation.document.node,
        root_value=root_value,
        variable_values=operation.given_variables,
        operation_name=operation.name,
    )


def format_error(error: GraphQLError) -> dict[str, Any]:
    """An error as clients see it, always with `extensions.code`. A bug of ours (any other
    exception in a resolver) is logged and shown only as INTERNAL."""
    original = error.original_error
    if original is not None and not isinstance(original, GraphQLError):
        log.error("resolver failed", path=error.path, exc_info=original)
        formatted: dict[str, Any] = {
            "message": "internal error",
            "extensions": {"code": Code.INTERNAL.value},
        }
        if error.path:
            formatted["path"] = error.path
        return formatted
    formatted = dict(error.formatted)
    extensions = dict(formatted.get("extensions") or {})
    extensions.setdefault("code", Code.BAD_USER_INPUT.value)
    formatted["extensions"] = extensions
    return formatted


def format_result(result: ExecutionResult) -> dict[str, Any]:
    """The response object: data, and the errors with their codes."""
    response: dict[str, Any] = {"data": result.data}
    if result.errors:
        response["errors"] = [format_error(error) for error in result.errors]
    return response


@dataclass(frozen=True, slots=True)
class OperationResult:
    """A query's or mutation's response object, serialized."""

    payload: bytes
    failed: bool  # it carries errors
    refused_by: str | None = None  # the setting that replaced it by an error


async def run_operation(
    schema: GraphQLSchema, operation: Operation, context: Any, *, max_response_bytes: int
) -> OperationResult:
    """Execute a query or mutation; the response object with data and coded errors. A
    response larger than `max_response_bytes` is replaced by an error saying so (a
    mutation's effect stays: only its answer is dropped)."""
    result = execute(
        schema,
        operation.document.node,
        context_value=context,
        variable_values=operation.given_variables,
        operation_name=operation.name,
    )
    if inspect.isawaitable(result):
        result = await result
    response = format_result(result)
    payload = orjson.dumps(response)
    if len(payload) > max_response_bytes:
        error = ApiError(
            Code.BAD_USER_INPUT,
            f"the response is {len(payload)} bytes; the limit is {max_response_bytes}: "
            "ask for fewer fields or smaller pages",
            limit="max_response_bytes",
            responseBytes=len(payload),
            maxResponseBytes=max_response_bytes,
        )
        return OperationResult(
            orjson.dumps({"data": None, "errors": [format_error(error)]}),
            failed=True,
            refused_by="max_response_bytes",
        )
    return OperationResult(payload, bool(response.get("errors")))
