"""The DAG engine: validation messages, the expression language (hostile input included), and the
workflow state machine driven by a simulated backend."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from scriptrun.engine import expressions
from scriptrun.engine.dag import PlanError, build_plan
from scriptrun.engine.workflow import ChildObservation, decide_workflow
from scriptrun.model.workflow import WorkflowSpec, WorkflowStatus

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def task(name: str, **kw: Any) -> dict[str, Any]:
    return {"name": name, "script": {"source": f"print('{name}')"}, **kw}


def spec(tasks: list[dict[str, Any]], **kw: Any) -> WorkflowSpec:
    return WorkflowSpec.model_validate({"tasks": tasks, **kw})


def errors_of(s: WorkflowSpec, **kw: Any) -> list[str]:
    with pytest.raises(PlanError) as info:
        build_plan(s, **kw)
    return info.value.errors


# -- validation ------------------------------------------------------------------------------------


def test_unknown_dependency_and_cycle_with_its_path() -> None:
    errs = errors_of(
        spec(
            [
                task("a", dependencies=["c"]),
                task("b", dependencies=["a"]),
                task("c", dependencies=["b"]),
                task("d", dependencies=["nope"]),
            ]
        )
    )
    assert "task d: dependencies: task 'nope' does not exist" in errs
    assert "dependency cycle: a -> c -> b -> a" in errs


def test_duplicate_names_self_dependency_and_bad_depends() -> None:
    errs = errors_of(
        spec([task("a"), task("b", dependencies=["b"]), task("c", depends="a.Succeeded &&")]),
    )
    assert "task b: dependencies: a task cannot depend on itself" in errs
    assert any(e.startswith("task c: depends: invalid expression") for e in errs)
    s = spec([task("a")], onExit=[task("a")])
    assert "spec.onExit: duplicate task name 'a'" in errors_of(s)


def test_placeholders_must_point_somewhere() -> None:
    s = spec(
        [
            task("a", outputs={"parameters": [{"name": "rows"}]}),
            task("b", args=["{{tasks.a.outputs.parameters.rows}}"]),  # a is not upstream
            task(
                "c",
                dependencies=["a"],
                args=[
                    "{{tasks.a.outputs.parameters.cols}}",
                    "{{workflow.parameters.x}}",
                    "{{matrix.fmt}}",
                    "{{workflow.status}}",
                ],
            ),
        ]
    )
    errs = errors_of(s)
    assert (
        "task b: args[0]: {{tasks.a.outputs.parameters.rows}}: task 'a' is not upstream of this task "
        "(add it to dependencies)" in errs
    )
    assert "task c: args[0]: {{tasks.a.outputs.parameters.cols}}: task 'a' declares no output 'cols'" in errs
    assert "task c: args[1]: {{workflow.parameters.x}}: no such workflow parameter" in errs
    assert "task c: args[2]: {{matrix.fmt}}: no such matrix parameter" in errs
    assert "task c: args[3]: {{workflow.status}}: only exit handlers can read the workflow's result" in errs


def test_matrix_cap_and_parameters() -> None:
    big = {
        "params": [
            {"name": "x", "values": [str(i) for i in range(20)]},
            {"name": "y", "values": [str(i) for i in range(20)]},
        ]
    }
    assert "task m: matrix has 400 combinations; the cap is 256" in errors_of(spec([task("m", matrix=big)]))
    s = spec([task("a")], arguments={"parameters": [{"name": "rows"}]})
    assert any("spec.arguments.parameters[rows]: no value" in e for e in errors_of(s))
    assert build_plan(s, overrides={"rows": "3"}).parameters == {"rows": "3"}
    assert "parameter 'zz' is not declared in spec.arguments.parameters" in errors_of(
        s, overrides={"zz": "1", "rows": "1"}
    )


def test_hostile_expressions_are_refused_not_crashing() -> None:
    deep = "(" * 200 + "a.Succeeded" + ")" * 200
    errs = errors_of(spec([task("a"), task("b", depends=deep)]))
    assert any("nests deeper than 32 levels" in e for e in errs)
    with pytest.raises(expressions.ExpressionError, match="at most 4096"):
        expressions.check("1 == 1 && " * 600 + "true")
    with pytest.raises(expressions.ExpressionError):
        expressions.evaluate_bool("__import__('os').system('true')", {})
    with pytest.raises(expressions.ExpressionError, match="not true or false"):
        expressions.evaluate_bool("1 + 2", {})
    # quotes do not fool the nesting count
    expressions.check("'((((((((((((((((((((((((((((((((((((((' == 'x'")


def test_names_that_break_label_rules_are_refused_by_the_model() -> None:
    from pydantic import ValidationError

    for bad in ["Upper", "under_score", "-lead", "x" * 51, "dots.in.name"]:
        with pytest.raises(ValidationError):
            spec([task(bad)])


# -- the state machine, with a simulated backend -----------------------------------------------------


def simulate(
    s: WorkflowSpec,
    results: dict[str, Any] | None = None,
    *,
    max_steps: int = 50,
    overrides: dict[str, str] | None = None,
    concurrency: list[int] | None = None,
    starts: list[tuple[str, Any]] | None = None,
) -> WorkflowStatus:
    """Run to the end: every started node finishes on the next step, as `results` says
    (default: Succeeded; a dict gives phase/exit/outputs)."""
    plan = build_plan(s, overrides=overrides)
    status = WorkflowStatus()
    observed: dict[str, ChildObservation] = {}
    now = T0
    results = results or {}
    for _ in range(max_steps):
        d = decide_workflow(plan, s, status, observed, now, name="wf")
        status = d.status
        if concurrency is not None:
            concurrency.append(sum(1 for o in observed.values() if o.phase == "Running") + len(d.start))
        for start in d.start:
            if starts is not None:
                starts.append((start.node, start.template))
            observed[start.node] = ChildObservation(phase="Running", attempts=1)
        if status.phase in ("Succeeded", "Failed"):
            return status
        now += timedelta(seconds=1)
        for node, obs in list(observed.items()):
            if obs.phase == "Running" and not any(st.node == node for st in d.start):
                r = results.get(node, {})
                observed[node] = ChildObservation(
                    phase=r.get("phase", "Succeeded"),
                    attempts=1,
                    exit_code=r.get("exit", 0),
                    outputs=r.get("outputs"),
                    started="2026-01-01T00:00:00Z",
                    finished="2026-01-01T00:01:05Z",
                    usage={
                        "executionTimeSeconds": 65.123,
                        "cpuAvgPercent": 97.5,
                        "cpuMaxPercent": 100.0,
                        "memoryMaxMb": 123.45,
                        "userTimeSeconds": 60.1,
                    },
                )
    raise AssertionError(f"did not finish: {status}")


def test_diamond_with_outputs_passed_along() -> None:
    s = spec(
        [
            task("a", outputs={"parameters": [{"name": "n"}]}),
            task("b", dependencies=["a"], args=["{{tasks.a.outputs.parameters.n}}"]),
            task("c", dependencies=["a"]),
            task("d", dependencies=["b", "c"]),
        ]
    )
    starts: list[tuple[str, Any]] = []
    status = simulate(s, {"a": {"outputs": {"n": "42"}}}, starts=starts)
    assert status.phase == "Succeeded" and status.progress == "4/4"
    assert dict(starts)["b"].args == ["42"]
    assert [n for n, _ in starts].index("d") == 3


def test_missing_declared_output_fails_the_task() -> None:
    s = spec([task("a", outputs={"parameters": [{"name": "n"}]})])
    status = simulate(s)
    assert status.phase == "Failed"
    assert status.tasks["a"].message and status.tasks["a"].message.startswith("MissingOutput")


def test_when_skips_and_depends_routes_around_failure() -> None:
    s = spec(
        [
            task("a", outputs={"parameters": [{"name": "mode"}]}),
            task("fast", dependencies=["a"], when="'{{tasks.a.outputs.parameters.mode}}' == 'fast'"),
            task("slow", dependencies=["a"], when="tasks.a.outputs.parameters.mode == 'slow'"),
            task("flaky", dependencies=["a"]),
            task("cleanup", depends="flaky.Failed"),
            task("after", depends="(fast.Succeeded || fast.Skipped) && !slow.Failed"),
        ]
    )
    status = simulate(s, {"a": {"outputs": {"mode": "fast"}}, "flaky": {"phase": "Failed", "exit": 3}})
    phases = {n: t.phase for n, t in status.tasks.items()}
    assert phases == {
        "a": "Succeeded",
        "fast": "Succeeded",
        "slow": "Skipped",
        "flaky": "Failed",
        "cleanup": "Succeeded",
        "after": "Succeeded",
    }
    # flaky's failure is handled by cleanup's depends: the workflow succeeds
    assert status.phase == "Succeeded"


def test_fail_fast_omits_the_rest_and_exit_handler_still_runs() -> None:
    s = spec(
        [task("a"), task("b", dependencies=["a"]), task("c")],
        onExit=[task("notify", args=["{{workflow.status}}"])],
        parallelism=1,
    )
    starts: list[tuple[str, Any]] = []
    status = simulate(s, {"a": {"phase": "Failed", "exit": 1}}, starts=starts)
    assert status.phase == "Failed"
    assert {n: t.phase for n, t in status.tasks.items()}["b"] == "Omitted"
    assert dict(starts)["notify"].args == ["Failed"]
    assert any(c.type == "Failed" and c.reason == "TaskFailed" for c in status.conditions)


def test_parallelism_is_respected() -> None:
    s = spec([task(f"t{i}") for i in range(10)], parallelism=3)
    seen: list[int] = []
    assert simulate(s, concurrency=seen).phase == "Succeeded"
    assert max(seen) == 3


def test_matrix_fans_out_and_aggregates_outputs() -> None:
    s = spec(
        [
            task(
                "t",
                matrix={"params": [{"name": "f", "values": ["csv", "json"]}, {"name": "z", "values": ["1", "2"]}]},
                args=["{{matrix.f}}-{{matrix.z}}"],
                outputs={"parameters": [{"name": "b"}]},
            ),
            task("load", dependencies=["t"], args=["{{tasks.t.outputs.parameters.b}}"]),
        ]
    )
    results = {f"t-{i}": {"outputs": {"b": str(i)}} for i in range(4)}
    starts: list[tuple[str, Any]] = []
    assert simulate(s, results, starts=starts).phase == "Succeeded"
    got = dict(starts)
    assert [got[f"t-{i}"].args[0] for i in range(4)] == ["csv-1", "csv-2", "json-1", "json-2"]
    assert json.loads(got["load"].args[0]) == ["0", "1", "2", "3"]


def test_suspend_starts_nothing_and_stop_terminate() -> None:
    s = spec([task("a"), task("b", dependencies=["a"])], suspend=True)
    plan = build_plan(s)
    d = decide_workflow(plan, s, WorkflowStatus(), {}, T0, name="wf")
    assert d.start == [] and d.status.phase == "Running"
    assert any(c.type == "Suspended" and c.status == "True" for c in d.status.conditions)

    s = spec([task("a"), task("b", dependencies=["a"])], shutdown="Stop", onExit=[task("e")])
    running = {"a": ChildObservation(phase="Running")}
    d = decide_workflow(build_plan(s), s, WorkflowStatus(phase="Running"), running, T0, name="wf")
    assert d.stop == []  # Stop lets a finish
    done = {"a": ChildObservation(phase="Succeeded")}
    d = decide_workflow(build_plan(s), s, d.status, done, T0, name="wf")
    assert d.status.tasks["b"].phase == "Omitted" and [x.node for x in d.start] == ["e"]

    s = spec([task("a"), task("b", dependencies=["a"])], shutdown="Terminate", onExit=[task("e")])
    d = decide_workflow(build_plan(s), s, WorkflowStatus(phase="Running"), running, T0, name="wf")
    assert [x.node for x in d.stop] == ["a"]
    d = decide_workflow(build_plan(s), s, d.status, {"a": ChildObservation(phase="Failed")}, T0, name="wf")
    assert d.status.phase == "Failed" and d.start == []
    assert any(c.reason == "Terminated" for c in d.status.conditions)


def test_deleted_child_fails_with_a_reason_not_stuck() -> None:
    s = spec([task("a")])
    plan = build_plan(s)
    d = decide_workflow(plan, s, WorkflowStatus(), {}, T0, name="wf")
    assert [x.node for x in d.start] == ["a"]
    d2 = decide_workflow(plan, s, d.status, {}, T0, name="wf", expected={"a"})  # created, not yet seen
    assert d2.status.phase == "Running"
    d3 = decide_workflow(plan, s, d2.status, {}, T0, name="wf")  # gone
    assert d3.status.phase == "Failed" and "ScriptRunDeleted" in (d3.status.tasks["a"].message or "")


def test_a_pending_childs_reason_shows_in_the_task_summary() -> None:
    s = spec([task("a")])
    plan = build_plan(s)
    d = decide_workflow(plan, s, WorkflowStatus(), {}, T0, name="wf")
    why = "attempt 1 pending: Unschedulable: 0/1 nodes are available: 1 node(s) didn't match Pod's node affinity"
    stuck = {"a": ChildObservation(phase="Pending", attempts=1, reason="Unschedulable", message=why)}
    d = decide_workflow(plan, s, d.status, stuck, T0 + timedelta(seconds=1), name="wf")
    summary = d.status.tasks["a"]
    assert (summary.phase, summary.reason, summary.message) == ("Pending", "Unschedulable", why)
    assert summary.dump()["reason"] == "Unschedulable"
    # a retry that waits (the child is Running, its attempt 2 pending) is explained the same way
    retrying = {"a": ChildObservation(phase="Running", attempts=2, reason="ErrImagePull", message="attempt 2 pending")}
    d = decide_workflow(plan, s, d.status, retrying, T0 + timedelta(seconds=2), name="wf")
    assert (d.status.tasks["a"].reason, d.status.tasks["a"].message) == ("ErrImagePull", "attempt 2 pending")
    running = {"a": ChildObservation(phase="Running", attempts=2)}
    d = decide_workflow(plan, s, d.status, running, T0 + timedelta(seconds=3), name="wf")
    assert (d.status.tasks["a"].reason, d.status.tasks["a"].message) == (None, None)


def test_deadline() -> None:
    s = spec([task("a")], activeDeadlineSeconds=10)
    plan = build_plan(s)
    running = {"a": ChildObservation(phase="Running")}
    d = decide_workflow(
        plan,
        s,
        WorkflowStatus(phase="Running", started_at="2026-01-01T00:00:00Z"),
        running,
        T0 + timedelta(seconds=11),
        name="wf",
    )
    assert [x.node for x in d.stop] == ["a"]


def test_status_of_a_1000_task_workflow_stays_small() -> None:
    layers = [[f"l{layer}-t{i}" for i in range(100)] for layer in range(10)]
    tasks = []
    for n, layer in enumerate(layers):
        for name in layer:
            tasks.append(
                task(name, dependencies=layers[n - 1][:3] if n else None, outputs={"parameters": [{"name": "rows"}]})
            )
    s = spec(tasks)
    results = {name: {"outputs": {"rows": "1234567"}} for layer in layers for name in layer}
    status = simulate(s, results, max_steps=40)
    assert status.phase == "Succeeded" and status.progress == "1000/1000"
    size = len(json.dumps(status.dump()).encode())
    print(f"status of the 1000-task workflow: {size} bytes")
    assert size < 256 * 1024, size
    assert status.tasks["l9-t99"].usage == {"cpuAvgPercent": 97.5, "memoryMaxMb": 123.45}
    assert status.tasks["l9-t99"].duration == "1m5s"


def simulate_with_lag(s: WorkflowSpec, *, max_steps: int = 60) -> tuple[WorkflowStatus, list[int], list[str]]:
    """Like a cluster: a child created in one decision is absent from the next observation (the watch
    has not shown it yet); the backend passes it as `expected` meanwhile. A child runs for two steps.
    Returns the final status, the number of children really live after each decision, the starts."""
    plan = build_plan(s)
    status = WorkflowStatus()
    actual: dict[str, ChildObservation] = {}  # what exists, whether the backend sees it or not
    born: dict[str, int] = {}
    visible: set[str] = set()
    live: list[int] = []
    starts: list[str] = []
    for step in range(max_steps):
        observed = {n: actual[n] for n in visible}
        expected = set(actual) - visible
        d = decide_workflow(plan, s, status, observed, T0 + timedelta(seconds=step), name="wf", expected=expected)
        status = d.status
        for start in d.start:
            assert start.node not in actual, f"{start.node} started twice"
            actual[start.node] = ChildObservation(phase="Running", attempts=1)
            born[start.node] = step
            starts.append(start.node)
        live.append(sum(1 for o in actual.values() if o.phase == "Running"))
        if status.phase in ("Succeeded", "Failed"):
            return status, live, starts
        visible |= {n for n, b in born.items() if b < step}  # the watch shows it one decision late
        for node, b in born.items():
            if b <= step - 1 and actual[node].phase == "Running":
                actual[node] = ChildObservation(phase="Succeeded", attempts=1, exit_code=0)
    raise AssertionError(f"did not finish: {status}")


@pytest.mark.parametrize("parallelism", [1, 2, 5])
def test_parallelism_counts_children_created_but_not_yet_observed(parallelism: int) -> None:
    s = spec([task(f"t{i:02d}") for i in range(12)], parallelism=parallelism)
    status, live, starts = simulate_with_lag(s)
    assert status.phase == "Succeeded" and status.progress == "12/12"
    assert sorted(starts) == [f"t{i:02d}" for i in range(12)]
    assert max(live) == parallelism, live


def test_an_unseen_child_holds_its_slot_and_shows_as_running() -> None:
    s = spec([task("a"), task("b"), task("c")], parallelism=2)
    plan = build_plan(s)
    d = decide_workflow(plan, s, WorkflowStatus(), {}, T0, name="wf")
    assert [x.node for x in d.start] == ["a", "b"]
    # the backend created a and b; its next look sees neither yet
    d = decide_workflow(plan, s, d.status, {}, T0, name="wf", expected={"a", "b"})
    assert d.start == [] and (d.status.message or "").startswith("2 running,")
    assert {n: t.phase for n, t in d.status.tasks.items()} == {"a": "Pending", "b": "Pending"}
    # a appears (and is done), b still unseen: one slot frees, c starts
    done = {"a": ChildObservation(phase="Succeeded")}
    d = decide_workflow(plan, s, d.status, done, T0, name="wf", expected={"b"})
    assert [x.node for x in d.start] == ["c"]


def test_a_cycle_through_the_longest_chain_allowed_is_found_without_recursion() -> None:
    from scriptrun.model.workflow import MAX_TASKS

    tasks = [task(f"t{i}", dependencies=[f"t{(i + 1) % MAX_TASKS}"]) for i in range(MAX_TASKS)]
    (error,) = errors_of(spec(tasks))
    assert error.startswith("dependency cycle: t0 -> t1 -> t2") and error.endswith("-> t1999 -> t0")
    chain = [task("t0")] + [task(f"t{i}", dependencies=[f"t{i - 1}"]) for i in range(1, MAX_TASKS)]
    assert len(build_plan(spec(chain)).nodes) == MAX_TASKS
