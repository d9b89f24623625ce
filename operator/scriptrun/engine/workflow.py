"""One Workflow's state machine: plan + what the children say now -> next status and actions.

Pure and level-triggered like engine.run: both backends (child ScriptRuns in Kubernetes, local
runs on a laptop) observe their children, call `decide_workflow`, and carry out its actions. Every
action comes back as data (start, stop, retire a node's child, collect its pods, delete the workflow
at its TTL, Events, the next wake-up); the backends hold no policy.
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from scriptrun.engine import budget as budgets
from scriptrun.engine import clock, expressions, params
from scriptrun.engine.conditions import set_condition
from scriptrun.engine.dag import Node, Plan, aggregate_output, declared_outputs
from scriptrun.engine.observe import HEADLINE, ChildObservation
from scriptrun.engine.run import RunEvent
from scriptrun.model.scriptrun import RunTemplate
from scriptrun.model.workflow import (
    NodePhase,
    TaskSummary,
    WorkflowCost,
    WorkflowPhase,
    WorkflowSpec,
    WorkflowStatus,
    WorkflowTask,
)

DAG_FIELDS = {"name", "dependencies", "depends", "when", "matrix", "outputs", "parameters"}
__all__ = ["HEADLINE", "ChildObservation", "WorkflowDecision", "decide_workflow", "invalid_workflow"]


@dataclass(frozen=True)
class StartNode:
    """Create the node's child run from this template."""

    node: str
    template: RunTemplate


@dataclass(frozen=True)
class StopNode:
    """Tell the node's live child to stop (spec.terminate)."""

    node: str


@dataclass(frozen=True)
class RetireNode:
    """A retry runs the node again: delete its old child."""

    node: str


@dataclass(frozen=True)
class CollectPods:
    """podGC: delete the pods of the node's finished child (`node` None: every pod of the workflow,
    one request however wide it is)."""

    node: str | None


@dataclass(frozen=True)
class DeleteWorkflow:
    """The TTL strategy says the finished workflow goes now."""


WorkflowAction = StartNode | StopNode | RetireNode | CollectPods | DeleteWorkflow
WorkflowEvent = RunEvent  # the same shape: type, reason, message


@dataclass
class WorkflowDecision:
    status: WorkflowStatus
    actions: list[WorkflowAction] = field(default_factory=list)
    events: list[WorkflowEvent] = field(default_factory=list)
    wake_at: datetime | None = None

    @property
    def start(self) -> list[StartNode]:
        return [a for a in self.actions if isinstance(a, StartNode)]

    @property
    def stop(self) -> list[StopNode]:
        return [a for a in self.actions if isinstance(a, StopNode)]


@dataclass(frozen=True)
class WorkflowInputs:
    """Everything one decision reads. `observed`: the children the backend sees now, by node;
    `expected`: nodes whose child the backend created and does not see yet (a watch lags its own
    creates; they count as running); `retry_round`: the retry the user asked for (`scriptrun retry`);
    `pods_left`: nodes whose child still has pods (what podGC may collect)."""

    plan: Plan
    spec: WorkflowSpec
    status: WorkflowStatus
    observed: Mapping[str, ChildObservation]
    now: datetime
    name: str
    namespace: str = "default"
    uid: str = ""
    generation: int = 0
    expected: frozenset[str] = frozenset()
    retry_round: int = 0
    pods_left: frozenset[str] = frozenset()


_SUMMARIES: dict[int, tuple[weakref.ref[ChildObservation], TaskSummary]] = {}


def _forget(key: int, ref: weakref.ref[ChildObservation]) -> None:
    found = _SUMMARIES.get(key)
    if found is not None and found[0] is ref:  # not an entry made since for a new object at that address
        del _SUMMARIES[key]


def _summary_of(obs: ChildObservation) -> TaskSummary:
    """The summary of an observation, built once per observation object (a backend keeps the same
    object until the child changes; a 1000-node workflow used to rebuild 1000 models a pass).
    Callers never edit it in place. The cache holds the observation weakly: an entry goes with its
    observation (a child changed, or deleted with its workflow), so a finished and deleted workflow's
    summaries are not kept (they were, up to 20,000 of them: issue 11's memory after delete)."""
    key = id(obs)
    found = _SUMMARIES.get(key)
    if found is not None and found[0]() is obs:
        return found[1]
    summary = _summary_from_child(obs)
    _SUMMARIES[key] = (weakref.ref(obs, lambda ref: _forget(key, ref)), summary)
    return summary


def _summary_from_child(obs: ChildObservation) -> TaskSummary:
    usage = obs.usage or {}
    headline = {k: usage[k] for k in HEADLINE if k in usage} or None
    duration = None
    start, end = clock.parse(obs.started), clock.parse(obs.finished)
    if start and end:
        duration = clock.human_duration((end - start).total_seconds())
    waiting = not NodePhase(obs.phase).terminal and obs.reason is not None
    return TaskSummary(
        phase=obs.phase,
        attempts=obs.attempts or None,
        duration=duration,
        exit_code=obs.exit_code,
        reason=obs.reason if waiting else None,
        message=obs.message if obs.phase == "Failed" or waiting else None,
        outputs=obs.outputs,
        usage=headline,
        cost=budgets.cost_text(obs.cost),
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
    phases: dict[str, NodePhase]
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
    observed: Mapping[str, ChildObservation],
    now: datetime,
    *,
    name: str,
    namespace: str = "default",
    uid: str = "",
    generation: int = 0,
    expected: set[str] | frozenset[str] | None = None,
    retry_round: int = 0,
    pods_left: frozenset[str] = frozenset(),
) -> WorkflowDecision:
    """The next status and actions (see `decide`)."""
    inputs = WorkflowInputs(
        plan,
        spec,
        status,
        observed,
        now,
        name,
        namespace,
        uid,
        generation,
        frozenset(expected or ()),
        retry_round,
        pods_left,
    )
    return decide(inputs)


def decide(inp: WorkflowInputs) -> WorkflowDecision:
    """The named steps: a requested retry, each node's phase, the limits (deadline, shutdown), the
    schedule (main tasks, then exit handlers), the roll-up, pod GC and the TTL."""
    retried = _retry(inp)
    inp = retried.inputs if retried else inp
    decision = WorkflowDecision(status=fresh_status(inp.status))
    decision.status.observed_generation = inp.generation
    if retried:
        decision.actions.extend(retried.actions)
        decision.events.append(retried.event)
    if not WorkflowPhase(inp.status.phase).terminal:  # finished workflows change only through a retry
        _advance(inp, decision)
    _collect_pods(inp, decision)
    _expire(inp, decision)
    return decision


def fresh_status(status: WorkflowStatus) -> WorkflowStatus:
    """A copy the decision may change: the conditions list and task map are new, the summaries
    shared (the engine never edits a recorded summary in place; deep copies of a 1000-task status
    were a large share of the operator's CPU)."""
    return status.model_copy(update={"conditions": list(status.conditions), "tasks": dict(status.tasks)})


def invalid_workflow(
    status: WorkflowStatus, reason: str, message: str, now: datetime, generation: int, *, event: bool
) -> WorkflowDecision:
    """A spec the operator cannot run (fails validation, or the DAG is invalid): Failed, saying why."""
    new = fresh_status(status)
    new.phase = WorkflowPhase.FAILED
    new.message = message[:2000]
    new.observed_generation = generation
    new.finished_at = new.finished_at or clock.fmt(now)
    set_condition(new.conditions, "Failed", True, reason, message[:2000], now, generation)
    decision = WorkflowDecision(status=new)
    if event and status.phase != "Failed":
        decision.events.append(WorkflowEvent("Warning", reason, message))
    return decision


@dataclass(frozen=True)
class _Retried:
    inputs: WorkflowInputs
    actions: list[WorkflowAction]
    event: WorkflowEvent


def _retry(inp: WorkflowInputs) -> _Retried | None:
    """`scriptrun retry` on a failed workflow: keep what succeeded (or was skipped); every other
    node's child goes and the node starts again."""
    status = inp.status
    if inp.retry_round <= (status.retry_round or 0) or status.phase != "Failed":
        return None
    keep = {n: t for n, t in status.tasks.items() if t.phase in ("Succeeded", "Skipped")}
    new = fresh_status(status)
    new.tasks = keep
    new.phase = WorkflowPhase.RUNNING
    new.finished_at = None
    new.retry_round = inp.retry_round
    new.message = f"retry {inp.retry_round}: {len(status.tasks) - len(keep)} tasks run again"
    new.conditions = [c for c in new.conditions if c.type not in ("Completed", "Failed")]
    retire: list[WorkflowAction] = [RetireNode(n) for n in inp.observed if n not in keep]
    observed = {n: o for n, o in inp.observed.items() if n in keep}
    after = replace(inp, status=new, observed=observed, expected=frozenset())
    return _Retried(after, retire, WorkflowEvent("Normal", "WorkflowRetry", new.message))


def _node_phases(inp: WorkflowInputs) -> _State:
    """Each node's phase: from its child, or from what was decided before (Skipped, Omitted...)."""
    plan, status = inp.plan, inp.status
    state = _State({}, {}, {})
    for node_id in plan.nodes:
        recorded = status.tasks.get(node_id)
        obs = inp.observed.get(node_id)
        if obs is not None:
            summary = _summary_of(obs)
            phase = NodePhase(obs.phase)
            if phase == NodePhase.SUCCEEDED:
                declared = declared_outputs(plan.tasks[plan.nodes[node_id].task])
                got = obs.outputs or {}
                why = None
                if obs.outputs_error:
                    why = f"OutputsTooLarge: {obs.outputs_error}"
                elif missing := [o for o in declared if o not in got]:
                    why = f"MissingOutput: the script wrote no {missing}"
                if why is not None:
                    phase = NodePhase.FAILED
                    summary = summary.model_copy(update={"phase": phase, "message": why})
                state.outputs[node_id] = {k: got[k] for k in declared if k in got}
            state.phases[node_id] = phase
            state.summaries[node_id] = summary
        elif recorded is not None and not NodePhase(recorded.phase).terminal and node_id not in inp.expected:
            state.phases[node_id] = NodePhase.FAILED
            state.summaries[node_id] = recorded.model_copy(
                update={"phase": "Failed", "message": "ScriptRunDeleted: the child ScriptRun disappeared"}
            )
        elif recorded is not None:
            state.phases[node_id] = NodePhase(recorded.phase)
            state.summaries[node_id] = recorded
            if recorded.outputs:
                state.outputs[node_id] = dict(recorded.outputs)
        else:
            state.phases[node_id] = NodePhase.PENDING
    return state


@dataclass(frozen=True)
class _Limits:
    running: list[str]  # live children the backend sees
    unseen: list[str]  # started, not observed yet: they run as far as any limit is concerned
    deadline_hit: bool
    terminate: bool  # shutdown: Terminate
    stop: bool  # shutdown: Stop, or the deadline passed
    started: datetime
    sums: budgets.Sums  # what the children cost so far
    budget: budgets.Verdict | None  # spec.budget's verdict on it
    budget_stop: bool  # the budget is exceeded and its action is Stop: nothing new starts


def _limits(inp: WorkflowInputs, state: _State, decision: WorkflowDecision) -> _Limits:
    """What is running, and whether a deadline or a shutdown stops the workflow (and which nodes)."""
    spec, now = inp.spec, inp.now
    status = decision.status
    status.started_at = status.started_at or clock.fmt(now)
    started = clock.parse(status.started_at) or now
    running = [n for n, p in state.phases.items() if p == "Running" or (p == "Pending" and n in inp.observed)]
    unseen = [n for n in inp.plan.nodes if n in inp.expected and n not in inp.observed and state.phases[n] == "Pending"]
    deadline = started + timedelta(seconds=spec.active_deadline_seconds or 0)
    deadline_hit = bool(spec.active_deadline_seconds) and now >= deadline
    terminate = spec.shutdown == "Terminate"
    if spec.active_deadline_seconds and not deadline_hit:
        decision.wake_at = deadline
    if terminate or deadline_hit:
        for n in running:
            child = inp.observed.get(n)  # (a child not seen yet is stopped once it is)
            if (terminate or not inp.plan.nodes[n].exit_handler) and child is not None and not child.stopping:
                decision.actions.append(StopNode(n))
    sums = budgets.add_up(child.cost for child in inp.observed.values())
    remaining = sum(1 for p in state.phases.values() if not p.terminal)
    verdict = budgets.judge(spec.budget, sums, remaining) if spec.budget else None
    budget_stop = verdict is not None and verdict.exceeded and spec.budget is not None and spec.budget.action == "Stop"
    stop = spec.shutdown == "Stop" or deadline_hit
    return _Limits(running, unseen, deadline_hit, terminate, stop, started, sums, verdict, budget_stop)


BUDGET_OMITTED = "BudgetExceeded: spec.budget.action is Stop"


def _budget_omitted(state: _State) -> bool:
    """Whether the budget's Stop kept a task from starting."""
    return any(s.phase == NodePhase.OMITTED and s.message == BUDGET_OMITTED for s in state.summaries.values())


def _unhandled(plan: Plan, state: _State) -> list[str]:
    """Failed nodes that fail the workflow: not exit handlers, not caught by a `depends` on failure."""
    return [
        n
        for n, p in state.phases.items()
        if p == "Failed" and not plan.nodes[n].exit_handler and plan.nodes[n].task not in plan.handled_failures
    ]


class _Scheduler:
    """Settles tasks whose dependencies are done: omitted, skipped (when), failed (invalid), or
    started while the parallelism budget lasts."""

    def __init__(self, inp: WorkflowInputs, state: _State, limits: _Limits, decision: WorkflowDecision) -> None:
        self.inp, self.state, self.limits, self.decision = inp, state, limits, decision
        self.plan = inp.plan
        self.budget = (inp.spec.parallelism or 10**9) - len(limits.running) - len(limits.unseen)
        self.starting: set[str] = set()
        self.unhandled = _unhandled(self.plan, state)
        self.main_result = "Succeeded"
        self.wf_values = {"workflow.name": inp.name, "workflow.namespace": inp.namespace, "workflow.uid": inp.uid}

    def task_done(self, task: str) -> bool:
        return all(self.state.phases[i].terminal for i in self.plan.nodes_of[task])

    def unstarted(self, node_id: str) -> bool:
        return (
            self.state.phases[node_id] == "Pending"
            and node_id not in self.inp.observed
            and node_id not in self.inp.expected
            and node_id not in self.starting
            and node_id not in self.state.summaries
        )

    def run(self) -> None:
        plan = self.plan
        # only tasks with a node still to settle (in a wide DAG most are done or running)
        open_main = [t for t in plan.main_tasks if any(self.unstarted(i) for i in plan.nodes_of[t])]
        for _round in range(2):  # a second pass lets nodes decided in the first (Skipped...) release others
            for task in open_main:
                self.settle(task, exit_phase=False)
        if not all(self.task_done(t) for t in plan.main_tasks):
            return
        self.unhandled = _unhandled(plan, self.state)
        stopped = self.limits.stop or self.limits.terminate or _budget_omitted(self.state)
        self.main_result = "Failed" if (self.unhandled or stopped) else "Succeeded"
        for _round in range(2):
            for task in plan.exit_order:
                self.settle(task, exit_phase=True)

    def _met(self, task: str) -> bool:
        plan, state = self.plan, self.state
        results = {d: _flags([state.phases[i] for i in plan.nodes_of[d]]) for d in plan.deps[task]}
        depends = plan.tasks[task].depends
        if depends:
            return expressions.evaluate_bool(expressions.rewrite_depends(depends), expressions.depends_context(results))
        return all(r["Succeeded"] or r["Skipped"] for r in results.values())

    def _omit_reason(self, exit_phase: bool) -> str | None:
        limits, spec = self.limits, self.inp.spec
        if limits.terminate:
            return "Terminated"
        if exit_phase:
            return None
        if limits.deadline_hit:
            return "DeadlineExceeded"
        if limits.stop:
            return "Stopped"
        if limits.budget_stop:
            return BUDGET_OMITTED
        if spec.fail_fast and self.unhandled:
            return f"FailFast: {self.unhandled[0]} failed"
        return None

    def _decide(self, node_id: str, phase: NodePhase, message: str) -> None:
        self.state.phases[node_id] = phase
        self.state.summaries[node_id] = TaskSummary(phase=phase, message=message)

    def settle(self, task: str, exit_phase: bool) -> None:
        ids = self.plan.nodes_of[task]
        if not any(self.unstarted(i) for i in ids) or not all(self.task_done(d) for d in self.plan.deps[task]):
            return
        ok = self._met(task)
        for node_id in ids:
            if self.unstarted(node_id):
                self._settle_node(node_id, ok, exit_phase)

    def _settle_node(self, node_id: str, ok: bool, exit_phase: bool) -> None:
        if not ok:
            self._decide(node_id, NodePhase.OMITTED, "depends/dependencies not met")
            return
        omit = self._omit_reason(exit_phase)
        if omit is not None:
            self._decide(node_id, NodePhase.OMITTED, omit)
            return
        node = self.plan.nodes[node_id]
        task = self.plan.tasks[node.task]
        values = _values(self.plan, node, self.state, self.wf_values)
        if exit_phase:
            values["workflow.status"] = self.main_result
            values["workflow.failures"] = json.dumps(sorted(self.unhandled))
        try:
            if task.when and not _eval_when(task.when, values):
                self._decide(node_id, NodePhase.SKIPPED, f"when {task.when!r} was false")
                return
            template = render_template(task, values)
        except (expressions.ExpressionError, params.MissingValue, ValueError) as err:
            self._decide(node_id, NodePhase.FAILED, f"InvalidTask: {err}")
            return
        if self.inp.spec.suspend or self.budget <= 0:
            return
        self.budget -= 1
        self.decision.actions.append(StartNode(node_id, template))
        self.starting.add(node_id)
        self.state.summaries[node_id] = TaskSummary(phase=NodePhase.PENDING)


def _advance(inp: WorkflowInputs, decision: WorkflowDecision) -> None:
    state = _node_phases(inp)
    limits = _limits(inp, state, decision)
    _Scheduler(inp, state, limits, decision).run()
    _roll_up(inp, state, limits, decision)


def _roll_up(inp: WorkflowInputs, state: _State, limits: _Limits, decision: WorkflowDecision) -> None:
    """Progress, the compact task map, the phase (and why), conditions and Events."""
    plan, spec, now, gen = inp.plan, inp.spec, inp.now, inp.generation
    new = decision.status
    total = len(plan.nodes)
    done = sum(1 for p in state.phases.values() if p.terminal)
    new.progress = f"{done}/{total}"
    # only nodes that started or were decided appear: a 1000-task workflow's status stays compact
    new.tasks = {}
    for n in plan.nodes:
        summary = state.summaries.get(n)
        if summary is not None:
            phase = state.phases[n]
            new.tasks[n] = summary if summary.phase == phase else summary.model_copy(update={"phase": phase})
    all_done = done == total and not decision.start
    if all_done:
        result, reason, message = _result(inp, state, limits)
        new.phase = WorkflowPhase(result)
        new.finished_at = new.finished_at or clock.fmt(now)
        finished = clock.parse(new.finished_at) or now
        new.duration = clock.human_duration((finished - limits.started).total_seconds())
        new.message = message
        set_condition(new.conditions, "Completed", True, reason, message, now, gen)
        failed = result == "Failed"
        set_condition(new.conditions, "Failed", failed, reason, message if failed else "", now, gen)
        decision.events.append(WorkflowEvent("Warning" if failed else "Normal", "Workflow" + result, message))
    else:
        new.phase = WorkflowPhase.RUNNING
        waiting = sum(1 for p in state.phases.values() if p == "Pending")
        live = len(limits.running) + len(limits.unseen) + len(decision.start)
        new.message = "suspended: no new task starts" if spec.suspend else f"{live} running, {waiting} waiting"
        new.duration = clock.human_duration((now - limits.started).total_seconds())
        if inp.status.phase == "Pending":
            decision.events.append(WorkflowEvent("Normal", "WorkflowRunning", f"{total} tasks"))
    _roll_up_cost(inp, limits, decision, total - done)
    suspended = bool(spec.suspend) and not all_done
    set_condition(new.conditions, "Suspended", suspended, "Suspended" if spec.suspend else "NotSuspended", "", now, gen)
    for n in plan.nodes:
        before = inp.status.tasks.get(n)
        if state.phases[n] == "Failed" and (before is None or before.phase != "Failed"):
            message = f"{plan.nodes[n].display}: {new.tasks[n].message or 'failed'}"
            decision.events.append(WorkflowEvent("Warning", "TaskFailed", message))


def _roll_up_cost(inp: WorkflowInputs, limits: _Limits, decision: WorkflowDecision, remaining: int) -> None:
    """status.cost (the children's costs so far) and the budget's condition, with a Warning Event when
    the budget is first exceeded or first projected to be."""
    new = decision.status
    summary = budgets.summary(limits.sums, remaining)
    new.cost = WorkflowCost.model_validate(summary) if summary else None
    verdict = limits.budget
    if verdict is None:
        return
    before = next((c for c in inp.status.conditions if c.type == budgets.CONDITION), None)
    set_condition(
        new.conditions, budgets.CONDITION, verdict.exceeded, verdict.reason, verdict.message, inp.now, inp.generation
    )
    if verdict.warns and (before is None or before.reason != verdict.reason):
        decision.events.append(WorkflowEvent("Warning", verdict.reason, verdict.message))


def _result(inp: WorkflowInputs, state: _State, limits: _Limits) -> tuple[str, str, str]:
    """A finished workflow's (phase, reason, message)."""
    plan, spec = inp.plan, inp.spec
    unhandled = _unhandled(plan, state)
    exit_failed = [n for n, p in state.phases.items() if p == "Failed" and plan.nodes[n].exit_handler]
    if limits.terminate:
        return "Failed", "Terminated", "terminated (spec.shutdown: Terminate)"
    if limits.deadline_hit:
        return "Failed", "DeadlineExceeded", f"activeDeadlineSeconds={spec.active_deadline_seconds}"
    if spec.shutdown == "Stop":
        return "Failed", "Stopped", "stopped (spec.shutdown: Stop)"
    if _budget_omitted(state) and limits.budget is not None:
        return "Failed", "BudgetExceeded", f"stopped: {limits.budget.message} (spec.budget.action: Stop)"
    if unhandled:
        more = f" (and {len(unhandled) - 1} more)" if len(unhandled) > 1 else ""
        return "Failed", "TaskFailed", f"task {plan.nodes[unhandled[0]].display} failed" + more
    if exit_failed:
        return "Failed", "ExitHandlerFailed", f"exit handler {exit_failed[0]} failed"
    return "Succeeded", "Succeeded", f"{len(plan.nodes)} tasks done"


def _collect_pods(inp: WorkflowInputs, decision: WorkflowDecision) -> None:
    """podGC (Argo's strategies): the pods of finished children, when the strategy says so."""
    if inp.spec.pod_gc is None:
        return
    strategy = inp.spec.pod_gc.strategy
    phase = decision.status.phase
    retired = {a.node for a in decision.actions if isinstance(a, RetireNode)}
    left = {node: child for node, child in inp.observed.items() if node in inp.pods_left and node not in retired}
    if not left:
        return
    if strategy in ("OnWorkflowCompletion", "OnWorkflowSuccess"):
        if phase == "Succeeded" or (strategy == "OnWorkflowCompletion" and phase.terminal):
            decision.actions.append(CollectPods(None))
        return
    for node, child in left.items():
        if child.phase == "Succeeded" or (strategy == "OnPodCompletion" and child.phase == "Failed"):
            decision.actions.append(CollectPods(node))


def _expire(inp: WorkflowInputs, decision: WorkflowDecision) -> None:
    """ttlStrategy: delete the finished workflow when due, else wake then."""
    ttl, status = inp.spec.ttl_strategy, decision.status
    if ttl is None or not WorkflowPhase(status.phase).terminal:
        return
    seconds = ttl.seconds_after_success if status.phase == "Succeeded" else ttl.seconds_after_failure
    if seconds is None:
        seconds = ttl.seconds_after_completion
    finished = clock.parse(status.finished_at)
    if seconds is None or finished is None:
        return
    due = finished + timedelta(seconds=seconds)
    if inp.now >= due:
        decision.actions.append(DeleteWorkflow())
    elif decision.wake_at is None or due < decision.wake_at:
        decision.wake_at = due
