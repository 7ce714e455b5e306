"""The kopf side: handlers that translate a CourseChatPolicy event into a call of
`PolicyReconciler` and its `Outcome` into the resource's status and Events. The decisions
are all in reconcile.py.

- an index of every policy by course, so each handler knows who else names its course;
- create / update / resume → reconcile; a timer → the same re-check (drift repair);
- delete (behind the operator's finalizer) → release: the next-oldest policy takes over,
  or the course returns to the defaults;
- Redis away → Ready=False RedisUnavailable and a retry after `retry_seconds`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine, Iterable, Mapping
from typing import Any

import kopf

from nextcampus_policy.metrics import OperatorMetrics
from nextcampus_policy.reconcile import (
    Outcome,
    PolicyReconciler,
    Trigger,
    event_for,
    export_event_for,
    status_for,
)
from nextcampus_policy.settings import PolicyOperatorSettings
from nextcampus_policy.spec import GROUP, PLURAL, VERSION, PolicyRef, Reason

FINALIZER = f"{GROUP}/policy-operator"
RESOURCE = (GROUP, VERSION, PLURAL)

# What the index keeps of each policy: enough to decide who governs a course, and the spec,
# so that a deleted policy's successor is applied at once.
Indexed = tuple[PolicyRef, Mapping[str, Any]]


def build_registry(
    operator_settings: PolicyOperatorSettings,
    reconciler: PolicyReconciler,
    metrics: OperatorMetrics,
) -> kopf.OperatorRegistry:
    """Every handler of the operator, on a registry of its own (nothing global)."""
    registry = kopf.OperatorRegistry()

    @kopf.on.startup(id="configure", registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:  # kopf's own settings
        settings.persistence.finalizer = FINALIZER
        # The status schema is structural (no preserved unknown fields): kopf keeps its
        # bookkeeping in annotations, not in status.
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix=GROUP, key="last-handled-configuration"
        )
        # Our own Events say what happened; kopf's only when a handler fails.
        settings.posting.level = logging.WARNING

    # A registry of our own starts without kopf's default login: in a pod the service
    # account, elsewhere (tests, a developer's machine) the kubeconfig.
    @kopf.on.login(id="login", registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)

    @kopf.on.cleanup(id="disconnect", registry=registry)
    async def disconnect(**_: Any) -> None:
        await reconciler.store.close()

    @kopf.index(*RESOURCE, id="policies_by_course", registry=registry)
    def policies_by_course(
        *,
        namespace: str | None,
        name: str,
        meta: Mapping[str, Any],
        spec: Mapping[str, Any],
        **_: Any,
    ) -> dict[str, Indexed]:
        ref = PolicyRef.of(namespace, name, meta, spec)
        return {ref.course_id: (ref, dict(spec))}

    def reconciling(trigger: Trigger) -> Callable[..., Coroutine[Any, Any, None]]:
        """A handler that reconciles the policy it is called for, as `trigger`."""

        async def handle(
            *,
            body: kopf.Body,
            namespace: str | None,
            name: str,
            meta: kopf.Meta,
            spec: kopf.Spec,
            status: kopf.Status,
            patch: kopf.Patch,
            **kwargs: Any,
        ) -> None:
            ref = PolicyRef.of(namespace, name, meta, spec)
            contenders = [other for other, _ in _named(_index(kwargs), ref.course_id)]
            outcome = await reconciler.reconcile(ref, spec, contenders, trigger=trigger)
            report(outcome, ref, body, meta.get("generation"), status, patch, metrics)
            raise_for(outcome, operator_settings, trigger)

        return handle

    # Handler ids name the handlers in logs and kopf's annotations (not `<locals>` paths).
    apply = reconciling(Trigger.CHANGE)
    kopf.on.create(*RESOURCE, id="apply", registry=registry)(apply)
    kopf.on.update(*RESOURCE, field="spec", id="apply", registry=registry)(apply)

    # Seen again after an operator restart, and every `resync_seconds`: whatever differs in
    # Redis now is drift (Redis restarted without its data, keys edited by hand).
    resync = reconciling(Trigger.RESYNC)
    kopf.on.resume(*RESOURCE, id="resync", registry=registry)(resync)
    kopf.timer(
        *RESOURCE,
        id="resync",
        interval=operator_settings.resync_seconds,
        initial_delay=operator_settings.resync_seconds,
        registry=registry,
    )(resync)

    @kopf.on.delete(*RESOURCE, id="release", registry=registry)
    async def deleted(
        *,
        body: kopf.Body,
        namespace: str | None,
        name: str,
        meta: kopf.Meta,
        spec: kopf.Spec,
        **kwargs: Any,
    ) -> None:
        ref = PolicyRef.of(namespace, name, meta, spec)
        named = list(_named(_index(kwargs), ref.course_id))
        outcome = await reconciler.release(
            ref, [other for other, _ in named], {other: other_spec for other, other_spec in named}
        )
        if outcome.changed or not outcome.ready:
            kopf.event(
                body,
                type="Normal" if outcome.ready else "Warning",
                reason="PolicyReleased" if outcome.ready else outcome.reason.value,
                message=outcome.message,
            )
        raise_for(outcome, operator_settings, Trigger.CHANGE)
        metrics.readiness(ref.owner, None)

    return registry


def _index(kwargs: Mapping[str, Any]) -> kopf.Index[str, Indexed]:
    """The index of every policy by course (kopf passes it by the indexing handler's name)."""
    index: kopf.Index[str, Indexed] = kwargs["policies_by_course"]
    return index


def _named(index: kopf.Index[str, Indexed], course_id: str) -> Iterable[Indexed]:
    return index.get(course_id, [])


def report(
    outcome: Outcome,
    ref: PolicyRef,
    body: kopf.Body,
    generation: int | None,
    status: Mapping[str, Any],
    patch: kopf.Patch,
    metrics: OperatorMetrics,
) -> None:
    """The outcome into the status (only what changed is patched), an Event, the gauge."""
    new = status_for(outcome, generation, status)
    for key, value in new.items():
        if _without_times(status.get(key)) != _without_times(value):
            patch.status[key] = value
    for event in (event_for(outcome, status), export_event_for(outcome)):
        if event is not None:
            kopf.event(body, type=event.type, reason=event.reason, message=event.message)
    metrics.readiness(ref.owner, outcome.reason)


def _without_times(value: Any) -> Any:
    """A status value as compared for "changed": a condition's time alone is no change."""
    if isinstance(value, list):
        return [_without_times(item) for item in value]
    if isinstance(value, Mapping):
        return {k: _without_times(v) for k, v in value.items() if k != "lastTransitionTime"}
    return value


def raise_for(outcome: Outcome, settings: PolicyOperatorSettings, trigger: Trigger) -> None:
    """kopf's retry semantics for an outcome: Redis away is retried after `retry_seconds`;
    a change with an invalid spec is not (it needs a new spec, which is a new change)."""
    if outcome.reason is Reason.REDIS_UNAVAILABLE:
        raise kopf.TemporaryError(outcome.message, delay=settings.retry_seconds)
    if outcome.reason is Reason.INVALID_SPEC and trigger is Trigger.CHANGE:
        raise kopf.PermanentError(outcome.message)
