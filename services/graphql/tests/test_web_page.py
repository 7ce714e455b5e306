"""The web chat page served by a real GraphQL process: `/`, its files under `/static/`, and
the API routes beside it (the page itself runs in a browser in e2e/test_browser.py)."""

from __future__ import annotations

import importlib.resources
import re
from html.parser import HTMLParser
from typing import Any

import aiohttp
import pytest
from graphql import (
    FragmentDefinitionNode,
    OperationDefinitionNode,
    OperationType,
    parse,
    validate,
)

from nextcampus_graphql.app import WEB_FILES
from nextcampus_graphql.cost import operation_cost
from nextcampus_graphql.schema import build_schema
from nextcampus_graphql.settings import GraphqlSettings

WEB = importlib.resources.files("nextcampus_graphql").joinpath("web")


def base_url(graphql_server: Any) -> str:
    return graphql_server.url.removesuffix("/graphql")


class PageOutline(HTMLParser):
    """The ids, label targets, form controls and scripts of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.elements: dict[str, tuple[str, dict[str, str | None]]] = {}
        self.label_targets: set[str | None] = set()
        self.controls: list[str | None] = []
        self.scripts: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if attributes.get("id"):
            self.elements[str(attributes["id"])] = (tag, attributes)
        if tag == "label":
            self.label_targets.add(attributes.get("for"))
        if tag in {"input", "select", "textarea"}:
            self.controls.append(attributes.get("id"))
        if tag == "script":
            self.scripts.append(attributes)


async def test_page_is_served_at_root(graphql_server):
    async with aiohttp.ClientSession() as http, http.get(base_url(graphql_server) + "/") as r:
        assert r.status == 200
        assert r.content_type == "text/html"
        assert r.charset == "utf-8"
        assert r.headers["Cache-Control"] == "no-cache"
        assert r.headers["Referrer-Policy"] == "no-referrer"  # the page is opened with ?token=
        assert "default-src 'self'" in r.headers["Content-Security-Policy"]
        body = await r.text()
    assert body == WEB.joinpath("index.html").read_text(encoding="utf-8")

    page = PageOutline()
    page.feed(body)
    # The hooks the browser test and other clients rely on.
    for element_id, tag in {
        "courses": "ul",
        "mentions-toggle": "button",
        "mention-list": "ol",
        "composer": "textarea",
        "send": "button",
        "status": "p",
        "load-older": "button",
        "error": "p",
        "messages": "ol",
        "language": "select",
    }.items():
        assert page.elements[element_id][0] == tag, element_id
    assert page.elements["status"][1]["role"] == "status"
    assert page.elements["messages"][1]["aria-live"] == "polite"
    assert set(page.controls) <= page.label_targets, "every form control has a label"
    assert page.scripts == [{"type": "module", "src": "static/app.js"}]
    assert 'href="static/style.css"' in body
    assert 'href="static/icon.svg"' in body
    assert "//" not in body  # no URL of another host (no CDN)


def test_every_file_of_the_page_is_served() -> None:
    """A file added to web/ (a new catalogue) but not to WEB_FILES would be a 404."""
    names = []
    folders = [WEB]
    while folders:
        for entry in folders.pop().iterdir():
            if entry.is_dir():
                folders.append(entry)
            else:
                names.append(str(entry).removeprefix(str(WEB) + "/"))
    assert sorted(names) == sorted(WEB_FILES)


@pytest.mark.parametrize(
    ("name", "content_type"),
    [
        ("app.js", "text/javascript"),
        ("i18n.js", "text/javascript"),
        ("i18n/en.js", "text/javascript"),
        ("i18n/ko.js", "text/javascript"),
        ("style.css", "text/css"),
        ("icon.svg", "image/svg+xml"),
    ],
)
async def test_static_files_are_served(graphql_server, name, content_type):
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base_url(graphql_server)}/static/{name}") as r:
            assert r.status == 200
            assert (r.content_type, r.charset) == (content_type, "utf-8")
            assert r.headers["Cache-Control"] == "no-cache"
            assert r.headers["X-Content-Type-Options"] == "nosniff"
            assert await r.read() == WEB.joinpath(name).read_bytes()
            etag = r.headers["ETag"]
        # `no-cache` makes the browser ask again on every load: unchanged files are a 304.
        headers = {"If-None-Match": etag}
        async with http.get(f"{base_url(graphql_server)}/static/{name}", headers=headers) as r:
            assert r.status == 304
            assert await r.read() == b""
        headers = {"If-None-Match": '"stale"'}
        async with http.get(f"{base_url(graphql_server)}/static/{name}", headers=headers) as r:
            assert r.status == 200


@pytest.mark.parametrize(
    "path",
    [
        "/static/nope.js",
        "/static/index.html",  # the page has one address: /
        "/static/",
        "/static/..%2Fapp.py",
        "/static/../app.py",
        "/static/i18n/",
        "/static/i18n/fr.js",
        "/index.html",
        "/web/app.js",
    ],
)
async def test_unknown_paths_are_404(graphql_server, path):
    async with (
        aiohttp.ClientSession() as http,
        http.get(base_url(graphql_server) + path) as r,
    ):
        assert r.status == 404


async def test_page_does_not_replace_the_api_routes(graphql_server, make_token, course_id):
    base = base_url(graphql_server)
    token = make_token("ada", [course_id])
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/healthz") as r:
            assert (r.status, await r.text()) == (200, "ok")
        async with http.get(f"{base}/readyz") as r:
            assert (r.status, await r.text()) == (200, "ready")
        # Metrics have a port of their own: nothing routed to the API port reads them.
        async with http.get(f"{base}/metrics") as r:
            assert r.status == 404
        async with http.get(f"{base}/graphql") as r:
            assert r.status == 405  # GET without an upgrade
        query = {"query": "{ me { userId courseIds } }"}
        headers = {"Authorization": f"Bearer {token}"}
        async with http.post(f"{base}/graphql", json=query, headers=headers) as r:
            assert r.status == 200
            assert await r.json() == {"data": {"me": {"userId": "ada", "courseIds": [course_id]}}}
        async with http.ws_connect(
            f"{base}/graphql", protocols=["graphql-transport-ws"]
        ) as ws:  # the page's own handshake: the token in the connection_init payload
            await ws.send_json({"type": "connection_init", "payload": {"token": token}})
            assert await ws.receive_json(timeout=10) == {"type": "connection_ack"}


# A template literal of app.js that holds a GraphQL document (`${NAME}` spreads another).
DOCUMENT_CONSTANT = re.compile(r"^const (\w+) = `([^`]*)`;$", re.MULTILINE)


def page_documents() -> dict[str, str]:
    """The GraphQL documents app.js declares as constants, fragments filled in."""
    constants = dict(DOCUMENT_CONSTANT.findall(WEB.joinpath("app.js").read_text(encoding="utf-8")))
    return {
        name: re.sub(r"\$\{(\w+)\}", lambda spread: constants[spread.group(1)], text)
        for name, text in constants.items()
    }


def test_the_pages_subscriptions_fit_in_one_users_subscription_cost() -> None:
    """Each distinct subscription document a user holds adds its cost to every event
    (MAX_SUBSCRIPTION_COST_PER_USER): the page's all at once must fit, with room for a second
    device's other course (the same documents, so nothing more). README, "Guards", names
    these numbers."""
    schema = build_schema()
    settings = GraphqlSettings.model_fields
    costs = {}
    for name, text in page_documents().items():
        document = parse(text)
        operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
        if not operations or operations[0].operation != OperationType.SUBSCRIPTION:
            continue  # a fragment, a query or a mutation
        (operation,) = operations
        assert not validate(schema, document), name
        fragments = {
            d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
        }
        page_limit = settings["history_page_limit"].default
        costs[name] = operation_cost(schema, fragments, operation, {}, page_limit=page_limit)
    assert costs == {"EVENTS": 50, "MY_UPDATES": 23, "PRESENCE_CHANGED": 7, "TYPING_CHANGED": 7}
    assert sum(costs.values()) <= settings["max_subscription_cost_per_user"].default
