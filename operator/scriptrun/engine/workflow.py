"""One Workflow's state machine: plan + what the children say now -> next status and actions.

Pure and level-triggered like engine.run: both backends (child ScriptRuns in Kubernetes, local
runs on a laptop) observe their children, call `decide_workflow`, and carry out its actions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from scriptrun.engine import clock, expressions, params
from scriptrun.engine.conditions import set_condition
from scriptrun.engine.dag import Node, Plan, aggregate_output, declared_outputs
from scriptrun.engine.run import RunEvent
from scriptrun.model.scriptrun import RunTemplate
from scriptrun.model.workflow import TaskSummary, WorkflowSpec, WorkflowStatus, WorkflowTask

NodePhase = Literal["Pending", "Running", "Succeeded", "Failed", "Skipped", "Omitted"]
TERMINAL = ("Succeeded", "Failed", "Skipped", "Omitted")
DAG_FIELDS = {"name", "dependencies", "depends", "when", "matrix", "outputs", "parameters"}
HEADLINE = ("cpuAvgPercent", "memoryMaxMb")  # the rest of the usage lives in the child ScriptRun


@dataclass(frozen=True)
class ChildObservation:
    """What a backend sees of one node's child run.

    `reason`/`message`: for a failed child, why it failed; for a live one, why its pod waits (the
    child's `Waiting` condition: ErrImagePull, Unschedulable...), None while nothing holds it up."""

    phase: Literal["Pending", "Running", "Succeeded", "Failed"]
    attempts: int = 0
    exit_code: int | None = None
    started: str | None = None
    finished: str | None = None
    reason: str | None = None
    message: str | None = None
    outputs: dict[str, str] | None = None
    outputs_error: str | None = None
    usage: dict[str, Any] | None = None


@dataclass(frozen=True)
class StartNode:
    node: str
    template: RunTemplate


@dataclass(frozen=True)
class StopNode:
    node: str


WorkflowEvent = RunEvent  # the same shape: type, reason, message


@dataclass
class WorkflowDecision:
    status: WorkflowStatus
    start: list[StartNode] = field(default_factory=list)
    stop: list[StopNode] = field(default_factory=list)
    events: list[WorkflowEvent] = field(default_factory=list)
    wake_at: datetime | None = None


def _summary_from_child(obs: ChildObservation) -> TaskSummary:
    usage = obs.usage or {}
    headline = {k: usage[k] for k in HEADLINE if k in usage} or None
    duration = None
    start, end = clock.parse(obs.started), clock.parse(obs.finished)
    if start and end:
        duration = clock.human_duration((end - start).total_seconds())
    waiting = obs.phase in ("Pending", "Running") and obs.reason is not None
    return TaskSummary(
        phase=obs.phase,
        attempts=obs.attempts or None,
        duration=duration,
        exit_code=obs.exit_code,
        reason=obs.reason if waiting else None,
        message=obs.message if obs.phase == "Failed" or waiting else None,
        outputs=obs.outputs,
        usage=headline,
    )


def _flags(phases: list[str]) -> dict[str, bool]:
    return {
        "Succeeded": all(p == "Succeeded" for p in phases),
        "Failed": any(p == "Failed" for p in phases),
        "Skipped": all(p == "Skipped" for p in phases),
        "Omitted": all(p == "Omitted" for p in phases),
        "AnySucceeded": any(p == "Succeeded" for p in phases),
        "AnyFailed": any(p == "Failed" for p in phases),
        "AllFailed": all(p == "Failed" for p in phases),
        "AllSucceeded": all(p == "Succeeded" for p in phases),
    }


def render_template(task: WorkflowTask, values: dict[str, str]) -> RunTemplate:
    """The child's RunTemplate: the task without its DAG fields, placeholders substituted."""
    data = task.model_dump(by_alias=True, exclude_none=True, mode="json", exclude=DAG_FIELDS)

    def walk(value: Any) -> Any:
        if isinstance(value, str):
            return params.substitute(value, values)
        if isinstance(value, list):
            return [walk(v) for v in value]
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        return value

    for key in ("script", "args", "env", "image"):
        if key in data:
            data[key] = walk(data[key])
    return RunTemplate.model_validate(data)


@dataclass
class _State:
    phases: dict[str, str]
    summaries: dict[str, TaskSummary]
    outputs: dict[str, dict[str, str]]


def _values(plan: Plan, node: Node, state: _State, wf: dict[str, str]) -> dict[str, str]:
    task = plan.tasks[node.task]
    values = dict(wf)
    values.update({f"workflow.parameters.{k}": v for k, v in plan.parameters.items()})
    values.update({f"matrix.{k}": v for k, v in node.matrix})
    for name, ids in plan.nodes_of.items():
        declared = declared_outputs(plan.tasks[name])
        for out in declared:
            got = [state.outputs.get(i, {}).get(out) for i in ids]
            if len(ids) == 1 and ids[0] == name:
                if got[0] is not None:
                    values[f"tasks.{name}.outputs.parameters.{out}"] = got[0]
            elif any(g is not None for g in got):
                values[f"tasks.{name}.outputs.parameters.{out}"] = aggregate_output(got)
    for par in task.parameters or []:
        if par.value is not None:
            values[f"inputs.parameters.{par.name}"] = params.substitute(par.value, values)
    return values


def _when_context(values: dict[str, str]) -> dict[str, Any]:
    """`when` may also use CEL variables: tasks.X.outputs.parameters.Y, workflow.parameters.P, ..."""
    root: dict[str, Any] = {}
    for key, value in values.items():
        cur = root
        parts = key.split(".")
        for part in parts[:-1]:
            nxt = cur.setdefault(part, {})
            if not isinstance(nxt, dict):
                break
            cur = nxt
        else:
            cur[parts[-1]] = value
    return root


def _eval_when(expr: str, values: dict[str, str]) -> bool:
    return expressions.evaluate_when(expr, values, _when_context(values))


def decide_workflow(
    plan: Plan,
    spec: WorkflowSpec,
    status: WorkflowStatus,
    observed: dict[str, ChildObservation],
    now: datetime,
    *,
    name: str,
    namespace: str = "default",
    uid: str = "",
    generation: int = 0,
    expected: set[str] | None = None,
) -> WorkflowDecision:
    """`observed`: the children the backend sees now, by node. `expected`: the nodes whose child the
    backend created and does not see yet (a watch lags its own creates); they count as running."""
    new = status.model_copy(deep=True)
    new.observed_generation = generation
    decision = WorkflowDecision(status=new)
    expected = expected or set()
    old_phase = status.phase
    if old_phase in ("Succeeded", "Failed", "Error"):
        return decision  # finished workflows change only through retry (handled by the backend)

    new.started_at = new.started_at or clock.fmt(now)
    started = clock.parse(new.started_at) or now

    # 1. each node's phase: from its child, or from what was decided before (Skipped, Omitted, ...)
    state = _State({}, {}, {})
    for node_id in plan.nodes:
        recorded = status.tasks.get(node_id)
        obs = observed.get(node_id)
        if obs is not None:
            summary = _summary_from_child(obs)
            phase = obs.phase
            if phase == "Succeeded":
                declared = declared_outputs(plan.tasks[plan.nodes[node_id].task])
                got = obs.outputs or {}
                if obs.outputs_error:
                    phase, summary.message = "Failed", f"OutputsTooLarge: {obs.outputs_error}"
                elif missing := [o for o in declared if o not in got]:
                    phase, summary.message = "Failed", f"MissingOutput: the script wrote no {missing}"
                summary.phase = phase
                state.outputs[node_id] = {k: got[k] for k in declared if k in got}
            state.phases[node_id] = phase
            state.summaries[node_id] = summary
        elif recorded is not None and recorded.phase in ("Running", "Pending") and node_id not in expected:
            state.phases[node_id] = "Failed"
            state.summaries[node_id] = recorded.model_copy(
                update={"phase": "Failed", "message": "ScriptRunDeleted: the child ScriptRun disappeared"}
            )
        elif recorded is not None:
            state.phases[node_id] = recorded.phase
            state.summaries[node_id] = recorded
            if recorded.outputs:
                state.outputs[node_id] = dict(recorded.outputs)
        else:
            state.phases[node_id] = "Pending"

    def task_done(task: str) -> bool:
        return all(state.phases[i] in TERMINAL for i in plan.nodes_of[task])

    running = [n for n, p in state.phases.items() if p == "Running" or (p == "Pending" and n in observed)]
    # started, but the backend has not observed the child yet (in a cluster: created, not in the watch
    # yet): it runs as far as every concurrency limit is concerned, and it is never started again
    unseen = [n for n in plan.nodes if n in expected and n not in observed and state.phases[n] == "Pending"]
    deadline_hit = bool(spec.active_deadline_seconds) and now >= started + timedelta(
        seconds=spec.active_deadline_seconds or 0
    )
    terminate = spec.shutdown == "Terminate"
    stop = spec.shutdown == "Stop" or deadline_hit
    if spec.active_deadline_seconds and not deadline_hit:
        decision.wake_at = started + timedelta(seconds=spec.active_deadline_seconds)
    if terminate or deadline_hit:
        decision.stop.extend(StopNode(n) for n in running if not plan.nodes[n].exit_handler or terminate)

    unhandled = [
        n
        for n, p in state.phases.items()
        if p == "Failed" and not plan.nodes[n].exit_handler and plan.nodes[n].task not in plan.handled_failures
    ]
    wf_values = {"workflow.name": name, "workflow.namespace": namespace, "workflow.uid": uid}
    budget = (spec.parallelism or 10**9) - len(running) - len(unseen)
    blocked_reason = None
    if spec.suspend:
        blocked_reason = "suspended"

    starting: set[str] = set()

    def unstarted(node_id: str) -> bool:
        return (
            state.phases[node_id] == "Pending"
            and node_id not in observed
            and node_id not in expected
            and node_id not in starting
            and node_id not in state.summaries
        )

    def settle(task: str, exit_phase: bool) -> None:
        nonlocal budget
        ids = plan.nodes_of[task]
        if not any(unstarted(i) for i in ids):
            return
        if not all(task_done(d) for d in plan.deps[task]):
            return
        t = plan.tasks[task]
        results = {d: _flags([state.phases[i] for i in plan.nodes_of[d]]) for d in plan.deps[task]}
        if t.depends:
            ok = expressions.evaluate_bool(expressions.rewrite_depends(t.depends), expressions.depends_context(results))
        else:
            ok = all(r["Succeeded"] or r["Skipped"] for r in results.values())
        for node_id in ids:
            if not unstarted(node_id):
                continue
            node = plan.nodes[node_id]
            if not ok:
                state.phases[node_id] = "Omitted"
                state.summaries[node_id] = TaskSummary(phase="Omitted", message="depends/dependencies not met")
                continue
            if terminate or (not exit_phase and (stop or (spec.fail_fast and unhandled))):
                why = (
                    "Terminated"
                    if terminate
                    else "DeadlineExceeded"
                    if deadline_hit
                    else "Stopped"
                    if stop
                    else f"FailFast: {unhandled[0]} failed"
                )
                state.phases[node_id] = "Omitted"
                state.summaries[node_id] = TaskSummary(phase="Omitted", message=why)
                continue
            values = _values(plan, node, state, wf_values)
            if exit_phase:
                values["workflow.status"] = main_result
                values["workflow.failures"] = json.dumps(sorted(unhandled))
            try:
                if t.when and not _eval_when(t.when, values):
                    state.phases[node_id] = "Skipped"
                    state.summaries[node_id] = TaskSummary(phase="Skipped", message=f"when {t.when!r} was false")
                    continue
                template = render_template(t, values)
            except (expressions.ExpressionError, params.MissingValue, ValueError) as err:
                state.phases[node_id] = "Failed"
                state.summaries[node_id] = TaskSummary(phase="Failed", message=f"InvalidTask: {err}")
                continue
            if blocked_reason or budget <= 0:
                continue
            budget -= 1
            decision.start.append(StartNode(node_id, template))
            starting.add(node_id)
            state.summaries[node_id] = TaskSummary(phase="Pending")

    main_result = "Succeeded"
    for _round in range(2):  # a second pass lets nodes decided in the first (Skipped...) release others
        for task in plan.main_tasks:
            settle(task, exit_phase=False)
    main_done = all(task_done(t) for t in plan.main_tasks)
    unhandled = [
        n
        for n, p in state.phases.items()
        if p == "Failed" and not plan.nodes[n].exit_handler and plan.nodes[n].task not in plan.handled_failures
    ]
    main_result = "Failed" if (unhandled or stop or terminate) else "Succeeded"
    if main_done:
        for _round in range(2):
            for task in plan.exit_order:
                settle(task, exit_phase=True)

    # 2. roll up
    total = len(plan.nodes)
    done = sum(1 for p in state.phases.values() if p in TERMINAL)
    new.progress = f"{done}/{total}"
    # only nodes that started or were decided appear: a 1000-task workflow's status stays compact
    new.tasks = {}
    for n in plan.nodes:
        found = state.summaries.get(n)
        if found is not None:
            summary = found
            new.tasks[n] = (
                summary if summary.phase == state.phases[n] else summary.model_copy(update={"phase": state.phases[n]})
            )
    all_done = done == total and not decision.start
    exit_failed = [n for n, p in state.phases.items() if p == "Failed" and plan.nodes[n].exit_handler]
    gen = generation
    if all_done:
        if terminate:
            phase, reason, message = "Failed", "Terminated", "terminated (spec.shutdown: Terminate)"
        elif deadline_hit:
            phase, reason, message = (
                "Failed",
                "DeadlineExceeded",
                f"activeDeadlineSeconds={spec.active_deadline_seconds}",
            )
        elif spec.shutdown == "Stop":
            phase, reason, message = "Failed", "Stopped", "stopped (spec.shutdown: Stop)"
        elif unhandled:
            phase, reason = "Failed", "TaskFailed"
            message = f"task {plan.nodes[unhandled[0]].display} failed" + (
                f" (and {len(unhandled) - 1} more)" if len(unhandled) > 1 else ""
            )
        elif exit_failed:
            phase, reason, message = "Failed", "ExitHandlerFailed", f"exit handler {exit_failed[0]} failed"
        else:
            phase, reason, message = "Succeeded", "Succeeded", f"{total} tasks done"
        new.phase = phase
        new.finished_at = new.finished_at or clock.fmt(now)
        finished = clock.parse(new.finished_at) or now
        new.duration = clock.human_duration((finished - started).total_seconds())
        new.message = message
        set_condition(new.conditions, "Completed", True, reason, message, now, gen)
        set_condition(
            new.conditions, "Failed", phase == "Failed", reason, message if phase == "Failed" else "", now, gen
        )
        decision.events.append(
            WorkflowEvent("Normal" if phase == "Succeeded" else "Warning", "Workflow" + phase, message)
        )
    else:
        new.phase = "Running"
        waiting = sum(1 for p in state.phases.values() if p == "Pending")
        new.message = (
            "suspended: no new task starts"
            if spec.suspend
            else f"{len(running) + len(unseen) + len(decision.start)} running, {waiting} waiting"
        )
        new.duration = clock.human_duration((now - started).total_seconds())
        if old_phase == "Pending":
            decision.events.append(WorkflowEvent("Normal", "WorkflowRunning", f"{total} tasks"))
    set_condition(
        new.conditions,
        "Suspended",
        bool(spec.suspend) and not all_done,
        "Suspended" if spec.suspend else "NotSuspended",
        "",
        now,
        gen,
    )
    for n in plan.nodes:
        before = status.tasks.get(n)
        if state.phases[n] == "Failed" and (before is None or before.phase != "Failed"):
            decision.events.append(
                WorkflowEvent("Warning", "TaskFailed", f"{plan.nodes[n].display}: {new.tasks[n].message or 'failed'}")
            )
    return decision
