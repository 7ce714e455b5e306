"""pytest plugin of the workspace (`-p testing.plugin`): real Redis Clusters, real chat
servers and processes, tokens. Everything started here is stopped here, by PID."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Protocol, Self, TypeVar

import grpc
import pytest

from devstack.processes import free_ports
from devstack.redis_cluster import RedisCluster
from devstack.topology import DEV_JWT_SECRET, Topology
from nextcampus_common.auth import issue_token
from nextcampus_common.chat_api import ChatClient, stream_live_after
from nextcampus_common.proto.chat.v1.chat_pb2 import (
    ChatMessage,
    CourseEvent,
    SendMessageResponse,
)

TokenFactory = Callable[..., str]


def _start_cluster(root: Path) -> RedisCluster:
    if shutil.which("redis-server") is None:
        pytest.fail(
            "redis-server is missing: `make test` installs it (apt-get install redis-server)"
        )
    cluster = RedisCluster(free_ports(6, with_bus=True), root)
    try:
        cluster.start()
    except BaseException:
        cluster.stop()
        raise
    return cluster


def npm_ci(directory: Path, package: str) -> None:
    """Install `directory`'s locked node packages once (`npm ci`), unless `package` is there.
    Fails the test with a clear message where node or npm is missing (`make deps` installs
    them)."""
    import fcntl

    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.fail("node and npm are required: `make deps` installs them (Debian nodejs npm)")
    # Test workers (pytest -n) may want the same folder at once: one installs, the others
    # wait for it and find the package there.
    with (directory / ".npm-ci.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (directory / "node_modules" / package).is_dir():
            return
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=directory,
            check=True,
            timeout=300,
        )


async def run_node(
    script: Path, *args: str, env: dict[str, str] | None = None, within: float = 60
) -> str:
    """Run a node script to its end (killed past `within` seconds); its stdout. A non-zero exit
    fails the test with what the script wrote on stderr."""
    import os

    process = await asyncio.create_subprocess_exec(
        "node",
        str(script),
        *args,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), within)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode == 0, f"{script.name} exited {process.returncode}:\n{stderr.decode()}"
    return stdout.decode()


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """For `pytest -n N` (make test): a worker takes a whole file at a time, so its module
    fixtures are made once, and the whole e2e suite, which shares one running stack (session
    fixtures), stays on one worker. (xdist's `loadgroup` cannot say this with pytest 9.2: its
    groups are written where pytest no longer reads node ids.)"""
    from xdist.scheduler import LoadScopeScheduling

    class FileOrE2eSuite(LoadScopeScheduling):  # type: ignore[misc]  # xdist has no types
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return "e2e" if path.startswith("e2e/") else path

    return FileOrE2eSuite(config, log)


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """A 6-node Redis Cluster shared by the session (tests use their own course ids)."""
    cluster = _start_cluster(tmp_path_factory.mktemp("redis-cluster"))
    yield cluster
    cluster.stop()


@pytest.fixture
def cluster_client(redis_cluster: RedisCluster) -> Iterator[Any]:
    """A redis-py cluster client of the session's cluster, to look at what is stored."""
    import redis

    client = redis.RedisCluster(
        host="127.0.0.1", port=redis_cluster.ports[0], decode_responses=True
    )
    yield client
    client.close()


@pytest.fixture
def own_redis_cluster(tmp_path: Path) -> Iterator[RedisCluster]:
    """A cluster of the test's own, for tests that kill its nodes."""
    cluster = _start_cluster(tmp_path / "redis-cluster")
    yield cluster
    cluster.stop()


@pytest.fixture
def course_id() -> str:
    return f"c-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def jwt_secret() -> str:
    return DEV_JWT_SECRET


@pytest.fixture
def make_token(jwt_secret: str) -> TokenFactory:
    def make(user: str, courses: list[str], moderates: list[str] | None = None, **kw: Any) -> str:
        return issue_token(jwt_secret, user, courses, moderates or [], **kw)

    return make


@pytest.fixture
def topology(tmp_path: Path) -> Iterator[Topology]:
    """Redis Cluster + two chat + two GraphQL processes on free ports (real processes); no
    gateway: these tests talk to the services (e2e/ goes through Envoy)."""
    stack = Topology.on_free_ports(
        tmp_path / "stack", gateway=False, chat_overrides={"default_rate_limit_messages": 0}
    )
    stack.start()
    yield stack
    stack.stop()


@pytest.fixture
def chat_settings_factory(redis_cluster: RedisCluster, jwt_secret: str) -> Callable[..., Any]:
    from nextcampus_chat.settings import ChatSettings

    def make(**overrides: Any) -> ChatSettings:
        values: dict[str, Any] = {
            "redis_nodes": redis_cluster.nodes,
            "jwt_secret": jwt_secret,
            "grpc_host": "127.0.0.1",
            "grpc_port": 0,
            "metrics_port": 0,
            "log_format": "console",
            "shutdown_grace_seconds": 1.0,
            # Tests send (and react, pin) many times quickly; the rate-limit tests set a course
            # policy or build a server with a limit.
            "default_rate_limit_messages": 0,
            "action_rate_limit_messages": 0,
        }
        values.update(overrides)
        return ChatSettings(**values)

    return make


@pytest.fixture
async def chat_server(chat_settings_factory: Callable[..., Any]) -> AsyncIterator[Any]:
    """An in-process chat server built by the real app factory."""
    from nextcampus_chat.server import build_server

    server = build_server(chat_settings_factory())
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def client_for(
    chat_server: Any, make_token: TokenFactory
) -> AsyncIterator[Callable[..., ChatClient]]:
    """Clients (chatctl's ChatClient) of the in-process chat server, one per (user, courses)."""
    clients: list[ChatClient] = []

    def make(
        user: str, courses: list[str], moderates: list[str] | None = None, **kw: Any
    ) -> ChatClient:
        client = ChatClient(
            f"127.0.0.1:{chat_server.port}", make_token(user, courses, moderates, **kw)
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


Item = TypeVar("Item")


class StreamCollector(Generic[Item]):
    """Reads a server-streaming call in the background and keeps what arrived."""

    def __init__(self, call: grpc.aio.UnaryStreamCall) -> None:
        self.call = call
        self.items: list[Item] = []
        self.error: grpc.aio.AioRpcError | None = None
        self._changed = asyncio.Condition()
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for item in self.call:
                async with self._changed:
                    self.items.append(item)
                    self._changed.notify_all()
        except grpc.aio.AioRpcError as exc:
            self.error = exc
        async with self._changed:
            self._changed.notify_all()

    async def wait_for(self, condition: Callable[[Self], bool], within: float = 20) -> None:
        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(lambda: condition(self) or self._task.done())
        assert condition(self), f"stream ended ({self.error!r}) before the condition held"

    async def close(self) -> None:
        self.call.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


class Collector(StreamCollector[ChatMessage]):
    """A SubscribeMessages call's messages."""

    @property
    def messages(self) -> list[ChatMessage]:
        return self.items

    @property
    def ids(self) -> list[int]:
        return [int(m.message_id) for m in self.messages if not m.deleted]

    async def has_ids(self, ids: list[int], within: float = 20) -> None:
        wanted = set(ids)
        await self.wait_for(lambda c: wanted <= set(c.ids), within)


class EventCollector(StreamCollector[CourseEvent]):
    """A SubscribeEvents call's events."""

    @property
    def events(self) -> list[CourseEvent]:
        return self.items


class Chained(Protocol):
    """A message as a client received it (a ChatMessage, or GraphQL's fields of one)."""

    @property
    def message_id(self) -> str: ...
    @property
    def previous_message_id(self) -> str: ...
    @property
    def deleted(self) -> bool: ...


def assert_chain(messages: Sequence[Chained], after: int | None = None) -> None:
    """Added messages as a stream delivered them: in order, none twice, none missing — each
    names the one before it (previous_message_id), the first names `after` when given. A
    message the stream later got a tombstone of may have been retracted (lost in a
    failover): the next one may then name what came before it instead."""
    added = [m for m in messages if not m.deleted]
    ids = [int(m.message_id) for m in added]
    assert ids == sorted(set(ids)), f"duplicates or out of order: {ids}"
    tombstones = {m.message_id for m in messages if m.deleted}
    allowed = [str(after)] if after is not None else []
    for index, message in enumerate(added):
        if index > 0 or after is not None:
            assert message.previous_message_id in allowed, (
                f"gap before {message.message_id}: it follows {message.previous_message_id!r}, "
                f"the stream had {allowed!r}"
            )
        if message.message_id in tombstones:
            allowed.append(message.message_id)
        else:
            allowed = [message.message_id]


async def established(
    collector: Collector, send: Callable[[], Awaitable[SendMessageResponse]]
) -> int:
    """Wait until the stream is live, then send a probe and wait until the stream sees it."""
    await stream_live_after(collector.call)
    response = await send()
    probe = int(response.message.message_id)
    await collector.has_ids([probe])
    return probe


@dataclass
class GraphqlServer:
    url: str
    app: Any
    runner: Any

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://", 1)

    @property
    def wiring(self) -> Any:
        """The server's fixed parts (settings, metrics, …): what a test looks into."""
        from nextcampus_graphql.app import WIRING

        return self.app[WIRING]


@pytest.fixture
def graphql_settings_factory(chat_server: Any, jwt_secret: str) -> Callable[..., Any]:
    from nextcampus_graphql.settings import GraphqlSettings

    def make(**overrides: Any) -> GraphqlSettings:
        values: dict[str, Any] = {
            "chat_target": f"ipv4:127.0.0.1:{chat_server.port}",
            "jwt_secret": jwt_secret,
            "http_host": "127.0.0.1",
            "http_port": 0,
            "metrics_port": 0,
            "log_format": "console",
            "shutdown_grace_seconds": 1.0,
        }
        values.update(overrides)
        return GraphqlSettings(**values)

    return make


async def start_graphql_server(settings: Any) -> GraphqlServer:
    """The real app factory on a free loopback port, in this process."""
    from aiohttp import web

    from nextcampus_graphql.app import create_app

    app = create_app(settings)
    runner = web.AppRunner(app, shutdown_timeout=settings.shutdown_grace_seconds)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return GraphqlServer(f"http://127.0.0.1:{port}/graphql", app, runner)


@pytest.fixture
async def graphql_server(
    graphql_settings_factory: Callable[..., Any],
) -> AsyncIterator[GraphqlServer]:
    """An in-process GraphQL server in front of the in-process chat server."""
    server = await start_graphql_server(graphql_settings_factory())
    yield server
    await server.runner.cleanup()


# -- signing keys and a JWKS URL -------------------------------------------------------------


@dataclass(frozen=True)
class SigningKey:
    """An asymmetric key pair of an identity provider: its public JWK and tokens it signs."""

    kid: str
    algorithm: str  # RS256 or ES256
    private_key: Any

    @classmethod
    def generate(cls, kid: str, algorithm: str) -> SigningKey:
        from cryptography.hazmat.primitives.asymmetric import ec, rsa

        if algorithm == "RS256":
            return cls(
                kid, algorithm, rsa.generate_private_key(public_exponent=65537, key_size=2048)
            )
        if algorithm == "ES256":
            return cls(kid, algorithm, ec.generate_private_key(ec.SECP256R1()))
        raise ValueError(f"no key generator for {algorithm}")

    @property
    def public_jwk(self) -> dict[str, Any]:
        import json

        import jwt

        algorithm = jwt.algorithms.get_default_algorithms()[self.algorithm]
        jwk: dict[str, Any] = json.loads(algorithm.to_jwk(self.private_key.public_key()))
        return {**jwk, "kid": self.kid, "use": "sig", "alg": self.algorithm}

    def token(
        self,
        user: str,
        courses: list[str],
        *,
        kid: str | None = None,
        algorithm: str | None = None,
        ttl_seconds: int = 3600,
    ) -> str:
        """A token for this deployment's issuer and audience, signed with this key; `kid` and
        `algorithm` override what the header claims (a token lying about its key)."""
        import time

        import jwt

        claims = {
            "sub": user,
            "courses": courses,
            "exp": int(time.time()) + ttl_seconds,
            "iss": "nextcampus",
            "aud": "nextcampus-chat",
        }
        return jwt.encode(
            claims,
            self.private_key,
            algorithm=algorithm or self.algorithm,
            headers={"kid": self.kid if kid is None else kid},
        )


def jwks_of(*keys: SigningKey) -> dict[str, Any]:
    return {"keys": [key.public_jwk for key in keys]}


class JwksServer:
    """An identity provider's JWKS URL on loopback: a real HTTP server on its own thread, so
    it answers whatever the test's event loop is doing. It counts fetches, answers `status`
    (200: the JWKS; anything else: an error page) and, while held, keeps every answer back
    until `release()` (or 30 s)."""

    HOLD_LIMIT_SECONDS = 30.0

    def __init__(self, jwks: dict[str, Any]) -> None:
        import http.server
        import json
        import threading

        self.jwks = jwks
        self.status = 200
        self.location = ""  # with a 3xx status: where it points
        self.fetches = 0
        self.waiting = 0  # requests held right now
        self._released = threading.Event()
        self._released.set()
        self._changed = threading.Condition()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with server._changed:
                    server.fetches += 1
                    server.waiting += 1
                    server._changed.notify_all()
                try:
                    server._released.wait(server.HOLD_LIMIT_SECONDS)
                    ok = server.status == 200
                    body = json.dumps(server.jwks).encode() if ok else b"unavailable"
                    self.send_response(server.status)
                    self.send_header("Content-Type", "application/json" if ok else "text/plain")
                    if server.location:
                        self.send_header("Location", server.location)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass  # the client gave up waiting: nothing to answer
                finally:
                    with server._changed:
                        server.waiting -= 1
                        server._changed.notify_all()

            def log_message(self, *_args: Any) -> None:
                pass

        self._http = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._http.daemon_threads = True
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._http.server_address[1]}/jwks.json"

    def hold(self) -> None:
        self._released.clear()

    def release(self) -> None:
        self._released.set()

    async def wait_until(self, condition: Callable[[JwksServer], bool], within: float = 20) -> None:
        """Wait (in a thread: the server's threads change what `condition` reads) until
        `condition(self)` holds."""

        def wait() -> bool:
            with self._changed:
                return self._changed.wait_for(lambda: condition(self), timeout=within)

        assert await asyncio.to_thread(wait), f"JWKS server: condition not met within {within} s"

    def close(self) -> None:
        self.release()
        self._http.shutdown()
        self._http.server_close()


@pytest.fixture(scope="session")
def signing_key() -> SigningKey:
    """The identity provider's RS256 key (generating one takes a moment: once per run)."""
    return SigningKey.generate("rsa-1", "RS256")


@pytest.fixture(scope="session")
def ec_key() -> SigningKey:
    """A second key of the identity provider, of another algorithm (ES256)."""
    return SigningKey.generate("ec-1", "ES256")


@pytest.fixture
def jwks_file(tmp_path: Path, signing_key: SigningKey, ec_key: SigningKey) -> Path:
    """A JWKS file with both keys, for a server that verifies with NEXTCAMPUS_JWT_JWKS_FILE."""
    import json

    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks_of(signing_key, ec_key)))
    return path


@pytest.fixture
def jwks_server(signing_key: SigningKey) -> Iterator[JwksServer]:
    """A JWKS URL serving `signing_key`; a test may change `jwks_server.jwks`."""
    server = JwksServer(jwks_of(signing_key))
    yield server
    server.close()


# -- an emulated Kubernetes API ------------------------------------------------------------

KUBE_NAMESPACE = "courses"
POLICY_RESOURCE = "chat.nextcampus.io/v1alpha1/coursechatpolicies"


def _api_server_class() -> Any:
    """kmock's KubernetesEmulator plus the API server's bookkeeping the operator relies on:
    uid, resourceVersion, creation time and generation 1 on create, `generateName` (kopf
    names its Events that way), a new resourceVersion on every write (kopf tells its own
    writes apart by it) and a generation bump on every spec change."""
    import datetime
    import itertools

    import kmock

    serials = itertools.count(100)

    def now() -> str:
        return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    class ApiServer(kmock.KubernetesEmulator):
        async def _handle(self, request: kmock.Request) -> Any:
            data = request.data if isinstance(request.data, dict) else None
            if data is not None and request.action == kmock.action.CREATE:
                meta = data.setdefault("metadata", {})
                serial = next(serials)
                if not meta.get("name") and meta.get("generateName"):
                    meta["name"] = f"{meta['generateName']}{serial}"
                meta.setdefault("uid", f"uid-{serial}")
                meta.setdefault("generation", 1)
                meta["resourceVersion"] = str(serial)
                meta.setdefault("creationTimestamp", now())
            elif data is not None and request.action == kmock.action.UPDATE:
                meta = data.setdefault("metadata", {})
                meta["resourceVersion"] = str(next(serials))
                key: Any = (request.resource, request.namespace, request.name)
                if request.subresource is None and "spec" in data and key in self.objects:
                    stored = self.objects[key]
                    meta["generation"] = stored.get("metadata", {}).get("generation", 0) + 1
            return await super()._handle(request)

    return ApiServer


def _register_policies(api: Any) -> None:
    """The core API, the CourseChatPolicy resource (from the CRD file itself) and the
    namespace `courses`, as a cluster with the chart installed serves them."""
    import kmock

    from nextcampus_policy.crd import crd as read_crd

    api.resources.load_bundled()
    crd = read_crd()
    names = crd["spec"]["names"]
    (version,) = crd["spec"]["versions"]
    api.resources[POLICY_RESOURCE] = kmock.ResourceInfo(
        kind=names["kind"],
        singular=names["singular"],
        namespaced=crd["spec"]["scope"] == "Namespaced",
        shortnames=set(names["shortNames"]),
        subresources=set(version["subresources"]),
        verbs={"get", "list", "watch", "create", "update", "patch", "delete"},
    )
    for namespace in (KUBE_NAMESPACE, "default"):
        api.objects["v1/namespaces", None, namespace] = {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": namespace, "uid": f"namespace-uid-{namespace}"},
        }


def kubeconfig_for(server: str) -> str:
    import yaml

    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "kmock",
            "clusters": [{"name": "kmock", "cluster": {"server": server}}],
            "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "kmock"}}],
            "users": [{"name": "kmock", "user": {}}],
        }
    )


@contextlib.asynccontextmanager
async def emulated_api(host: str = "127.0.0.1") -> AsyncIterator[Any]:
    """kmock serving the policies' API on `host` (a free port) until the block ends."""
    import kmock

    async with _api_server_class()() as api, kmock.Server(api, host=host):
        _register_policies(api)
        yield api


class ApiInThread:
    """The emulated API on an event loop of its own thread: for a fixture that outlives the
    tests' loops (a whole topology's operator talks to it), and for their calls into it."""

    def __init__(self, host: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self._context = emulated_api(host)
        self.api = self.call(self._context.__aenter__())

    def call(self, coroutine: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.call(self._context.__aexit__(None, None, None))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


@pytest.fixture
async def kube(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Any]:
    """kmock — an emulated Kubernetes API, since no API server runs here — serving the core
    API, the CourseChatPolicy resource (registered from the CRD file itself) and the
    namespace `courses`; KUBECONFIG points at it, as a kubeconfig would at a cluster."""
    async with emulated_api() as api:
        config = tmp_path / "kubeconfig"
        config.write_text(kubeconfig_for(str(api.url)))
        monkeypatch.setenv("KUBECONFIG", str(config))
        yield api
