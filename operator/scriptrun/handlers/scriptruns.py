"""ScriptRun controller: thin Kopf registrations plus the reconcile that ties engine, build and k8s."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Hashable
from datetime import datetime, timedelta
from typing import Any

import kopf
from pydantic import ValidationError

from scriptrun import API_GROUP, API_VERSION
from scriptrun.build import names
from scriptrun.build.patch import as_stored, merge_patch
from scriptrun.build.pod import PodInputs, RunRef, build_pod, build_script_configmap
from scriptrun.engine import clock
from scriptrun.engine.observe import observe_pod, pending_cause
from scriptrun.engine.run import Blocked, Decision, StartAttempt, StopAttempt, decide
from scriptrun.handlers import workflows
from scriptrun.handlers.state import STATE, Key, RunState, store_body
from scriptrun.k8s.api import ApiError
from scriptrun.model.scriptrun import MonitorSpec, RunTemplate, ScriptRunSpec, ScriptRunStatus, ScriptSource

log = logging.getLogger(__name__)
PLURAL = "scriptruns"


def _owner_ref(body: kopf.Body | dict[str, Any]) -> dict[str, Any] | None:
    for ref in body.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("kind") == "ScriptRun" and ref.get("controller"):
            return dict(ref)
    return None


def _owner_run(body: kopf.Body | dict[str, Any]) -> str | None:
    ref = _owner_ref(body)
    return str(ref["name"]) if ref else None


@kopf.index("pods", labels={names.LABEL_MANAGED_BY: names.MANAGED_BY})
async def pods_by_run(body: kopf.Body, namespace: str | None, **_: Any) -> dict[Key, dict[str, Any]] | None:
    """Pods of each ScriptRun, as small snapshots (name, labels, deletion, status)."""
    owner = _owner_run(body)
    if owner is None or namespace is None:
        return None
    meta = body.get("metadata", {})
    return {
        (namespace, owner): {
            "metadata": {
                "name": meta.get("name"),
                "labels": dict(meta.get("labels") or {}),
                "deletionTimestamp": meta.get("deletionTimestamp"),
                # a run deleted and created again under the same name must not adopt its
                # predecessor's pods (garbage collection removes them a little later)
                "ownerUid": (_owner_ref(body) or {}).get("uid"),
            },
            "status": dict(body.get("status") or {}),
        }
    }


@kopf.on.event("pods", labels={names.LABEL_MANAGED_BY: names.MANAGED_BY})
async def pod_event(
    event: kopf.RawEvent, body: kopf.Body, namespace: str | None, name: str | None, **kwargs: Any
) -> None:
    state = STATE.runs
    owner = _owner_run(body)
    if state is None or owner is None or namespace is None:
        return
    state.pods_index = kwargs["pods_by_run"]
    # Only what the run's state machine reads wakes it: phase, reason, deletion. A pod sees several
    # updates (scheduled, conditions, IPs) that change none of these.
    pod_key = (namespace, name or "")
    status = body.get("status") or {}
    signature = (
        status.get("phase"),
        status.get("reason"),
        pending_cause(status)[0],  # why a pod that is not running waits (image, scheduling...)
        bool(body.get("metadata", {}).get("deletionTimestamp")),
    )
    if event.get("type") == "DELETED":
        state.pod_signatures.pop(pod_key, None)
    elif state.pod_signatures.get(pod_key) == signature:
        return
    else:
        state.pod_signatures[pod_key] = signature
    state.loop.kick((namespace, owner))


@kopf.on.event(API_GROUP, API_VERSION, PLURAL)
async def scriptrun_event(
    event: kopf.RawEvent, body: kopf.Body, namespace: str | None, name: str, **kwargs: Any
) -> None:
    state = STATE.runs
    if state is None or namespace is None:
        return
    state.pods_index = kwargs["pods_by_run"]
    key = (namespace, name)
    if event.get("type") == "DELETED":
        state.bodies.pop(key, None)
        state.expected.pop(key, None)
        state.child_phases.pop(key, None)
        state.loop.forget(key)
        if names.LABEL_WORKFLOW in (body.get("metadata", {}).get("labels") or {}):
            workflows.kick_parent(body, namespace, kwargs["children_by_workflow"])
        return
    incoming = dict(body)
    if not store_body(state.bodies, key, incoming):  # an echo of our own patch was reconciled from already
        state.loop.kick(key)
    if names.LABEL_WORKFLOW in (body.get("metadata", {}).get("labels") or {}):
        child_status = incoming.get("status") or {}
        # the parent reads children's phases (and results), and why a pending child waits
        seen = (child_status.get("phase"), workflows.waiting_reason(child_status))
        if state.child_phases.get(key) != seen:
            state.child_phases[key] = seen
            workflows.kick_parent(body, namespace, kwargs["children_by_workflow"])


def _spec(body: dict[str, Any]) -> tuple[RunTemplate, Blocked | None]:
    try:
        return ScriptRunSpec.model_validate(body.get("spec") or {}), None
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        return RunTemplate.model_construct(script=ScriptSource()), Blocked(
            "InvalidSpec", f"spec.{where}: {first['msg']}"
        )


def _status(body: dict[str, Any]) -> ScriptRunStatus:
    try:
        return ScriptRunStatus.model_validate(body.get("status") or {})
    except ValidationError:
        log.warning("ignoring unreadable status of %s", body.get("metadata", {}).get("name"))
        return ScriptRunStatus()


async def _check_inputs(state: RunState, namespace: str, spec: RunTemplate) -> Blocked | None:
    """What only the operator can see: a ConfigMap that is not there, or lacks the key."""
    ref = spec.script.config_map_ref if getattr(spec, "script", None) else None
    if ref is None:
        return None
    cm = await state.kube.get_configmap(namespace, ref.name)
    if cm is None:
        return Blocked("ConfigMapNotFound", f"ConfigMap {ref.name!r} (spec.script.configMapRef) not found")
    if ref.key not in (cm.get("data") or {}):
        return Blocked("ConfigMapKeyNotFound", f"ConfigMap {ref.name!r} has no key {ref.key!r}")
    return None


SERVICE_ACCOUNT_GRACE = timedelta(seconds=60)


def _waits_for_service_account(err: ApiError, created: datetime | None, now: datetime) -> bool:
    """A namespace's `default` ServiceAccount appears a moment after the namespace; until then the
    ServiceAccount admission plugin refuses pods (403). Within a grace period that is not a refusal."""
    young = created is None or now - created < SERVICE_ACCOUNT_GRACE
    return err.status == 403 and "error looking up service account" in err.message and young


class NameTaken(Exception):
    """The deterministic pod name is still held by a predecessor's pod."""


async def _start(state: RunState, body: dict[str, Any], spec: RunTemplate, attempt: int) -> None:
    meta = body["metadata"]
    run = RunRef(meta["name"], meta["namespace"], meta["uid"])
    configmap = build_script_configmap(run, spec)
    labels = meta.get("labels") or {}
    extra = tuple((k, labels[k]) for k in (names.LABEL_WORKFLOW, names.LABEL_TASK, names.LABEL_NODE) if k in labels)
    config = state.config
    pod = build_pod(
        PodInputs(
            run=run,
            spec=spec,
            attempt=attempt,
            default_image=config.default_image,
            monitor_image=config.monitor_image,
            monitor_pull_policy=config.monitor_pull_policy,
            extra_labels=extra,
        )
    )
    # the pod may exist before its ConfigMap (the kubelet waits for it): create both at once
    if configmap is not None:
        created = (await asyncio.gather(state.kube.create_configmap(configmap), state.kube.create_pod(pod)))[1]
    else:
        created = await state.kube.create_pod(pod)
    if not created:
        existing = await state.kube.get_pod(run.namespace, pod["metadata"]["name"])
        owner = (_owner_ref(existing) or {}).get("uid") if existing else run.uid
        if owner != run.uid:  # a deleted predecessor's pod holds the name: remove it, try again soon
            await state.kube.delete_pod(run.namespace, pod["metadata"]["name"], grace_seconds=0)
            raise NameTaken(pod["metadata"]["name"])
    state.expected.setdefault((run.namespace, run.name), set()).add(attempt)
    log.info("%s pod %s for %s/%s", "created" if created else "found", pod["metadata"]["name"], run.namespace, run.name)


async def reconcile(key: Hashable) -> datetime | None:
    """Drive one ScriptRun a step; returns when to look again (None: only on events)."""
    state = STATE.runs
    assert state is not None and isinstance(key, tuple)
    log.debug("run reconcile %s", key)
    body = state.bodies.get(key)
    if body is None or body.get("metadata", {}).get("deletionTimestamp"):
        return None
    namespace, name = key
    meta = body["metadata"]
    now = clock.utcnow()
    spec, blocked = _spec(body)
    status = _status(body)
    monitor = getattr(spec, "monitor", None) or MonitorSpec()
    observed = {}
    mine: list[dict[str, Any]] = []
    stale: list[dict[str, Any]] = []
    for pod in state.pods_of(key):
        (mine if pod["metadata"].get("ownerUid") == meta.get("uid") else stale).append(pod)
    for pod in mine:
        try:
            number = int(pod["metadata"]["labels"].get(names.LABEL_ATTEMPT, ""))
        except ValueError:
            continue
        observed[number] = observe_pod(pod, number, monitor_enabled=monitor.enabled)
    expected = state.expected.setdefault(key, set())
    expected -= set(observed)
    if blocked is None and not status.attempts and not observed and not status.phase.terminal:
        blocked = await _check_inputs(state, namespace, spec)

    def decide_now(blocked: Blocked | None) -> Decision:
        return decide(
            spec,
            status,
            observed,
            now,
            generation=int(meta.get("generation") or 0),
            created=clock.parse(meta.get("creationTimestamp")),
            expected=expected,
            blocked=blocked,
            deadline_grace_seconds=state.config.deadline_grace_seconds,
            attempt_name=lambda n: names.pod_name(name, n),
        )

    decision = decide_now(blocked)
    stale_names = {p["metadata"]["name"] for p in stale}
    for action in decision.actions:
        if isinstance(action, StartAttempt) and names.pod_name(name, action.attempt) in stale_names:
            # a predecessor's pod still holds the name: remove it, start once it is gone
            await state.kube.delete_pod(namespace, names.pod_name(name, action.attempt), grace_seconds=0)
            return now + timedelta(seconds=1)
        if isinstance(action, StartAttempt):
            try:
                await _start(state, body, spec, action.attempt)
            except NameTaken:
                return now + timedelta(seconds=1)
            except ApiError as err:
                if _waits_for_service_account(err, clock.parse(meta.get("creationTimestamp")), now):
                    log.info("%s/%s: %s; trying again", namespace, name, err.message)
                    return now + timedelta(seconds=1)
                decision = decide_now(Blocked("PodRejected", f"the API server refused the pod: {err.message}"))
                break
        elif isinstance(action, StopAttempt):
            await state.kube.delete_pod(namespace, action.name)

    old = as_stored(status.dump(), body.get("status"))
    new = decision.status.dump()
    patch = merge_patch(old, new)
    if patch:
        log.debug("run %s status -> %s", name, decision.status.phase.value)
        updated = await state.kube.patch_status(PLURAL, namespace, name, patch)
        if key in state.bodies:
            store_body(state.bodies, key, updated)
        waiting_changed = workflows.waiting_reason(new) != workflows.waiting_reason(old)
        if names.LABEL_WORKFLOW in (meta.get("labels") or {}) and ("phase" in patch or waiting_changed):
            workflows.child_written(updated)
    for event in decision.events:
        state.kube.event(body, event.type, event.reason, event.message, now)

    final = decision.status
    if final.phase.terminal:
        ttl = getattr(spec, "ttl_seconds_after_finished", None)
        done = clock.parse(final.completion_time)
        if ttl is None or done is None:
            return None
        due = done + timedelta(seconds=ttl)
        if now >= due:
            log.info("TTL: deleting finished ScriptRun %s/%s", namespace, name)
            await state.kube.delete_custom(PLURAL, namespace, name)
            return None
        return due
    return decision.wake_at or now + timedelta(seconds=state.config.resync_seconds)
