"""The Workflow controller: observe (the workflow, its child ScriptRuns), decide (`engine.workflow`),
apply. Level-triggered: the status is recomputed from the children each time; a background writer
stores it, so the decision loop never waits for the PATCH."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError

from scriptrun.build import names
from scriptrun.build.patch import as_stored, merge_patch
from scriptrun.build.shard import inherited
from scriptrun.build.workflow import WorkflowRef, build_child
from scriptrun.controllers.bodies import Bodies, ChildChanged, IndexView, Key, has_values, owner_ref, values_of
from scriptrun.controllers.config import OperatorConfig
from scriptrun.controllers.loop import KeyedLoop
from scriptrun.controllers.pods import PodIndex
from scriptrun.engine import clock
from scriptrun.engine.budget import budget_exceeded
from scriptrun.engine.dag import Plan, PlanError, build_plan
from scriptrun.engine.observe import ChildObservation, observe_child
from scriptrun.engine.workflow import (
    CollectPods,
    DeleteWorkflow,
    RetireNode,
    StartNode,
    StopNode,
    WorkflowDecision,
    WorkflowEvent,
    WorkflowInputs,
    decide,
    invalid_workflow,
)
from scriptrun.k8s.api import Kube
from scriptrun.k8s.apply import Create, Delete, DeletePods, Emit, Operation, Outcome, Patch, apply
from scriptrun.model.workflow import WorkflowPhase, WorkflowSpec, WorkflowStatus
from scriptrun.telemetry.operator_metrics import OperatorMetrics
from scriptrun.telemetry.spans import api_span, workflow_span
from scriptrun.telemetry.trace_context import ObjectTrace
from scriptrun.telemetry.tracing import NO_TRACING, NoTracing, Tracing

log = logging.getLogger(__name__)
KIND = "Workflow"
CHILD_KIND = "ScriptRun"
PLAN_CACHE = 1000
TERMINAL_PHASES = frozenset(p.value for p in WorkflowPhase if p.terminal)


@dataclass(frozen=True)
class ChildRecord:
    """What the children index keeps of one child ScriptRun: who it is, and the observation."""

    node: str
    name: str
    uid: str
    owner_uid: str | None
    observation: ChildObservation


ChildCreatedFn = Callable[[Key, dict[str, Any]], None]


def child_record(body: dict[str, Any]) -> tuple[Key, ChildRecord] | None:
    """The workflow key and record of a child ScriptRun (None for a run no Workflow controls)."""
    meta = body.get("metadata", {})
    owner = owner_ref(body, KIND)
    node = (meta.get("labels") or {}).get(names.LABEL_NODE)
    if owner is None or not meta.get("namespace") or not node:
        return None
    stopping = bool((body.get("spec") or {}).get("terminate"))
    record = ChildRecord(
        node=str(node),
        name=str(meta.get("name")),
        uid=str(meta.get("uid")),
        owner_uid=owner.get("uid"),
        observation=observe_child(dict(body.get("status") or {}), stopping=stopping),
    )
    return (str(meta["namespace"]), str(owner["name"])), record


def finished(body: dict[str, Any]) -> bool:
    """Whether the body says the workflow has ended (its stored phase is terminal)."""
    phase = (body.get("status") or {}).get("phase")
    return phase in TERMINAL_PHASES


class WorkflowController:
    def __init__(
        self,
        kube: Kube,
        config: OperatorConfig,
        metrics: OperatorMetrics,
        *,
        child_created: ChildCreatedFn,
        pods: PodIndex,
        tracing: Tracing | NoTracing = NO_TRACING,
    ) -> None:
        self.kube = kube
        self.config = config
        self.metrics = metrics
        self.tracing = tracing
        self._traces: dict[Key, tuple[str, int, ObjectTrace | None]] = {}  # key -> (uid, round, its span)
        self.child_created = child_created
        self.bodies = Bodies(packed=finished)  # a finished workflow's body is read seldom: kept compressed
        self.expected: dict[Key, set[str]] = {}  # nodes whose child we created and have not seen yet
        self.retired: set[str] = set()  # uids of children a retry deleted (until the watch says so)
        self.children: IndexView[ChildRecord] | None = None
        self.pods = pods  # controllers/pods.py's index (read for podGC); reconciles wait until it is synced
        self._parsed: dict[tuple[str, int], tuple[WorkflowSpec, Plan | PlanError]] = {}
        self._desired: dict[Key, tuple[str | None, WorkflowStatus]] = {}  # (uid, latest decided status)
        self._written: dict[Key, tuple[WorkflowStatus | None, dict[str, Any]]] = {}  # last stored (model, dump)
        self._last_write: dict[Key, float] = {}  # event-loop time of the last status write
        self.loop = KeyedLoop(
            self.reconcile,
            resync_seconds=config.resync_seconds,
            observe=lambda seconds, ok: metrics.reconciled(KIND, seconds, ok),
            workers=config.workflow_workers,
        )
        self.writer = KeyedLoop(self.write_status)
        metrics.count_objects(self._phases)

    def _phases(self) -> Counter[tuple[str, str]]:
        """Workflows by phase as last decided (the stored phase until the first decision)."""
        decided = {str(uid): str(status.phase) for uid, status in list(self._desired.values())}  # another thread
        return self.bodies.count_phases(KIND, decided)

    async def _apply_ops(self, ops: list[Operation]) -> list[Outcome]:
        return await apply(self.kube, ops, self.metrics.applied)

    async def close(self) -> None:
        await self.loop.close()
        await self.writer.close()

    # --- events -------------------------------------------------------------------------------

    def workflow_event(self, event_type: str | None, body: dict[str, Any], children: IndexView[ChildRecord]) -> None:
        self.children = children
        meta = body.get("metadata", {})
        key = (str(meta.get("namespace")), str(meta.get("name")))
        if event_type == "DELETED":
            self.bodies.forget(key)
            self.expected.pop(key, None)
            self._desired.pop(key, None)
            self._written.pop(key, None)
            self._last_write.pop(key, None)
            self._traces.pop(key, None)
            self.writer.forget(key)
            self.loop.forget(key)
            return
        if not self.bodies.store(key, body):  # an echo of our own patch needs nothing
            self.loop.kick(key)

    def child_changed(self, change: ChildChanged) -> None:
        """A child changed what this controller reads: look at its workflow again."""
        self.loop.kick((change.namespace, change.workflow))

    # --- reconcile ----------------------------------------------------------------------------

    async def reconcile(self, key: Hashable) -> datetime | None:
        assert isinstance(key, tuple)
        await self.pods.synced.wait()  # its children's pods are read before any decision
        body = self.bodies.get(key)
        if body is None or body.get("metadata", {}).get("deletionTimestamp"):
            return None
        meta = body["metadata"]
        gen = int(meta.get("generation") or 0)
        now = clock.utcnow()
        status = self._status(key, body)
        parsed = self._parse(meta["uid"], gen, body)
        if isinstance(parsed, str):
            decision = invalid_workflow(status, "InvalidSpec", parsed, now, gen, event=False)
            await self._finish(key, body, status, decision, self._trace(key, body, decision.status))
            return None
        spec, plan = parsed
        if isinstance(plan, PlanError):
            why = "; ".join(plan.errors)
            decision = invalid_workflow(status, "InvalidWorkflow", why, now, gen, event=True)
            await self._finish(key, body, status, decision, self._trace(key, body, decision.status))
            return None
        inputs = self._observe(key, body, plan, spec, status, now)
        if inputs.retry_round > (status.retry_round or 0):
            log.info("%s/%s: retry %d requested (phase %s)", key[0], key[1], inputs.retry_round, status.phase)
        decision = decide(inputs)
        trace = self._trace(key, body, decision.status)
        early, late = self._operations(key, body, plan, decision, trace)
        await self._apply(key, early, decision, trace)
        await self._finish(key, body, status, decision, trace)
        await self._apply(key, late, decision, trace)
        if WorkflowPhase(decision.status.phase).terminal:
            # a finished workflow is rarely looked at again (a TTL, a retry, its children's last
            # changes): parse it again then, rather than keep some 200 KB of models per workflow
            self._parsed.pop((meta["uid"], gen), None)
            return decision.wake_at
        return decision.wake_at or now + timedelta(seconds=self.config.resync_seconds)

    def _trace(self, key: Key, body: dict[str, Any], status: WorkflowStatus) -> ObjectTrace | None:
        """The span of this workflow's current round (None with tracing off), worked out once."""
        if not self.tracing.enabled:
            return None
        meta = body["metadata"]
        uid, round_ = str(meta.get("uid")), status.retry_round or 0
        known = self._traces.get(key)
        if known is None or known[:2] != (uid, round_):
            known = self._traces[key] = (uid, round_, self.tracing.object_trace(uid, meta.get("annotations"), round_))
        return known[2]

    def _status(self, key: Key, body: dict[str, Any]) -> WorkflowStatus:
        """We are the only writer of this status: what we decided last is newer than the body until
        the background writer has stored it (after a restart, the body's status is the start)."""
        decided = self._desired.get(key)
        if decided is not None and decided[0] == body["metadata"].get("uid"):
            return decided[1]
        try:
            return WorkflowStatus.model_validate(body.get("status") or {})
        except ValidationError:
            return WorkflowStatus()

    def _parse(self, uid: str, generation: int, body: dict[str, Any]) -> tuple[WorkflowSpec, Plan | PlanError] | str:
        """The validated spec and its plan, once per generation (validating a 1000-task spec takes
        tens of milliseconds; the spec cannot change without a new generation). A str: why the
        spec is invalid."""
        key = (uid, generation)
        if key not in self._parsed:
            if len(self._parsed) > PLAN_CACHE:
                self._parsed.clear()
            try:
                spec = WorkflowSpec.model_validate(body.get("spec") or {})
            except ValidationError as err:
                first = err.errors()[0]
                where = ".".join(str(p) for p in first["loc"])
                return f"spec.{where}: {first['msg']}"
            try:
                self._parsed[key] = (spec, build_plan(spec))
            except PlanError as err:
                self._parsed[key] = (spec, err)
        return self._parsed[key]

    def _observe(
        self, key: Key, body: dict[str, Any], plan: Plan, spec: WorkflowSpec, status: WorkflowStatus, now: datetime
    ) -> WorkflowInputs:
        meta = body["metadata"]
        # only this workflow's children: not those of a deleted predecessor of the same name
        # and not children retired by a retry whose deletion the watch has not shown yet
        observed: dict[str, ChildObservation] = {}
        pods_left: set[str] = set()
        for child in values_of(self.children, key):
            if child.owner_uid != meta["uid"] or child.uid in self.retired:
                continue
            observed[child.node] = child.observation
            if spec.pod_gc is not None and has_values(self.pods, (key[0], child.name)):
                pods_left.add(child.node)
        expected = self.expected.setdefault(key, set())
        expected -= set(observed)
        retry_round = int((meta.get("annotations") or {}).get(names.ANNOTATION_RETRY, "0") or 0)
        return WorkflowInputs(
            plan=plan,
            spec=spec,
            status=status,
            observed=observed,
            now=now,
            name=key[1],
            namespace=key[0],
            uid=meta["uid"],
            generation=int(meta.get("generation") or 0),
            expected=frozenset(expected),
            retry_round=retry_round,
            pods_left=frozenset(pods_left),
        )

    def _child_names(self, key: Key) -> dict[str, str]:
        """node -> the name of its live child (as the index has it)."""
        return {c.node: c.name for c in values_of(self.children, key) if c.uid not in self.retired}

    def _operations(
        self, key: Key, body: dict[str, Any], plan: Plan, decision: WorkflowDecision, trace: ObjectTrace | None
    ) -> tuple[list[Operation], list[Operation]]:
        """The decision's actions as API operations, in two lists: the children first (retire,
        create, stop: the status written next records them), then what may lag the status (pod
        GC, the TTL). Kept in the engine's order: a retry's deletes before its creates."""
        namespace, name = key
        ref = WorkflowRef(name, namespace, body["metadata"]["uid"])
        live = [c for c in values_of(self.children, key) if c.uid not in self.retired]
        child_names = {c.node: c.name for c in live}
        traceparent = trace.context.traceparent() if trace else None

        def child_name(node: str) -> str:
            return child_names.get(node) or names.child_name(name, node)

        early: list[Operation] = []
        late: list[Operation] = []
        for action in decision.actions:
            match action:
                case RetireNode(node=node):
                    for child in live:
                        if child.node == node:
                            self.retired.add(child.uid)
                            early.append(Delete(CHILD_KIND, namespace, child.name))
                    self.expected.setdefault(key, set()).discard(node)
                case StartNode(node=node, template=template):
                    task = plan.nodes[node].task
                    manifest = build_child(
                        ref,
                        task=task,
                        node=node,
                        template=template,
                        traceparent=traceparent,
                        inherited_labels=inherited(body["metadata"].get("labels"), self.config.shard_keys),
                    )
                    early.append(Create(manifest))
                case StopNode(node=node):
                    early.append(Patch(CHILD_KIND, namespace, child_name(node), {"spec": {"terminate": True}}))
                case CollectPods(node=None):
                    late.append(DeletePods(namespace, f"{names.LABEL_WORKFLOW}={names.label_value(name)}"))
                case CollectPods(node=str(node)):
                    late.append(DeletePods(namespace, f"{names.LABEL_SCRIPTRUN}={names.label_value(child_name(node))}"))
                case DeleteWorkflow():
                    log.info("TTL: deleting finished Workflow %s/%s", namespace, name)
                    late.append(Delete(KIND, namespace, name))
        return early, late

    async def _apply(
        self, key: Key, ops: list[Operation], decision: WorkflowDecision, trace: ObjectTrace | None
    ) -> None:
        """Carry out `ops`; created children are expected (and handed to the ScriptRun controller),
        refused ones become a Warning Event."""
        expected = self.expected.setdefault(key, set())
        outcomes = await self._apply_ops(ops)
        if trace is not None:
            self._trace_calls(trace, outcomes)
        for outcome in outcomes:
            op = outcome.op
            if not isinstance(op, Create):
                continue
            child_meta = op.obj["metadata"]
            node = child_meta["labels"][names.LABEL_NODE]
            if outcome.refused is not None:
                log.warning("child %s refused: %s", child_meta["name"], outcome.refused)
                decision.events.append(WorkflowEvent("Warning", "ChildRefused", f"{node}: {outcome.refused.message}"))
                continue
            expected.add(node)
            if outcome.body is not None:
                self.child_created((key[0], child_meta["name"]), outcome.body)

    def _trace_calls(self, trace: ObjectTrace, outcomes: list[Outcome]) -> None:
        """A span for each child this pass created, under the workflow's span."""
        spans = []
        for outcome in outcomes:
            op = outcome.op
            if isinstance(op, Create) and not (outcome.exists or outcome.refused):
                meta = op.obj["metadata"]
                attrs = {
                    "k8s.namespace.name": meta["namespace"],
                    "scriptrun.scriptrun.name": meta["name"],
                    "scriptrun.node.name": meta["labels"][names.LABEL_NODE],
                }
                span = api_span(
                    trace.context, "create ScriptRun", outcome.started, outcome.seconds, attrs, meta["name"]
                )
                spans.append(span)
        self.tracing.emit(spans)

    async def _finish(
        self,
        key: Key,
        body: dict[str, Any],
        before: WorkflowStatus,
        decision: WorkflowDecision,
        trace: ObjectTrace | None,
    ) -> None:
        """Hand the new status to the background writer; post the decision's Events; the
        workflow's span once it has ended."""
        if trace is not None and trace.context.sampled and not WorkflowPhase(before.phase).terminal:
            decision.status.trace_id = trace.context.trace_hex
        if not (key in self._desired and before == decision.status):
            self._desired[key] = (body["metadata"].get("uid"), decision.status)
            self.writer.kick(key)
        after = decision.status
        if budget_exceeded(after.conditions) and not budget_exceeded(before.conditions):
            budget = (body.get("spec") or {}).get("budget") or {}
            self.metrics.budget_exceeded(KIND, key[0], str(budget.get("action") or "Warn"))
        if WorkflowPhase(after.phase).terminal and not WorkflowPhase(before.phase).terminal:
            reason = next((c.reason for c in after.conditions if c.type == "Completed"), None) or after.phase
            begin, end = clock.parse(after.started_at), clock.parse(after.finished_at)
            seconds = (end - begin).total_seconds() if begin and end else None
            self.metrics.finished(KIND, key[0], str(after.phase), str(reason), seconds, names.label_value(key[1]))
            if trace is not None:
                self.tracing.emit([workflow_span(trace, body["metadata"], after)])
        await self._apply_ops([Emit(body, e.type, e.reason, e.message) for e in decision.events])

    async def write_status(self, key: Hashable) -> datetime | None:
        """The writer loop (one per workflow, coalescing): store the latest decided status, as one
        merge patch against what was stored last. A running workflow's status is written at most
        once per `workflow_status_interval_seconds` (what changes meanwhile goes in the next
        write); a final status goes at once. Measured: each write of a 100-task Workflow cost the
        API server tens of milliseconds of CPU, the chain's bottleneck."""
        assert isinstance(key, tuple)
        loop = asyncio.get_running_loop()
        last = self._last_write.get(key)
        decided = self._desired.get(key)
        if decided is not None and last is not None and not WorkflowPhase(decided[1].phase).terminal:
            pause = last + self.config.workflow_status_interval_seconds - loop.time()
            if pause > 0:
                await asyncio.sleep(pause)
                decided = self._desired.get(key)
        body = self.bodies.get(key)
        if decided is None or body is None:
            return None
        written = self._written.get(key)
        if written is None:
            try:
                stored = as_stored(WorkflowStatus.model_validate(body.get("status") or {}).dump(), body.get("status"))
            except ValidationError:
                stored = {}
            written = (None, stored)
        new = dump_status(decided[1], written)
        patch = merge_patch(written[1], new)
        if patch:
            (outcome,) = await self._apply_ops([Patch(KIND, key[0], key[1], patch, status=True)])
            if outcome.body is None:  # deleted meanwhile
                return None
            self.bodies.update(key, outcome.body)
            self._last_write[key] = loop.time()
        if WorkflowPhase(decided[1].phase).terminal and self._desired.get(key) is decided:
            # stored, and final: the body holds it now, and a later reconcile starts from there
            self._desired.pop(key, None)
            self._written.pop(key, None)
        else:
            self._written[key] = (decided[1], new)
        return None


def dump_status(new: WorkflowStatus, written: tuple[WorkflowStatus | None, dict[str, Any]]) -> dict[str, Any]:
    """`new.dump()`, reusing the stored dump of every task summary that has not changed (a 1000-task
    status took tens of milliseconds to serialise on each write)."""
    old_model, old_dump = written
    if old_model is None:
        return new.dump()
    head = new.model_copy(update={"tasks": {}}).dump()
    old_tasks = old_dump.get("tasks") or {}
    tasks: dict[str, Any] = {}
    for node, summary in new.tasks.items():
        before = old_model.tasks.get(node)
        same = before is not None and node in old_tasks and (before is summary or before == summary)
        tasks[node] = old_tasks[node] if same else summary.dump()
    head["tasks"] = tasks
    return head
