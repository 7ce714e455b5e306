"""Making Redis match a CourseChatPolicy, and what to tell Kubernetes about it.

The kopf handlers (handlers.py) and `chatctl policy apply` both call `PolicyReconciler`;
it knows nothing of kopf. `reconcile` applies one policy (unless its namespace may not
govern that course, `CourseGovernance`, or an older policy governs it), re-times the
course's messages when its TTL changed, and repairs drift (Redis restarted without data,
keys edited by hand) when called again. `release` undoes a deleted policy: the
next-oldest policy of the course takes over, or the defaults return. The results are
`Outcome`s, which `status_for` and `event_for` turn into the resource's status and its
Events.
"""

from __future__ import annotations

import asyncio
import collections
import datetime
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from nextcampus_common import schedule as timetable
from nextcampus_common.keys import POLICY_RETIME_PENDING_FIELD
from nextcampus_common.logs import get_logger
from nextcampus_common.settings import PolicyDefaultSettings
from nextcampus_policy.exports import ExportDirectory, ExportResult
from nextcampus_policy.metrics import OperatorMetrics
from nextcampus_policy.spec import (
    CourseGovernance,
    InvalidSpec,
    PolicyRef,
    PolicySpec,
    Reason,
    governing,
    parse_spec,
)
from nextcampus_policy.store import PolicyStore, RedisUnavailable, Retimed, Written

log = get_logger(__name__)


class Trigger(StrEnum):
    CHANGE = "change"  # created, updated, or seen again after an operator restart
    RESYNC = "resync"  # the periodic re-check: a change in Redis here is drift


@dataclass(frozen=True, slots=True)
class Outcome:
    reason: Reason
    message: str
    effective_ttl_seconds: int | None = None  # None: not in force (conflict, invalid, …)
    changed: bool = False  # Redis was written
    retimed: Retimed | None = None
    # The schedule's mode now and the next one (None: no schedule applied, or no change
    # within the segments' reach).
    mode: timetable.Current | None = None
    next_mode: timetable.Current | None = None
    # The export made (or refused) before this change shortened the TTL (None: none due).
    export: ExportResult | None = None

    @property
    def ready(self) -> bool:
        return self.reason is Reason.APPLIED


class PolicyReconciler:
    def __init__(
        self,
        store: PolicyStore,
        defaults: PolicyDefaultSettings,
        metrics: OperatorMetrics | None = None,
        governance: CourseGovernance | None = None,
        clock: Callable[[], datetime.datetime] | None = None,
        exports: ExportDirectory | None = None,
    ) -> None:
        self.store = store
        # Where exports before a shortening TTL change go (none configured: refused).
        self.exports = exports or ExportDirectory(None)
        # The time the schedule's segments and the status's mode are computed for (tests
        # pass a clock of their own).
        self.clock = clock or (lambda: datetime.datetime.now(datetime.UTC))
        self.defaults = defaults
        self.metrics = metrics
        self.governance = governance or CourseGovernance()
        # One course at a time: a timer tick and an update of the same course never
        # interleave their writes and re-timings.
        self._locks: collections.defaultdict[str, asyncio.Lock] = collections.defaultdict(
            asyncio.Lock
        )

    async def reconcile(
        self,
        policy: PolicyRef,
        spec: Mapping[str, Any],
        contenders: Sequence[PolicyRef] = (),
        *,
        trigger: Trigger = Trigger.CHANGE,
    ) -> Outcome:
        """Apply `policy` (with `spec`) if its namespace may govern its course and it governs
        the course among `contenders` (every policy naming the course, itself included)."""
        started = time.monotonic()
        outcome = await self._reconcile(policy, spec, contenders, trigger)
        self._count(outcome, started, trigger)
        return outcome

    async def _reconcile(
        self,
        policy: PolicyRef,
        spec: Mapping[str, Any],
        contenders: Sequence[PolicyRef],
        trigger: Trigger,
    ) -> Outcome:
        try:
            parsed = parse_spec(spec)
        except InvalidSpec as exc:
            return Outcome(Reason.INVALID_SPEC, str(exc))
        refusal = self.governance.refusal(policy)
        if refusal is not None:
            return Outcome(Reason.NOT_PERMITTED, refusal)
        winner = governing(self.governance.eligible([policy, *contenders]))
        if winner is not None and winner != policy:
            return Outcome(
                Reason.CONFLICT,
                f"course {parsed.course_id} is governed by the older policy {winner.owner}; "
                "this one takes effect once that one is deleted",
            )
        try:
            return await self._apply(policy.owner, parsed, trigger)
        except RedisUnavailable as exc:
            return Outcome(Reason.REDIS_UNAVAILABLE, f"could not apply the policy: {exc}")

    async def _apply(self, owner: str, spec: PolicySpec, trigger: Trigger) -> Outcome:
        ttl = spec.ttl_seconds(self.defaults)
        now = self.clock()
        fields = spec.policy_fields(owner, now)
        async with self._locks[spec.course_id]:
            # The segments move on every UTC day: a re-write of them alone is no drift.
            refreshed = False
            if trigger is Trigger.RESYNC and spec.schedule:
                before = await self.store.read(spec.course_id)
                refreshed = _without_segments(before) == _without_segments(fields)
            exported = None
            if spec.export_before_ttl_change:
                exported = await self._export_before_shortening(spec.course_id, ttl, now)
            written = await self.store.write(spec.course_id, fields)
            retimed = await self._retime_if_pending(spec.course_id, written, ttl)
        message = spec.describe(self.defaults)
        mode, next_mode = _modes(spec, fields, now)
        if trigger is Trigger.RESYNC and written.changed and not refreshed:
            message += "; Redis had drifted from the policy and was repaired"
            if self.metrics is not None:
                self.metrics.drift_repairs.inc()
        return Outcome(
            Reason.APPLIED,
            message + _exported_note(exported) + _retimed_note(retimed),
            effective_ttl_seconds=ttl,
            changed=written.changed,
            retimed=retimed,
            mode=mode,
            next_mode=next_mode,
            export=exported,
        )

    async def _export_before_shortening(
        self, course_id: str, ttl_seconds: int, now: datetime.datetime
    ) -> ExportResult | None:
        """Export the course when `ttl_seconds` is shorter than the TTL it has now and it has
        history. A refused export is logged and reported, and the TTL is applied all the same:
        the policy's author asked for it (README, "Exporting a course")."""
        current = await self.store.read(course_id)
        try:
            before = int(current["ttl_seconds"])
        except (KeyError, ValueError):
            before = self.defaults.default_ttl_seconds
        if ttl_seconds >= before or not await self.store.has_history(course_id):
            return None
        lines = self.store.export_lines(course_id, self.defaults)
        result = await self.exports.write(course_id, lines, now)
        if result.refused:
            log.warning(
                "export before a TTL change refused; applying the TTL anyway",
                course_id=course_id,
                ttl_seconds=ttl_seconds,
                previous_ttl_seconds=before,
                reason=result.refusal,
            )
        else:
            log.info(
                "course exported before a TTL change",
                course_id=course_id,
                path=str(result.path),
                messages=result.messages,
            )
        if self.metrics is not None:
            self.metrics.course_exports.labels("refused" if result.refused else "exported").inc()
        return result

    async def release(
        self,
        policy: PolicyRef,
        contenders: Sequence[PolicyRef] = (),
        specs: Mapping[PolicyRef, Mapping[str, Any]] | None = None,
    ) -> Outcome:
        """`policy` is being deleted: hand its course to the next-oldest policy among
        `contenders` at once (when `specs` holds its spec; otherwise its own next re-check
        does), or restore the defaults. A policy that did not govern its course (an older
        one did, or its namespace may not govern it) leaves Redis alone."""
        started = time.monotonic()
        outcome = await self._release(policy, contenders, specs or {})
        self._count(outcome, started, Trigger.CHANGE, released=True)
        return outcome

    async def _release(
        self,
        policy: PolicyRef,
        contenders: Sequence[PolicyRef],
        specs: Mapping[PolicyRef, Mapping[str, Any]],
    ) -> Outcome:
        others = self.governance.eligible(other for other in contenders if other != policy)
        if governing(self.governance.eligible([policy, *others])) != policy:
            return Outcome(Reason.APPLIED, "did not govern its course; nothing to undo")
        successor = governing(others)
        if successor is not None:
            if successor not in specs:
                return Outcome(
                    Reason.APPLIED,
                    f"course {policy.course_id} passes to {successor.owner} at its next re-check",
                )
            outcome = await self._reconcile(successor, specs[successor], others, Trigger.CHANGE)
            if outcome.ready:
                return Outcome(
                    Reason.APPLIED,
                    f"course {policy.course_id} handed over to {successor.owner}: "
                    + outcome.message,
                    effective_ttl_seconds=outcome.effective_ttl_seconds,
                    changed=outcome.changed,
                    retimed=outcome.retimed,
                    mode=outcome.mode,
                    next_mode=outcome.next_mode,
                    export=outcome.export,
                )
            return outcome
        try:
            async with self._locks[policy.course_id]:
                written = await self.store.write(policy.course_id, {})
                ttl = self.defaults.default_ttl_seconds
                retimed = await self._retime_if_pending(policy.course_id, written, ttl)
        except RedisUnavailable as exc:
            return Outcome(Reason.REDIS_UNAVAILABLE, f"could not restore the defaults: {exc}")
        return Outcome(
            Reason.APPLIED,
            f"course {policy.course_id} is back on the defaults (TTL {ttl} s)"
            + _retimed_note(retimed),
            effective_ttl_seconds=ttl,
            changed=written.changed,
            retimed=retimed,
        )

    async def _retime_if_pending(
        self, course_id: str, written: Written, ttl_seconds: int
    ) -> Retimed | None:
        if not written.retime_pending:
            return None
        retimed = await self.store.retime(course_id, ttl_seconds)
        if self.metrics is not None:
            self.metrics.messages_retimed.inc(retimed.retimed)
            self.metrics.messages_removed.inc(retimed.removed)
        return retimed

    def _count(
        self, outcome: Outcome, started: float, trigger: Trigger, *, released: bool = False
    ) -> None:
        if self.metrics is None:
            return
        if outcome.ready:
            result = "released" if released else ("applied" if outcome.changed else "unchanged")
        else:
            result = _snake(outcome.reason)
        self.metrics.reconciles.labels(result=result, trigger=trigger.value).inc()
        self.metrics.reconcile_duration.observe(time.monotonic() - started)


def _without_segments(fields: Mapping[str, str]) -> dict[str, str]:
    return {
        key: value
        for key, value in fields.items()
        if key not in ("schedule_segments", POLICY_RETIME_PENDING_FIELD)
    }


def _modes(
    spec: PolicySpec, fields: Mapping[str, str], now: datetime.datetime
) -> tuple[timetable.Current, timetable.Current | None]:
    """The course's mode now and the next change, as the send script will see them."""
    if spec.read_only:
        return timetable.Current(timetable.Mode.READ_ONLY, 0, None), None
    found = timetable.decode(fields.get("schedule_segments"))
    return timetable.next_change(found, round(now.timestamp() * 1000))


def _snake(reason: Reason) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in reason.value).lstrip("_")


def _retimed_note(retimed: Retimed | None) -> str:
    if retimed is None or not (retimed.retimed or retimed.removed):
        return ""
    note = f"; {_count_of(retimed.retimed, 'message')} re-timed"
    if retimed.removed:
        note += f", {retimed.removed} past the new TTL removed"
    return note


def _exported_note(exported: ExportResult | None) -> str:
    if exported is None:
        return ""
    if exported.refused:
        return f"; the export before shortening the TTL was refused ({exported.refusal})"
    return (
        f"; exported {_count_of(exported.messages, 'message')} to {exported.path} before "
        "shortening the TTL"
    )


def _count_of(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


# -- what Kubernetes is told -----------------------------------------------------------------


def status_for(
    outcome: Outcome,
    generation: int | None,
    previous: Mapping[str, Any] | None,
    now: datetime.datetime | None = None,
) -> dict[str, Any]:
    """The resource's new status: `observedGeneration`, `effectiveTTLSeconds` and the
    Ready condition, whose `lastTransitionTime` moves only when its status does."""
    now = now or datetime.datetime.now(datetime.UTC)
    status = "True" if outcome.ready else "False"
    before = _ready_condition(previous)
    transitioned = before is None or before.get("status") != status
    condition = {
        "type": "Ready",
        "status": status,
        "reason": outcome.reason.value,
        "message": outcome.message,
        "lastTransitionTime": (
            now.strftime("%Y-%m-%dT%H:%M:%SZ") if transitioned else before.get("lastTransitionTime")  # type: ignore[union-attr]
        ),
    }
    if generation is not None:
        condition["observedGeneration"] = generation
    new: dict[str, Any] = {
        "conditions": [condition],
        "effectiveTTLSeconds": None,
        "mode": None,
        "nextMode": None,
        "nextModeChange": None,
    }
    if generation is not None:
        new["observedGeneration"] = generation
    if outcome.effective_ttl_seconds is not None:
        new["effectiveTTLSeconds"] = outcome.effective_ttl_seconds
    if outcome.mode is not None:
        new["mode"] = outcome.mode.mode.value
    if outcome.next_mode is not None and outcome.mode is not None:
        new["nextMode"] = outcome.next_mode.mode.value
        new["nextModeChange"] = _rfc3339(outcome.mode.until_ms)
    if outcome.export is not None:  # otherwise the last one stays in the status
        new["lastExport"] = _last_export(outcome.export)
    return new


def _last_export(export: ExportResult) -> dict[str, Any]:
    """The status's record of the export made (or refused) before a TTL change."""
    at = export.at.strftime("%Y-%m-%dT%H:%M:%SZ")
    if export.refused:
        return {"result": "Refused", "time": at, "reason": export.refusal}
    return {"result": "Exported", "time": at, "file": str(export.path), "messages": export.messages}


def _rfc3339(milliseconds: int | None) -> str | None:
    if milliseconds is None:
        return None
    moment = datetime.datetime.fromtimestamp(milliseconds / 1000, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _ready_condition(status: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    for condition in (status or {}).get("conditions") or []:
        if isinstance(condition, Mapping) and condition.get("type") == "Ready":
            return condition
    return None


@dataclass(frozen=True, slots=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


def event_for(outcome: Outcome, previous: Mapping[str, Any] | None) -> Event | None:
    """An Event for each new outcome: a change in Redis, or a reason other than the one the
    status already shows (a re-check that found everything as it was says nothing)."""
    before = _ready_condition(previous)
    unchanged = before is not None and before.get("reason") == outcome.reason.value
    if unchanged and not outcome.changed:
        return None
    kind = "Normal" if outcome.ready else "Warning"
    return Event(kind, outcome.reason.value, outcome.message)


def export_event_for(outcome: Outcome) -> Event | None:
    """An Event for an export made (Normal) or refused (Warning) before a TTL change."""
    export = outcome.export
    if export is None:
        return None
    if export.refused:
        return Event(
            "Warning",
            "ExportRefused",
            f"course {export.course_id} was not exported before its TTL was shortened: "
            f"{export.refusal}; the TTL was applied",
        )
    return Event(
        "Normal",
        "CourseExported",
        f"course {export.course_id}: {_count_of(export.messages, 'message')} exported to "
        f"{export.path} before its TTL was shortened",
    )
