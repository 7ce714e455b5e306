"""A CourseChatPolicy on the local stack, as its users meet it: `chatctl policy apply -f`
(the real CLI, the operator's reconcile code) changes the course, and everything sent
through the gateway follows: the new TTL (on new and on existing messages, read with
PTTL), the maximum length, read-only; `chatctl policy delete -f` brings the defaults back.

Local topology only: chatctl writes the stack's Redis directly (on a cluster the operator
does it, from `kubectl apply`)."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import redis
import yaml

from devstack.topology import Topology
from e2e.clients import COURSE_POLICY, HISTORY, GraphqlHttp
from nextcampus_common.keys import CourseKeys

if TYPE_CHECKING:
    from e2e.conftest import Gateway

SEND = """mutation($c: ID!, $text: String!) {
  sendMessage(courseId: $c, content: $text) { messageId }
}"""
DAY = 86_400


def chatctl_policy(action: str, path: Path, topology: Topology) -> subprocess.CompletedProcess[str]:
    assert topology.redis is not None
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "chatctl",
            "policy",
            action,
            "-f",
            str(path),
            "--redis",
            topology.redis.nodes_csv,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def write_policy(path: Path, course_id: str, **spec: Any) -> Path:
    document = {
        "apiVersion": "chat.nextcampus.io/v1alpha1",
        "kind": "CourseChatPolicy",
        "metadata": {"name": f"policy-{course_id}", "namespace": "courses"},
        "spec": {"courseId": course_id, **spec},
    }
    path.write_text(yaml.safe_dump(document))
    return path


@pytest.fixture
def redis_client(gateway: Gateway) -> Any:
    topology = gateway.local()
    assert topology.redis is not None
    client = redis.RedisCluster(
        host="127.0.0.1", port=topology.redis.ports[0], decode_responses=True
    )
    yield client
    client.close()


async def test_a_policy_applied_with_chatctl_changes_what_the_gateway_accepts(
    gateway: Gateway, redis_client: Any, tmp_path: Path
) -> None:
    topology = gateway.local()
    course_id = f"policy-{uuid.uuid4().hex[:8]}"
    keys = CourseKeys(course_id)
    token = gateway.token(f"student-{uuid.uuid4().hex[:6]}", [course_id])

    async with GraphqlHttp(gateway.graphql_url) as http:

        async def send(text: str) -> Any:
            return await http.execute(SEND, {"c": course_id, "text": text}, token=token)

        async def effective() -> dict[str, Any]:
            response = await http.execute(COURSE_POLICY, {"c": course_id}, token=token)
            assert response.data is not None, response.describe()
            policy: dict[str, Any] = response.data["coursePolicy"]
            return policy

        before = await send("sent before the policy")
        assert before.data is not None, before.describe()
        before_id = before.data["sendMessage"]["messageId"]
        assert redis_client.pttl(keys.message(before_id)) > (DAY - 60) * 1000

        # Ten minutes, ten characters.
        path = write_policy(
            tmp_path / "policy.yaml", course_id, messageTTLSeconds=600, maxMessageLength=10
        )
        applied = chatctl_policy("apply", path, topology)
        assert applied.returncode == 0, applied.stderr
        assert f"course {course_id}: Ready, PolicyApplied" in applied.stdout
        assert "effectiveTTLSeconds: 600" in applied.stdout
        assert "1 message re-timed" in applied.stdout
        assert 0 < redis_client.pttl(keys.message(before_id)) <= 600_000
        assert await effective() == {"ttlSeconds": 600, "maxLength": 10, "readOnly": False}

        too_long = await send("eleven char")
        assert too_long.codes == {"BAD_USER_INPUT"}, too_long.describe()
        assert "10" in too_long.errors[0]["message"]
        short = await send("ten chars!")
        assert short.data is not None, short.describe()
        short_id = short.data["sendMessage"]["messageId"]
        assert 0 < redis_client.pttl(keys.message(short_id)) <= 600_000

        # Archived: nothing new, history still there.
        write_policy(path, course_id, messageTTLSeconds=600, readOnly=True)
        archived = chatctl_policy("apply", path, topology)
        assert archived.returncode == 0, archived.stderr
        refused = await send("after the archive")
        assert refused.codes == {"READ_ONLY"}, refused.describe()
        history = await http.execute(HISTORY, {"c": course_id}, token=token)
        assert history.data is not None, history.describe()
        assert [m["messageId"] for m in history.data["messages"]["messages"]] == [
            before_id,
            short_id,
        ]

        # Deleted: the defaults again, for old messages too.
        deleted = chatctl_policy("delete", path, topology)
        assert deleted.returncode == 0, deleted.stderr
        assert f"effectiveTTLSeconds: {DAY}" in deleted.stdout
        assert await effective() == {"ttlSeconds": DAY, "maxLength": 4000, "readOnly": False}
        assert redis_client.pttl(keys.message(before_id)) > (DAY - 60) * 1000
        again = await send("open again, and longer than ten")
        assert again.data is not None, again.describe()


def test_a_bad_policy_file_is_refused_and_changes_nothing(
    gateway: Gateway, redis_client: Any, tmp_path: Path
) -> None:
    topology = gateway.local()
    course_id = f"policy-{uuid.uuid4().hex[:8]}"
    path = write_policy(tmp_path / "bad.yaml", course_id, messageTTLSeconds=5, colour="blue")
    refused = chatctl_policy("apply", path, topology)
    assert refused.returncode == 2
    assert "spec.messageTTLSeconds: 5 is less than the minimum of 60" in refused.stderr
    assert "'colour' was unexpected" in refused.stderr
    assert refused.stdout == ""
    assert redis_client.exists(CourseKeys(course_id).policy) == 0

    missing = chatctl_policy("apply", tmp_path / "nowhere.yaml", topology)
    assert missing.returncode == 2
    assert "nowhere.yaml" in missing.stderr
