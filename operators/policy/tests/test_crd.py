"""The CourseChatPolicy CRD: a valid, conventional Kubernetes object (kubernetes-validate
--strict); every example under examples/policies passes its schema and a set of invalid
policies does not (jsonschema over the CRD's own openAPIV3Schema, unknown fields refused as
the API server's strict field validation refuses them); the operator's own checks agree
with the schema at every bound; and the status the operator writes fits the schema."""

from __future__ import annotations

import copy
import datetime
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import celpy
import jsonschema
import kubernetes_validate
import pytest
import yaml

from devstack.paths import chart
from devstack.policies import load
from nextcampus_policy.crd import crd, problems
from nextcampus_policy.exports import ExportResult
from nextcampus_policy.reconcile import Outcome, status_for
from nextcampus_policy.spec import API_VERSION, GROUP, KIND, PLURAL, InvalidSpec, Reason, parse_spec

CRD_FILE = chart() / "files" / "crds" / "coursechatpolicies.chat.nextcampus.io.yaml"
EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "policies"


def version() -> dict[str, Any]:
    (only,) = crd()["spec"]["versions"]
    served: dict[str, Any] = only
    return served


def policy(spec: dict[str, Any] | None, **extra: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": "p1", "namespace": "courses"},
        **extra,
    }
    if spec is not None:
        document["spec"] = spec
    return document


def test_the_crd_is_a_valid_kubernetes_object() -> None:
    kubernetes_validate.validate(crd(), kubernetes_validate.latest_version(), strict=True)


def test_the_crd_follows_the_api_conventions() -> None:
    definition = crd()
    assert definition["metadata"]["name"] == f"{PLURAL}.{GROUP}"
    names = definition["spec"]["names"]
    assert (names["kind"], names["plural"], names["shortNames"]) == (KIND, PLURAL, ["ccp"])
    assert definition["spec"]["scope"] == "Namespaced"
    served = version()
    assert served["name"] == API_VERSION.split("/")[1]
    assert served["subresources"] == {"status": {}}
    columns = {c["name"]: c["jsonPath"] for c in served["additionalPrinterColumns"]}
    assert list(columns)[:4] == ["Course", "TTL", "Read-only", "Ready"]
    assert columns["Age"] == ".metadata.creationTimestamp"
    # Structural: nothing keeps unknown fields.
    assert "x-kubernetes-preserve-unknown-fields" not in CRD_FILE.read_text()
    spec = served["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert (
        spec["properties"]["courseId"]["x-kubernetes-validations"][0]["rule"] == "self == oldSelf"
    )
    # Every printer column of spec or status points at a field the schema has.
    schema = served["schema"]["openAPIV3Schema"]
    for path in columns.values():
        top, field = path.strip(".").split(".")[:2]
        if top != "metadata":
            assert field.split("[")[0] in schema["properties"][top]["properties"], path


def examples() -> Iterator[Path]:
    yield from sorted(EXAMPLES.glob("*.yaml"))


@pytest.mark.parametrize("path", list(examples()), ids=lambda p: p.name)
def test_every_example_is_a_valid_policy(path: Path) -> None:
    (document,) = load(path)
    assert problems(document.body) == []
    # The schema as the API server has it (no extra strictness) accepts it too, and so does
    # the operator.
    jsonschema.validate(document.body, version()["schema"]["openAPIV3Schema"])
    parse_spec(document.spec)


def test_there_are_examples() -> None:
    assert len(list(examples())) >= 3


INVALID = {
    "no-spec": (None, "spec"),
    "no-course": ({}, "courseId"),
    "course-with-a-space": ({"courseId": "cs 101"}, "does not match"),
    "course-too-long": ({"courseId": "c" * 65}, "courseId"),
    "ttl-too-short": ({"courseId": "c1", "messageTTLSeconds": 59}, "minimum of 60"),
    "ttl-over-a-year": ({"courseId": "c1", "messageTTLSeconds": 31_536_001}, "maximum"),
    "ttl-as-text": ({"courseId": "c1", "messageTTLSeconds": "1h"}, "not of type 'integer'"),
    "ttl-fractional": ({"courseId": "c1", "messageTTLSeconds": 90.5}, "not of type 'integer'"),
    "length-zero": ({"courseId": "c1", "maxMessageLength": 0}, "minimum of 1"),
    "length-too-long": ({"courseId": "c1", "maxMessageLength": 16_001}, "maximum of 16000"),
    "read-only-text": ({"courseId": "c1", "readOnly": "yes"}, "not of type 'boolean'"),
    "rate-without-window": ({"courseId": "c1", "rateLimit": {"messages": 5}}, "perSeconds"),
    "rate-negative": (
        {"courseId": "c1", "rateLimit": {"messages": -1, "perSeconds": 5}},
        "minimum of 0",
    ),
    "rate-window-zero": (
        {"courseId": "c1", "rateLimit": {"messages": 1, "perSeconds": 0}},
        "minimum of 1",
    ),
    "edit-window-negative": ({"courseId": "c1", "editWindowSeconds": -1}, "minimum of 0"),
    "edit-window-as-text": (
        {"courseId": "c1", "editWindowSeconds": "10m"},
        "not of type 'integer'",
    ),
    "anonymous-unknown-value": (
        {"courseId": "c1", "anonymousPosting": "ToEveryone"},
        "is not one of ['Disabled', 'ToClassmates']",
    ),
    "anonymous-as-boolean": ({"courseId": "c1", "anonymousPosting": True}, "not of type"),
    "export-as-text": (
        {"courseId": "c1", "exportBeforeTTLChange": "yes"},
        "not of type 'boolean'",
    ),
    "unknown-spec-field": ({"courseId": "c1", "ttl": 60}, "'ttl' was unexpected"),
    "unknown-rate-field": (
        {"courseId": "c1", "rateLimit": {"messages": 1, "perSeconds": 1, "burst": 3}},
        "'burst' was unexpected",
    ),
}


@pytest.mark.parametrize("name", list(INVALID))
def test_invalid_policies_are_rejected(name: str) -> None:
    spec, words = INVALID[name]
    found = problems(policy(spec))
    assert found, f"{name} was accepted"
    assert any(words in problem for problem in found), found


def test_other_kinds_and_unknown_top_level_fields_are_rejected() -> None:
    assert problems(policy({"courseId": "c1"}, colour="blue"))
    wrong_kind = {**policy({"courseId": "c1"}), "kind": "CoursePolicy"}
    assert any("not a CourseChatPolicy" in p for p in problems(wrong_kind))
    nameless = policy({"courseId": "c1"})
    nameless["metadata"] = {}
    assert "metadata.name is required" in problems(nameless)


BOUNDS = [
    {"messageTTLSeconds": 60},
    {"messageTTLSeconds": 59},
    {"messageTTLSeconds": 31_536_000},
    {"messageTTLSeconds": 31_536_001},
    {"maxMessageLength": 1},
    {"maxMessageLength": 0},
    {"maxMessageLength": 16_000},
    {"maxMessageLength": 16_001},
    {"rateLimit": {"messages": 0, "perSeconds": 1}},
    {"rateLimit": {"messages": 100_000, "perSeconds": 86_400}},
    {"rateLimit": {"messages": 100_001, "perSeconds": 1}},
    {"rateLimit": {"messages": 1, "perSeconds": 86_401}},
    {"editWindowSeconds": 0},
    {"editWindowSeconds": -1},
    {"editWindowSeconds": 31_536_000},
    {"editWindowSeconds": 31_536_001},
    {"courseId": "a" * 64},
    {"courseId": "a" * 65},
    {"courseId": "-leading-dash"},
    {"courseId": "x.y_z-1"},
    {"anonymousPosting": "Disabled"},
    {"anonymousPosting": "ToClassmates"},
    {"anonymousPosting": "toclassmates"},
    {"exportBeforeTTLChange": True},
    {"exportBeforeTTLChange": False},
]


@pytest.mark.parametrize("change", BOUNDS, ids=lambda change: repr(change))
def test_the_operator_and_the_schema_agree_at_every_bound(change: dict[str, Any]) -> None:
    spec = {"courseId": "c1", **change}
    schema_accepts = not problems(policy(spec))
    try:
        parse_spec(spec)
        operator_accepts = True
    except InvalidSpec:
        operator_accepts = False
    assert schema_accepts == operator_accepts


@pytest.mark.parametrize("reason", list(Reason))
def test_the_status_the_operator_writes_fits_the_schema(reason: Reason) -> None:
    ready = reason is Reason.APPLIED
    outcome = Outcome(reason, "some words", effective_ttl_seconds=3600 if ready else None)
    status = {k: v for k, v in status_for(outcome, 3, None).items() if v is not None}
    document = policy({"courseId": "c1"}, status=status)
    assert problems(document) == []
    broken = copy.deepcopy(document)
    broken["status"]["conditions"][0]["reason"] = "not camel case"
    assert problems(broken)


def test_a_multi_document_file_is_checked_document_by_document(tmp_path: Path) -> None:
    path = tmp_path / "two.yaml"
    path.write_text(
        yaml.safe_dump_all([policy({"courseId": "c1"}), policy({"courseId": "c2", "readOnly": 1})])
    )
    with pytest.raises(ValueError, match=re.escape("two.yaml#2: spec.readOnly")) as refused:
        load(path)
    assert "#1" not in str(refused.value)


def test_the_course_of_a_policy_cannot_be_changed() -> None:
    """The CRD's CEL rule, evaluated by a CEL implementation the way the API server does on
    an update (`self` the new value, `oldSelf` the stored one)."""
    course = version()["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["courseId"]
    (rule,) = course["x-kubernetes-validations"]
    environment = celpy.Environment()
    program = environment.program(environment.compile(rule["rule"]))

    def allowed(old: str, new: str) -> bool:
        values = {"self": celpy.celtypes.StringType(new), "oldSelf": celpy.celtypes.StringType(old)}
        return bool(program.evaluate(values))

    assert allowed("cs101", "cs101")
    assert not allowed("cs101", "cs102")
    assert "immutable" in rule["message"]


# -- timetable modes (spec.schedule) ------------------------------------------------------

WEEKLY = {
    "mode": "SlowMode",
    "slowModeSeconds": 30,
    "timeZone": "Europe/Berlin",
    "weekly": {"days": ["Mon", "Thu"], "startTime": "09:00", "endTime": "11:00"},
}
DATED = {
    "mode": "ReadOnly",
    "timeZone": "Europe/Berlin",
    "dated": {"start": "2027-02-15T08:00", "end": "2027-02-19T18:00"},
}


def with_window(**change: Any) -> dict[str, Any]:
    window = copy.deepcopy(WEEKLY)
    for key, value in change.items():
        if value is None:
            window.pop(key, None)
        elif isinstance(value, dict) and isinstance(window.get(key), dict):
            window[key] = {**window[key], **value}
        else:
            window[key] = value
    return {"courseId": "c1", "schedule": [window]}


SCHEDULE_INVALID = {
    "unknown-mode": (with_window(mode="Quiet"), "'Quiet' is not one of"),
    "slow-zero": (with_window(slowModeSeconds=0), "minimum of 1"),
    "slow-over-a-day": (with_window(slowModeSeconds=86_401), "maximum of 86400"),
    "no-zone": (with_window(timeZone=None), "'timeZone' is a required property"),
    "zone-with-space": (with_window(timeZone="Europe/Bad Zone"), "does not match"),
    "no-days": (with_window(weekly={"days": []}), "should be non-empty"),
    "unknown-day": (with_window(weekly={"days": ["Monday"]}), "'Monday' is not one of"),
    "hour-25": (with_window(weekly={"startTime": "25:00"}), "does not match"),
    "seconds-in-time": (with_window(weekly={"endTime": "11:00:00"}), "endTime"),
    "dated-with-offset": (
        {
            "courseId": "c1",
            "schedule": [
                {**DATED, "dated": {"start": "2027-02-15T08:00+01:00", "end": "2027-02-16T08:00"}}
            ],
        },
        "start",
    ),
    "too-many-windows": ({"courseId": "c1", "schedule": [DATED] * 33}, "is too long"),
    "unknown-window-field": (with_window(colour="red"), "'colour' was unexpected"),
}


@pytest.mark.parametrize("name", list(SCHEDULE_INVALID))
def test_invalid_schedules_are_rejected_by_the_schema_and_the_operator(name: str) -> None:
    spec, words = SCHEDULE_INVALID[name]
    found = problems(policy(spec))
    assert any(words in problem for problem in found), found
    with pytest.raises(InvalidSpec, match="schedule"):
        parse_spec(spec)


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        (with_window(dated=DATED["dated"]), "either weekly or dated"),
        (with_window(weekly=None), "either weekly or dated"),
        (with_window(slowModeSeconds=None), "slowModeSeconds is required with mode SlowMode"),
        ({"courseId": "c1", "schedule": [{**DATED, "slowModeSeconds": 5}]}, "slowModeSeconds"),
        (with_window(weekly={"startTime": "11:00", "endTime": "09:00"}), "endTime must be after"),
        (
            {
                "courseId": "c1",
                "schedule": [
                    {**DATED, "dated": {"start": "2027-02-15T08:00", "end": "2027-02-15T08:00"}}
                ],
            },
            "end must be after start",
        ),
        (with_window(timeZone="Mars/Olympus_Mons"), "not an IANA time zone"),
        (
            {
                "courseId": "c1",
                "schedule": [
                    {**DATED, "dated": {"start": "2027-02-30T08:00", "end": "2027-03-02T08:00"}}
                ],
            },
            "not a date and time of the calendar",
        ),
        (with_window(weekly={"days": ["Mon", "Mon"]}), "must not repeat"),
    ],
)
def test_the_operator_refuses_what_only_cel_or_the_calendar_can_see(
    spec: dict[str, Any], words: str
) -> None:
    """Cross-field rules are CEL in the CRD (jsonschema does not run CEL; the rules are
    evaluated below) and the operator's own checks; calendar and time-zone facts only the
    operator knows. Either way the policy is refused with words that say what to fix."""
    with pytest.raises(InvalidSpec, match=re.escape(words)):
        parse_spec(spec)


def cel_rules(*path: str) -> list[dict[str, str]]:
    node = version()["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["schedule"]
    node = node["items"]
    for part in path:
        node = node["properties"][part]
    rules: list[dict[str, str]] = node["x-kubernetes-validations"]
    return rules


def cel_accepts(rule: str, value: dict[str, Any]) -> bool:
    environment = celpy.Environment()
    program = environment.program(environment.compile(rule))
    return bool(program.evaluate({"self": celpy.json_to_cel(value)}))


def test_the_schedules_cel_rules_agree_with_the_operator() -> None:
    one_form, slow_seconds = (rule["rule"] for rule in cel_rules())
    cases = [
        WEEKLY,
        DATED,
        {**WEEKLY, "dated": DATED["dated"]},
        {k: v for k, v in WEEKLY.items() if k != "weekly"},
        {k: v for k, v in WEEKLY.items() if k != "slowModeSeconds"},
        {**DATED, "slowModeSeconds": 5},
    ]
    for window in cases:
        schema_accepts = cel_accepts(one_form, window) and cel_accepts(slow_seconds, window)
        try:
            parse_spec({"courseId": "c1", "schedule": [window]})
            operator_accepts = True
        except InvalidSpec:
            operator_accepts = False
        assert schema_accepts == operator_accepts, window
    (weekly_order,) = cel_rules("weekly")
    assert cel_accepts(weekly_order["rule"], {"startTime": "09:00", "endTime": "24:00"})
    assert not cel_accepts(weekly_order["rule"], {"startTime": "09:00", "endTime": "09:00"})
    (dated_order,) = cel_rules("dated")
    assert cel_accepts(
        dated_order["rule"], {"start": "2027-02-15T08:00", "end": "2027-02-15T08:01"}
    )
    assert not cel_accepts(
        dated_order["rule"], {"start": "2027-02-16T08:00", "end": "2027-02-15T09:00"}
    )


SCHEDULE_BOUNDS = [
    with_window(slowModeSeconds=1),
    with_window(slowModeSeconds=86_400),
    with_window(weekly={"startTime": "00:00", "endTime": "24:00"}),
    with_window(weekly={"startTime": "23:59", "endTime": "24:00"}),
    with_window(weekly={"days": ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]}),
    with_window(timeZone="UTC"),
    with_window(timeZone="America/Argentina/Buenos_Aires"),
    with_window(timeZone="Etc/GMT+5"),
    {"courseId": "c1", "schedule": [DATED] * 32},
]


@pytest.mark.parametrize("spec", SCHEDULE_BOUNDS, ids=lambda spec: repr(spec)[:80])
def test_the_operator_and_the_schema_accept_the_schedules_bounds(spec: dict[str, Any]) -> None:
    assert problems(policy(spec)) == []
    parse_spec(spec)


def test_the_status_with_a_mode_fits_the_schema() -> None:
    from nextcampus_common.schedule import Current, Mode

    outcome = Outcome(
        Reason.APPLIED,
        "applied",
        effective_ttl_seconds=3600,
        mode=Current(Mode.SLOW_MODE, 30, 1_800_000_000_000),
        next_mode=Current(Mode.OPEN, 0, None),
    )
    status = status_for(outcome, 3, None)
    assert (status["mode"], status["nextMode"], status["nextModeChange"]) == (
        "SlowMode",
        "Open",
        "2027-01-15T08:00:00Z",
    )
    assert problems(policy({"courseId": "c1"}, status=status)) == []


@pytest.mark.parametrize(
    "export",
    [
        ExportResult(
            "c1", datetime.datetime(2026, 12, 2, 9, 30, tzinfo=datetime.UTC), None, 0, "no"
        ),
        ExportResult(
            "c1",
            datetime.datetime(2026, 12, 2, 9, 30, tzinfo=datetime.UTC),
            Path("/exports/c1-20261202T093000.000000Z.ndjson"),
            42,
        ),
    ],
    ids=["refused", "exported"],
)
def test_the_status_with_an_export_fits_the_schema(export: ExportResult) -> None:
    outcome = Outcome(Reason.APPLIED, "applied", effective_ttl_seconds=3600, export=export)
    status = {k: v for k, v in status_for(outcome, 3, None).items() if v is not None}
    assert status["lastExport"]["result"] == ("Refused" if export.refused else "Exported")
    assert status["lastExport"]["time"] == "2026-12-02T09:30:00Z"
    assert problems(policy({"courseId": "c1", "exportBeforeTTLChange": True}, status=status)) == []
