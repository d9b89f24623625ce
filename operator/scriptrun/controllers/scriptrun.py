"""The ScriptRun controller: observe (the run, its pods), decide (`engine.run`), apply."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Hashable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError

from scriptrun.build import names
from scriptrun.build.gates import gate_report_configmap, history_configmap, parse_report
from scriptrun.build.patch import as_stored, merge_patch
from scriptrun.build.pod import PodInputs, RunRef, build_pod, build_script_configmap
from scriptrun.build.shard import inherited
from scriptrun.controllers.alerting import AlertNotifier
from scriptrun.controllers.bodies import Bodies, ChildChanged, Key, owner_ref, unpack, values_of
from scriptrun.controllers.config import OperatorConfig
from scriptrun.controllers.costs import RunCosts, price_sources
from scriptrun.controllers.loop import KeyedLoop
from scriptrun.controllers.pods import PodIndex
from scriptrun.engine import budget as budgets
from scriptrun.engine import clock
from scriptrun.engine.conditions import set_condition
from scriptrun.engine.gates import before_gates
from scriptrun.engine.observe import AttemptObservation, observe_pod, pending_cause, waiting_reason
from scriptrun.engine.regression import CONDITION, HISTORY_DATA_KEY, History, describe, history_key, judge, measured
from scriptrun.engine.run import (
    Blocked,
    Decision,
    DeleteSelf,
    Refusal,
    RemoveStale,
    RunEvent,
    RunInputs,
    StartAttempt,
    StopAttempt,
    decide_run,
    judge_budget,
)
from scriptrun.k8s.api import Kube
from scriptrun.k8s.apply import Create, Delete, Emit, Operation, Outcome, Patch, apply
from scriptrun.model.alerts import AlertRule
from scriptrun.model.contract import GATE_CONTAINER
from scriptrun.model.scriptrun import MonitorSpec, RunPhase, RunTemplate, ScriptRunSpec, ScriptRunStatus, ScriptSource
from scriptrun.telemetry.operator_metrics import OperatorMetrics
from scriptrun.telemetry.spans import api_span, run_spans
from scriptrun.telemetry.trace_context import ObjectTrace, attempt_context
from scriptrun.telemetry.tracing import NO_TRACING, NoTracing, Tracing

log = logging.getLogger(__name__)
KIND = "ScriptRun"


ChildChangedFn = Callable[[ChildChanged], None]


HISTORY_WRITES = 8  # tries to record a run in its regression history (optimistic: read, replace at that version)


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


class ScriptRunController:
    def __init__(
        self,
        kube: Kube,
        config: OperatorConfig,
        metrics: OperatorMetrics,
        *,
        child_changed: ChildChangedFn,
        pods: PodIndex,
        tracing: Tracing | NoTracing = NO_TRACING,
    ) -> None:
        self.kube = kube
        self.config = config
        self.metrics = metrics
        self.tracing = tracing
        self.alerts = AlertNotifier(dict(config.alert_webhooks), metrics.alert_notification)
        self.costs = RunCosts(kube, price_sources(config.prices_file, config.price_providers, config.price_currency))
        self._traces: dict[Key, tuple[str, ObjectTrace | None]] = {}  # key -> (uid, its span)
        self.child_changed = child_changed
        self.bodies = Bodies(packed=True)  # thousands of runs: kept compressed
        self.expected: dict[Key, set[int]] = {}  # attempts created, not in the pods index yet
        self.pods = pods  # kept by controllers/pods.py; reconciles wait until it is synced
        self._pod_signatures: dict[Key, tuple[Any, ...]] = {}
        self._child_seen: dict[Key, tuple[Any, ...]] = {}
        self.loop = KeyedLoop(
            self.reconcile,
            resync_seconds=config.resync_seconds,
            observe=lambda seconds, ok: metrics.reconciled(KIND, seconds, ok),
            workers=config.run_workers,
        )
        metrics.count_objects(self._phases)

    def _phases(self) -> Counter[tuple[str, str]]:
        return self.bodies.count_phases(KIND)

    async def _apply(self, ops: list[Operation]) -> list[Outcome]:
        return await apply(self.kube, ops, self.metrics.applied)

    async def close(self) -> None:
        await self.loop.close()
        await self.alerts.close()

    # --- events -------------------------------------------------------------------------------

    def pod_event(self, event_type: str | None, body: dict[str, Any]) -> None:
        """A pod changed (the index has it already): wake its run if what the run reads changed
        (phase, reason, why it waits, deletion). A pod sees several updates (scheduled, conditions,
        IPs) that change none."""
        meta = body.get("metadata", {})
        ref, namespace = owner_ref(body, KIND), meta.get("namespace")
        if ref is None or namespace is None:  # not a run's pod (the index ignored it too)
            return
        run_key = (namespace, str(ref["name"]))
        pod_key = (namespace, str(meta.get("name") or ""))
        status = body.get("status") or {}
        signature = (
            status.get("phase"),
            status.get("reason"),
            pending_cause(status)[0],
            bool(meta.get("deletionTimestamp")),
        )
        if event_type == "DELETED":
            self._pod_signatures.pop(pod_key, None)
        elif self._pod_signatures.get(pod_key) == signature:
            return
        elif signature[0] in ("Succeeded", "Failed") and not signature[3]:
            self._pod_signatures.pop(pod_key, None)  # a finished pod changes no more until it goes: keep nothing
        else:
            self._pod_signatures[pod_key] = signature
        self.loop.kick(run_key)

    def run_event(self, event_type: str | None, body: dict[str, Any]) -> None:
        meta = body.get("metadata", {})
        key = (str(meta.get("namespace")), str(meta.get("name")))
        if event_type == "DELETED":
            self.bodies.forget(key)
            self.expected.pop(key, None)
            self._child_seen.pop(key, None)
            self._traces.pop(key, None)
            self.loop.forget(key)
            self._tell_parent(body)
            return
        if not self.bodies.store(key, body):  # an echo of our own patch was reconciled from already
            self.loop.kick(key)
        if owner_ref(body, "Workflow") is None:
            return  # not a workflow's child: nothing to tell, nothing to remember
        status = body.get("status") or {}
        seen = (status.get("phase"), waiting_reason(status))
        if self._child_seen.get(key) != seen:
            self._child_seen[key] = seen
            self._tell_parent(body)

    def adopt(self, key: Key, body: dict[str, Any]) -> None:
        """The Workflow controller created this run: reconcile it now, not one watch hop later (its
        ADDED event will find the same resourceVersion and be taken as an echo)."""
        self.bodies.store(key, body)
        self.loop.kick(key)

    def _tell_parent(self, body: dict[str, Any]) -> None:
        meta = body.get("metadata", {})
        if names.LABEL_WORKFLOW not in (meta.get("labels") or {}):
            return
        ref = owner_ref(body, "Workflow")
        if ref is not None and meta.get("namespace"):
            self.child_changed(ChildChanged(str(meta["namespace"]), str(ref["name"])))

    # --- reconcile ----------------------------------------------------------------------------

    async def reconcile(self, key: Hashable) -> datetime | None:
        """Drive one ScriptRun a step; returns when to look again (None: only on events)."""
        assert isinstance(key, tuple)
        await self.pods.synced.wait()  # never decide on a run before its pods are read
        body = self.bodies.get(key)
        if body is None or body.get("metadata", {}).get("deletionTimestamp"):
            return None
        spec, blocked = _spec(body)
        inputs = self._observe(key, body, spec, blocked)
        fresh = not inputs.status.attempts and not inputs.observed and not inputs.status.phase.terminal
        if inputs.blocked is None and fresh:
            inputs = replace(inputs, blocked=await self._check_inputs(key[0], spec))
        inputs = replace(inputs, spot_nodes=await self._spot_nodes(inputs))
        decision = decide_run(inputs)
        over = await self._over_budget(spec, decision)
        if over is not None:
            inputs = replace(inputs, over_budget=over)
            decision = decide_run(inputs)
        trace = self._trace(key, body)
        outcomes = await self._apply(self._operations(decision, body, spec, trace))
        again = await self._second_look(key, inputs, outcomes)
        if again is not None:
            decision = again
            outcomes = await self._apply(self._operations(decision, body, spec, trace))
        self._trace_calls(trace, outcomes)
        if decision.status.phase.terminal and not inputs.status.phase.terminal:
            await self._keep_gate_report(body, spec, decision)
            await self._compare_with_history(body, spec, decision, inputs)
            decision.status.cost = await self.costs.cost(spec, decision.status)
            decision.events.extend(judge_budget(spec, decision.status, inputs.now, inputs.generation))
        await self._write_status(key, body, inputs.status, decision, trace)
        await self._apply([Emit(body, e.type, e.reason, e.message) for e in decision.events])
        if decision.status.phase.terminal:
            return decision.wake_at
        return decision.wake_at or inputs.now + timedelta(seconds=self.config.resync_seconds)

    def _observe(self, key: Key, body: dict[str, Any], spec: RunTemplate, blocked: Blocked | None) -> RunInputs:
        meta = body["metadata"]
        monitor = getattr(spec, "monitor", None) or MonitorSpec()
        observed: dict[int, AttemptObservation] = {}
        held: set[str] = set()
        for kept in values_of(self.pods, key):
            pod = unpack(kept)
            pod_meta = pod["metadata"]
            if pod_meta.get("ownerUid") != meta.get("uid"):
                held.add(str(pod_meta.get("name")))  # a deleted predecessor's pod
                continue
            try:
                number = int(pod_meta["labels"].get(names.LABEL_ATTEMPT, ""))
            except ValueError:
                continue
            observed[number] = observe_pod(pod, number, monitor_enabled=monitor.enabled)
        expected = self.expected.pop(key, set()) - set(observed)
        if expected:  # kept only while some are missing: ten thousand empty sets were 4 MB
            self.expected[key] = expected
        name = key[1]
        return RunInputs(
            spec=spec,
            status=_status(body),
            observed=observed,
            now=clock.utcnow(),
            generation=int(meta.get("generation") or 0),
            created=clock.parse(meta.get("creationTimestamp")),
            expected=frozenset(expected),
            blocked=blocked,
            deadline_grace_seconds=self.config.deadline_grace_seconds,
            attempt_name=lambda n: names.pod_name(name, n),
            held=frozenset(held),
        )

    async def _spot_nodes(self, inputs: RunInputs) -> frozenset[str]:
        """The spot nodes among those of attempts failing now: a pod seen failed, or a live one whose
        pod vanished (read only then: a pod lost on a spot node is a reclaim, retried without counting)."""
        recorded = {a.attempt: a for a in inputs.status.attempts}
        nodes = {
            o.node
            for n, o in inputs.observed.items()
            if o.state == "Failed" and o.node and not (n in recorded and recorded[n].phase.terminal)
        }
        nodes |= {
            a.node_name
            for a in inputs.status.attempts
            if a.node_name and not a.phase.terminal and a.attempt not in inputs.observed
        }
        spot = set()
        for name in sorted(n for n in nodes if n):
            facts = await self.costs.node(name)
            if facts is not None and facts.capacity_type == "spot":
                spot.add(name)
        return frozenset(spot)

    async def _over_budget(self, spec: RunTemplate, decision: Decision) -> str | None:
        """With a Stop budget, before another attempt: whether the attempts so far spent it."""
        budget = getattr(spec, "budget", None)
        retrying = decision.status.next_attempt_time is not None or any(
            isinstance(a, StartAttempt) for a in decision.actions
        )
        if budget is None or budget.action != "Stop" or not retrying or not decision.status.attempts:
            return None
        spent = await self.costs.cost(spec, decision.status)
        verdict = budgets.judge(budget, budgets.add_up([spent.dump() if spent else None]))
        return verdict.message if verdict.exceeded else None

    async def _keep_gate_report(self, body: dict[str, Any], spec: RunTemplate, decision: Decision) -> None:
        """The finished run's before-gate report (SARIF, SBOM), read from its last pod's gate
        container log, kept in an owned ConfigMap named in status.gatesReport. Best effort: a log
        that cannot be read is a Warning Event, and the verdicts in status.gates stand."""
        attempts = decision.status.attempts
        if before_gates(spec) is None or not attempts or attempts[-1].start_time is None:
            return
        meta = body["metadata"]
        namespace, pod = meta["namespace"], attempts[-1].pod_name
        try:
            text = await self.kube.pod_log(namespace, pod, container=GATE_CONTAINER)
        except Exception as err:  # the log is a bonus: never fail the run's step for it
            text, why = None, f"{type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}"
        else:
            why = "the gate container left no report in its log"
        report = parse_report(text or "")
        if report is None:
            decision.events.append(RunEvent("Warning", "GateReportUnavailable", f"pod {pod}: {why}"))
            return
        cm = gate_report_configmap(RunRef(meta["name"], namespace, meta["uid"]), report)
        (outcome,) = await self._apply([Create(cm)])
        if outcome.refused is None:
            decision.status.gates_report = cm["metadata"]["name"]

    async def _compare_with_history(
        self, body: dict[str, Any], spec: RunTemplate, decision: Decision, inputs: RunInputs
    ) -> None:
        """spec.regression: a successful run's usage against its key's history (a ConfigMap per key,
        not owned by any run: it outlives them), then recorded in it. The Regressed condition, a
        Warning Event and scriptrun_regressions_total when a field regressed."""
        check = getattr(spec, "regression", None)
        status = decision.status
        values = measured(check, status.usage) if check is not None else {}
        if check is None or status.phase != RunPhase.SUCCEEDED or not values:
            return
        meta = body["metadata"]
        labels = meta.get("labels") or {}
        key = history_key(
            check,
            name=meta["name"],
            generate_name=meta.get("generateName"),
            workflow=labels.get(names.LABEL_WORKFLOW),
            task=labels.get(names.LABEL_TASK),
        )
        namespace, uid, cm_name = meta["namespace"], str(meta.get("uid")), names.history_name(key)
        for _ in range(HISTORY_WRITES):  # a run of the same key finishing at once wrote first: read again
            cm = await self.kube.get_configmap(namespace, cm_name)
            history = History.parse(key, ((cm or {}).get("data") or {}).get(HISTORY_DATA_KEY))
            found = judge(check, values, history.without(uid))
            updated = history.recorded(uid, meta["name"], clock.fmt(inputs.now), values, check.history)
            if cm is None:
                written = await self.kube.create_configmap(history_configmap(namespace, cm_name, key, updated.dump()))
            else:
                cm["data"] = {**(cm.get("data") or {}), HISTORY_DATA_KEY: updated.dump()}
                written = await self.kube.replace_configmap(cm)
            if written:
                break
        else:
            log.warning(
                "regression history %s/%s: not recorded, %d writers in a row got there first",
                namespace,
                cm_name,
                HISTORY_WRITES,
            )
        status.regressions = found
        regressed = [r for r in found or [] if r.regressed]
        if found is None:
            reason, message = "TooFewRuns", f"fewer than {check.min_runs} runs in the history of {key}"
        elif regressed:
            reason, message = "Regressed", f"{key}: {describe(regressed)}"
        else:
            reason, message = "WithinHistory", f"within the history of {key} ({found[0].runs} runs)"
        set_condition(status.conditions, CONDITION, bool(regressed), reason, message, inputs.now, inputs.generation)
        if regressed:
            decision.events.append(RunEvent("Warning", "Regressed", message))
            for r in regressed:
                self.metrics.regressed(namespace, r.field)

    async def _check_inputs(self, namespace: str, spec: RunTemplate) -> Blocked | None:
        """What only the operator can see: a ConfigMap that is not there, or lacks the key."""
        before = before_gates(spec) if getattr(spec, "script", None) else None
        if before is not None and before.dependency_scan is not None:
            name = before.dependency_scan.database.config_map_name
            if await self.kube.get_configmap(namespace, name) is None:
                where = "spec.gates.before.dependencyScan.database"
                return Blocked("ConfigMapNotFound", f"ConfigMap {name!r} ({where}) not found")
        ref = spec.script.config_map_ref if getattr(spec, "script", None) else None
        if ref is None:
            return None
        cm = await self.kube.get_configmap(namespace, ref.name)
        if cm is None:
            return Blocked("ConfigMapNotFound", f"ConfigMap {ref.name!r} (spec.script.configMapRef) not found")
        if ref.key not in (cm.get("data") or {}):
            return Blocked("ConfigMapKeyNotFound", f"ConfigMap {ref.name!r} has no key {ref.key!r}")
        return None

    def _trace(self, key: Key, body: dict[str, Any]) -> ObjectTrace | None:
        """This run's span (None with tracing off), worked out once per object."""
        if not self.tracing.enabled:
            return None
        meta = body["metadata"]
        uid = str(meta.get("uid"))
        known = self._traces.get(key)
        if known is None or known[0] != uid:
            known = self._traces[key] = (uid, self.tracing.object_trace(uid, meta.get("annotations")))
        return known[1]

    def _trace_calls(self, trace: ObjectTrace | None, outcomes: list[Outcome]) -> None:
        """A span for each pod this pass created, under its attempt's span."""
        if trace is None:
            return
        spans = []
        for outcome in outcomes:
            op = outcome.op
            if isinstance(op, Create) and op.obj.get("kind") == "Pod" and not (outcome.exists or outcome.refused):
                meta = op.obj["metadata"]
                attempt = int(meta["labels"][names.LABEL_ATTEMPT])
                attrs = {"k8s.namespace.name": meta["namespace"], "k8s.pod.name": meta["name"]}
                parent = attempt_context(trace, attempt)
                spans.append(api_span(parent, "create Pod", outcome.started, outcome.seconds, attrs))
        self.tracing.emit(spans)

    def _operations(
        self, decision: Decision, body: dict[str, Any], spec: RunTemplate, trace: ObjectTrace | None
    ) -> list[Operation]:
        meta = body["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        ops: list[Operation] = []
        for action in decision.actions:
            match action:
                case StartAttempt(attempt=attempt):
                    run = RunRef(name, namespace, meta["uid"])
                    # the pod may exist before its ConfigMap (the kubelet waits for it): both at once
                    configmap = build_script_configmap(run, spec)
                    if configmap is not None:
                        ops.append(Create(configmap))
                    traceparent = attempt_context(trace, attempt).traceparent() if trace else None
                    ops.append(Create(self._pod(run, body, spec, attempt, traceparent)))
                case StopAttempt(name=pod):
                    ops.append(Delete("Pod", namespace, pod))
                case RemoveStale(name=pod):
                    ops.append(Delete("Pod", namespace, pod, grace_seconds=0))
                case DeleteSelf():
                    log.info("TTL: deleting finished ScriptRun %s/%s", namespace, name)
                    ops.append(Delete(KIND, namespace, name))
        return ops

    def _pod(
        self, run: RunRef, body: dict[str, Any], spec: RunTemplate, attempt: int, traceparent: str | None
    ) -> dict[str, Any]:
        labels = body["metadata"].get("labels") or {}
        keys = (*self.config.shard_keys, names.LABEL_WORKFLOW, names.LABEL_TASK, names.LABEL_NODE)
        extra = tuple(inherited(labels, keys).items())  # the shard's keys too: its pod watch selects on them
        config = self.config
        return build_pod(
            PodInputs(
                run=run,
                spec=spec,
                attempt=attempt,
                default_image=config.default_image,
                monitor_image=config.monitor_image,
                monitor_pull_policy=config.monitor_pull_policy,
                gate_image=config.gate_image,
                extra_labels=extra,
                traceparent=traceparent,
            )
        )

    async def _second_look(self, key: Key, inputs: RunInputs, outcomes: list[Outcome]) -> Decision | None:
        """After the creates: a refused pod, or a name held by a pod we did not see, is the
        engine's to decide about (the same inputs, plus what the API server said)."""
        for outcome in outcomes:
            op = outcome.op
            if not isinstance(op, Create) or op.obj.get("kind") != "Pod":
                continue
            pod_meta = op.obj["metadata"]
            attempt = int(pod_meta["labels"][names.LABEL_ATTEMPT])
            if outcome.refused is not None:
                refusal = Refusal(outcome.refused.status, outcome.refused.message)
                return decide_run(replace(inputs, refused=refusal))
            if outcome.exists:
                existing = await self.kube.get_pod(pod_meta["namespace"], pod_meta["name"])
                owner = (owner_ref(existing, KIND) or {}).get("uid") if existing else None
                if existing is not None and owner != op.obj["metadata"]["ownerReferences"][0]["uid"]:
                    return decide_run(replace(inputs, held=inputs.held | {pod_meta["name"]}))
            self.expected.setdefault(key, set()).add(attempt)
            log.info("%s pod %s", "found" if outcome.exists else "created", pod_meta["name"])
        return None

    async def _write_status(
        self, key: Key, body: dict[str, Any], before: ScriptRunStatus, decision: Decision, trace: ObjectTrace | None
    ) -> None:
        if trace is not None and trace.context.sampled and not before.phase.terminal:
            decision.status.trace_id = trace.context.trace_hex  # where to look (a finished run's stays as it was)
        old = as_stored(before.dump(), body.get("status"))
        new = decision.status.dump()
        patch = merge_patch(old, new)
        if not patch:
            return
        log.debug("run %s status -> %s", key[1], decision.status.phase.value)
        (outcome,) = await self._apply([Patch(KIND, key[0], key[1], patch, status=True)])
        if outcome.body is None:
            return
        self.bodies.update(key, outcome.body)
        self._count(outcome.body, before, decision.status)
        if trace is not None:
            self.tracing.emit(run_spans(trace, outcome.body["metadata"], before, decision.status))
        if "phase" in patch or waiting_reason(new) != waiting_reason(old):
            self._tell_parent(outcome.body)

    def _count(self, body: dict[str, Any], before: ScriptRunStatus, after: ScriptRunStatus) -> None:
        """The metrics of what this write recorded: attempts started and ended, a retry, the end of
        the run, its usage, its cost and budget."""
        meta = body["metadata"]
        namespace = str(meta.get("namespace"))
        labels = meta.get("labels") or {}
        workflow, task = labels.get(names.LABEL_WORKFLOW, ""), labels.get(names.LABEL_TASK, "")
        earlier = {a.attempt: a for a in before.attempts}
        for attempt in after.attempts:
            was = earlier.get(attempt.attempt)
            if attempt.start_time and not (was and was.start_time):
                created, started = clock.parse(attempt.created_time), clock.parse(attempt.start_time)
                if created and started:
                    self.metrics.pod_started(namespace, (started - created).total_seconds())
            if attempt.finish_time and not (was and was.finish_time):
                self.metrics.attempt_ended(namespace, attempt.reason or attempt.phase.value)
        if len(after.attempts) > len(before.attempts) and len(after.attempts) > 1:
            self.metrics.retried(namespace, after.attempts[-2].reason or "Unknown")
        if after.phase.terminal and not before.phase.terminal:
            reason = next((c.reason for c in after.conditions if c.type == "Failed" and c.status == "True"), None)
            begin, end = clock.parse(after.start_time), clock.parse(after.completion_time)
            seconds = (end - begin).total_seconds() if begin and end else None
            phase = after.phase.value
            self.metrics.finished(KIND, namespace, phase, reason or phase, seconds, workflow, task)
        if after.usage and not before.usage and after.phase.terminal:
            self.metrics.used(namespace, after.usage, workflow, task)
        if after.alerts and not before.alerts:
            rules = [AlertRule.model_validate(r) for r in (body.get("spec") or {}).get("alerts") or []]
            self.alerts.fired(KIND, namespace, str(meta.get("name")), rules, after.alerts)
        if after.gates and not before.gates:
            for gate in after.gates:
                self.metrics.gate(namespace, gate.stage, gate.result, workflow, task)
        if after.cost is not None and before.cost is None:
            self.metrics.cost(namespace, after.cost.dump(), workflow, task)
        if budgets.budget_exceeded(after.conditions) and not budgets.budget_exceeded(before.conditions):
            budget = (body.get("spec") or {}).get("budget") or {}
            self.metrics.budget_exceeded(KIND, namespace, str(budget.get("action") or "Warn"))
