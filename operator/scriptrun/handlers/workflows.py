"""Workflow controller: children are ScriptRuns; the engine decides; this module only observes,
creates, stops, patches. Level-triggered: status is recomputed from the children each time."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Hashable
from datetime import datetime, timedelta
from typing import Any

import kopf
from kubernetes_asyncio.client.exceptions import ApiException
from pydantic import ValidationError

from scriptrun import API_GROUP, API_VERSION
from scriptrun.build import names
from scriptrun.build.patch import as_stored, merge_patch
from scriptrun.build.workflow import WorkflowRef, build_child
from scriptrun.engine import clock
from scriptrun.engine.dag import Plan, PlanError, build_plan
from scriptrun.engine.workflow import HEADLINE, ChildObservation, decide_workflow
from scriptrun.handlers.state import STATE, Key, store_body
from scriptrun.k8s.api import ApiError
from scriptrun.model.common import Condition
from scriptrun.model.workflow import WorkflowSpec, WorkflowStatus

log = logging.getLogger(__name__)
PLURAL = "workflows"
CHILD_PLURAL = "scriptruns"
CREATE_CONCURRENCY = 20
_plans: dict[tuple[str, int], Plan | PlanError] = {}


def _owner_ref(body: kopf.Body | dict[str, Any]) -> dict[str, Any] | None:
    for ref in body.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("kind") == "Workflow" and ref.get("controller"):
            return dict(ref)
    return None


def _owner_workflow(body: kopf.Body | dict[str, Any]) -> str | None:
    ref = _owner_ref(body)
    return str(ref["name"]) if ref else None


def waiting_reason(status: dict[str, Any]) -> str | None:
    """Why a live child's pod waits (its `Waiting` condition while True): ErrImagePull, Unschedulable..."""
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Waiting" and cond.get("status") == "True":
            return str(cond.get("reason") or "Waiting")
    return None


def child_snapshot(body: kopf.Body | dict[str, Any]) -> dict[str, Any]:
    """What the Workflow reads of one child ScriptRun (what ChildObservation needs), kept small."""
    meta = body.get("metadata", {})
    status = dict(body.get("status") or {})
    attempts = status.get("attempts") or []
    failed = next(
        (c for c in status.get("conditions") or [] if c.get("type") == "Failed" and c.get("status") == "True"), None
    )
    usage = status.get("usage") or {}
    waiting = None if failed else waiting_reason(status)
    return {
        "node": (meta.get("labels") or {}).get(names.LABEL_NODE),
        "ownerUid": (_owner_ref(body) or {}).get("uid"),
        "uid": meta.get("uid"),
        "resourceVersion": meta.get("resourceVersion"),
        "name": meta.get("name"),
        "phase": status.get("phase") or "Pending",
        "attempts": len(attempts),
        "exitCode": attempts[-1].get("exitCode") if attempts else None,
        "started": status.get("startTime"),
        "finished": status.get("completionTime"),
        "reason": failed.get("reason") if failed else waiting,
        "message": status.get("message") if failed or waiting else None,
        "outputs": status.get("outputs"),
        "outputsError": status.get("outputsError"),
        "usage": {k: usage[k] for k in HEADLINE if k in usage} or None,
        "terminate": bool((body.get("spec") or {}).get("terminate")),
    }


@kopf.index(API_GROUP, API_VERSION, CHILD_PLURAL, labels={names.LABEL_WORKFLOW: kopf.PRESENT})
async def children_by_workflow(body: kopf.Body, namespace: str | None, **_: Any) -> dict[Key, dict[str, Any]] | None:
    """Each workflow's children, as small snapshots."""
    owner = _owner_workflow(body)
    if owner is None or namespace is None:
        return None
    return {(namespace, owner): child_snapshot(body)}


def child_written(body: dict[str, Any]) -> None:
    """The ScriptRun controller just wrote a child's status: wake its workflow now. (The workflow
    reads its children from the index, so it sees the change once the watch has brought it.)"""
    state = STATE.workflows
    owner = _owner_workflow(body)
    namespace = body.get("metadata", {}).get("namespace")
    if state is None or owner is None or namespace is None:
        return
    state.loop.kick((namespace, owner))


@kopf.on.event(API_GROUP, API_VERSION, PLURAL)
async def workflow_event(
    event: kopf.RawEvent, body: kopf.Body, namespace: str | None, name: str, **kwargs: Any
) -> None:
    state = STATE.workflows
    if state is None or namespace is None:
        return
    state.children_index = kwargs["children_by_workflow"]
    key = (namespace, name)
    if event.get("type") == "DELETED":
        state.bodies.pop(key, None)
        state.expected.pop(key, None)
        state.desired.pop(key, None)
        state.written.pop(key, None)
        state.writer.forget(key)
        state.loop.forget(key)
        return
    if not store_body(state.bodies, key, dict(body)):  # an echo of our own patch needs nothing
        state.loop.kick(key)


def kick_parent(body: kopf.Body | dict[str, Any], namespace: str, index: Any) -> None:
    """Called from the ScriptRun event handler: a child changed, look at its workflow again."""
    state = STATE.workflows
    owner = _owner_workflow(body)
    if state is None or owner is None:
        return
    state.children_index = index
    state.loop.kick((namespace, owner))


def _plan(uid: str, generation: int, spec: WorkflowSpec) -> Plan | PlanError:
    key = (uid, generation)
    if key not in _plans:
        if len(_plans) > 1000:
            _plans.clear()
        try:
            _plans[key] = build_plan(spec)
        except PlanError as err:
            _plans[key] = err
    return _plans[key]


def _fail_status(status: WorkflowStatus, reason: str, message: str, now: datetime, gen: int) -> WorkflowStatus:
    new = status.model_copy(deep=True)
    new.phase = "Failed"
    new.message = message[:2000]
    new.observed_generation = gen
    new.finished_at = new.finished_at or clock.fmt(now)
    cond = Condition(
        type="Failed",
        status="True",
        reason=reason,
        message=message[:2000],
        last_transition_time=clock.fmt(now),
        observed_generation=gen,
    )
    new.conditions = [c for c in new.conditions if c.type != "Failed"] + [cond]
    return new


async def reconcile(key: Hashable) -> datetime | None:
    log.debug("workflow reconcile %s", key)
    state = STATE.workflows
    runs = STATE.runs
    assert state is not None and runs is not None and isinstance(key, tuple)
    body = state.bodies.get(key)
    if body is None or body.get("metadata", {}).get("deletionTimestamp"):
        return None
    namespace, name = key
    meta = body["metadata"]
    gen = int(meta.get("generation") or 0)
    now = clock.utcnow()
    # We are the only writer of this status: what we decided last is newer than the body until the
    # background writer has stored it (after a restart, the body's status is the start).
    decided = state.desired.get(key)
    if decided is not None and decided[0] == meta.get("uid"):
        status = decided[1]
    else:
        try:
            status = WorkflowStatus.model_validate(body.get("status") or {})
        except ValidationError:
            status = WorkflowStatus()
    old = status.dump()
    try:
        spec = WorkflowSpec.model_validate(body.get("spec") or {})
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        new = _fail_status(status, "InvalidSpec", f"spec.{where}: {first['msg']}", now, gen)
        await _write(state, key, body, old, new)
        return None
    plan = _plan(meta["uid"], gen, spec)
    if isinstance(plan, PlanError):
        if status.phase != "Failed":
            runs.kube.event(body, "Warning", "InvalidWorkflow", "; ".join(plan.errors))
        new = _fail_status(status, "InvalidWorkflow", "; ".join(plan.errors), now, gen)
        await _write(state, key, body, old, new)
        return None

    # only this workflow's children: not those of a deleted predecessor of the same name
    # and not children retired by a retry whose deletion the watch has not shown yet
    children = [
        c for c in state.children_of(key) if c.get("ownerUid") == meta["uid"] and c.get("uid") not in state.retired
    ]
    # retry: `scriptrun retry` sets the annotation to the next round; failed nodes start again
    wanted_round = int((meta.get("annotations") or {}).get(names.ANNOTATION_RETRY, "0") or 0)
    if wanted_round > (status.retry_round or 0):
        log.info(
            "%s/%s: retry %d requested (phase %s, rv %s)",
            namespace,
            name,
            wanted_round,
            status.phase,
            meta.get("resourceVersion"),
        )
    if wanted_round > (status.retry_round or 0) and status.phase == "Failed":
        status = await _retry(state, key, body, status, children, wanted_round, now)
        children = [c for c in children if c["node"] in status.tasks]
    observed = {
        c["node"]: ChildObservation(
            phase=c["phase"],
            attempts=c["attempts"],
            exit_code=c["exitCode"],
            started=c["started"],
            finished=c["finished"],
            reason=c["reason"],
            message=c["message"],
            outputs=c["outputs"],
            outputs_error=c["outputsError"],
            usage=c["usage"],
        )
        for c in children
        if c.get("node")
    }
    # children created here and not in the index yet: the engine counts them against parallelism
    expected = state.expected.setdefault(key, set())
    expected -= set(observed)
    decision = decide_workflow(
        plan,
        spec,
        status,
        observed,
        now,
        name=name,
        namespace=namespace,
        uid=meta["uid"],
        generation=gen,
        expected=expected,
    )
    ref = WorkflowRef(name, namespace, meta["uid"])
    gate = asyncio.Semaphore(CREATE_CONCURRENCY)

    async def create(node: str, template: Any) -> None:
        child = build_child(ref, task=plan.nodes[node].task, node=node, template=template)
        async with gate:
            try:
                created = await runs.kube.create_custom(CHILD_PLURAL, child)
                expected.add(node)
                if created is not None:
                    # start the child's reconcile now, not one watch hop later (its ADDED event will
                    # find the same resourceVersion and be taken as an echo)
                    child_key = (namespace, child["metadata"]["name"])
                    store_body(runs.bodies, child_key, created)
                    runs.loop.kick(child_key)
                log.debug("created child %s", child["metadata"]["name"])
            except ApiError as err:
                log.warning("child %s refused: %s", child["metadata"]["name"], err)
                runs.kube.event(body, "Warning", "ChildRefused", f"{node}: {err.message}")

    await asyncio.gather(*(create(s.node, s.template) for s in decision.start))
    for stop in decision.stop:
        for running in (c for c in children if c["node"] == stop.node and not c["terminate"]):
            await runs.kube.patch_custom(CHILD_PLURAL, namespace, running["name"], {"spec": {"terminate": True}})
    await _write(state, key, body, old, decision.status)
    for event in decision.events:
        runs.kube.event(body, event.type, event.reason, event.message, now)
    await _pod_gc(spec, decision.status, children, namespace, name)
    final = decision.status
    if final.phase in ("Succeeded", "Failed"):
        return await _ttl(spec, final, namespace, name, now)
    return decision.wake_at or now + timedelta(seconds=runs.config.resync_seconds)


async def _write(state: Any, key: Key, body: dict[str, Any], old: dict[str, Any], new: WorkflowStatus) -> None:
    """Hand the new status to the background writer: the decision loop never waits for the PATCH."""
    if key in state.desired and old == new.dump():
        return
    state.desired[key] = (body["metadata"].get("uid"), new)
    state.writer.kick(key)


async def write_status(key: Hashable) -> datetime | None:
    """The writer loop (one per workflow, coalescing): store the latest decided status, as one
    merge patch against what was stored last."""
    state = STATE.workflows
    assert state is not None and STATE.runs is not None and isinstance(key, tuple)
    decided = state.desired.get(key)
    body = state.bodies.get(key)
    if decided is None or body is None:
        return None
    new = decided[1].dump()
    old = state.written.get(key)
    if old is None:
        try:
            old = as_stored(WorkflowStatus.model_validate(body.get("status") or {}).dump(), body.get("status"))
        except ValidationError:
            old = {}
    patch = merge_patch(old, new)
    if patch:
        try:
            updated = await STATE.runs.kube.patch_status(PLURAL, key[0], key[1], patch)
        except ApiException as err:
            if err.status == 404:  # deleted meanwhile
                return None
            raise
        store_body(state.bodies, key, updated)
    state.written[key] = new
    return None


async def _retry(
    state: Any,
    key: Key,
    body: dict[str, Any],
    status: WorkflowStatus,
    children: list[dict[str, Any]],
    round_: int,
    now: datetime,
) -> WorkflowStatus:
    """Keep what succeeded; forget (and delete the children of) everything else."""
    runs = STATE.runs
    assert runs is not None
    keep = {n: t for n, t in status.tasks.items() if t.phase in ("Succeeded", "Skipped")}
    for child in children:
        if child["node"] not in keep:
            state.retired.add(child["uid"])
            await runs.kube.delete_custom(CHILD_PLURAL, key[0], child["name"])
    new = status.model_copy(deep=True)
    new.tasks = keep
    new.phase = "Running"
    new.finished_at = None
    new.retry_round = round_
    new.message = f"retry {round_}: {len(status.tasks) - len(keep)} tasks run again"
    new.conditions = [c for c in new.conditions if c.type not in ("Completed", "Failed")]
    state.expected.pop(key, None)
    runs.kube.event(body, "Normal", "WorkflowRetry", new.message, now)
    return new


async def _pod_gc(
    spec: WorkflowSpec, status: WorkflowStatus, children: list[dict[str, Any]], namespace: str, name: str
) -> None:
    if spec.pod_gc is None:
        return
    runs = STATE.runs
    assert runs is not None
    strategy = spec.pod_gc.strategy
    done = status.phase in ("Succeeded", "Failed")
    for child in children:
        phase = child["phase"]
        collect = (
            (strategy == "OnPodCompletion" and phase in ("Succeeded", "Failed"))
            or (strategy == "OnPodSuccess" and phase == "Succeeded")
            or (strategy == "OnWorkflowCompletion" and done)
            or (strategy == "OnWorkflowSuccess" and status.phase == "Succeeded")
        )
        if collect and runs.pods_of((namespace, child["name"])):
            await runs.kube.delete_pods(namespace, f"{names.LABEL_SCRIPTRUN}={names.label_value(child['name'])}")


async def _ttl(spec: WorkflowSpec, status: WorkflowStatus, namespace: str, name: str, now: datetime) -> datetime | None:
    ttl = spec.ttl_strategy
    if ttl is None:
        return None
    seconds = ttl.seconds_after_success if status.phase == "Succeeded" else ttl.seconds_after_failure
    if seconds is None:
        seconds = ttl.seconds_after_completion
    finished = clock.parse(status.finished_at)
    if seconds is None or finished is None:
        return None
    due = finished + timedelta(seconds=seconds)
    if now >= due:
        log.info("TTL: deleting finished Workflow %s/%s", namespace, name)
        assert STATE.runs is not None
        await STATE.runs.kube.delete_custom(PLURAL, namespace, name)
        return None
    return due
