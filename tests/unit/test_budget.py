"""Costs added up, budgets judged, and disrupted pods retried without counting: the pure engine (the
same code the operator and the local backend run)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from scriptrun.engine import budget as budgets
from scriptrun.engine.dag import build_plan
from scriptrun.engine.observe import AttemptObservation, observe_child, observe_pod
from scriptrun.engine.run import RunInputs, StartAttempt, decide, decide_run, judge_budget
from scriptrun.engine.workflow import ChildObservation, WorkflowEvent, decide_workflow
from scriptrun.model.scriptrun import Budget, RunCost, RunPhase, ScriptRunSpec, ScriptRunStatus
from scriptrun.model.workflow import WorkflowSpec, WorkflowStatus

T0 = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def usd(amount: str) -> dict[str, str]:
    return {"amount": amount, "currency": "USD"}


# -- sums and verdicts -----------------------------------------------------------------------------


def test_sums_per_currency_and_the_projection() -> None:
    sums = budgets.add_up([usd("0.4"), None, usd("0.2"), {"byCurrency": {"EUR": "1", "USD": "0.1"}}])
    assert sums.by_currency == {"EUR": Decimal(1), "USD": Decimal("0.7")} and sums.priced == 3
    assert budgets.summary(sums, 2) == {"tasks": 3, "byCurrency": {"EUR": "1.000000", "USD": "0.700000"}}
    one = budgets.add_up([usd("0.4"), usd("0.2")])
    # 0.6 so far, 0.3 a run on average, two to go
    assert budgets.summary(one, 2) == {
        "tasks": 2,
        "amount": "0.600000",
        "currency": "USD",
        "display": "0.6000 USD",
        "projected": "1.200000",
    }
    assert budgets.add_up([None, {"amount": "x", "currency": "USD"}]).priced == 0


@pytest.mark.parametrize(
    ("spent", "remaining", "exceeded", "reason"),
    [
        (["0.40"], 0, False, "WithinBudget"),
        (["0.40"], 2, False, "ProjectedOverBudget"),  # 0.40 + 2 x 0.40 > 1.00
        (["0.60", "0.41"], 0, True, "BudgetExceeded"),
        (["1.00"], 0, False, "WithinBudget"),  # at the limit is not past it
    ],
)
def test_the_verdict(spent: list[str], remaining: int, exceeded: bool, reason: str) -> None:
    verdict = budgets.judge(Budget(amount="1.00", currency="USD"), budgets.add_up(map(usd, spent)), remaining)
    assert (verdict.exceeded, verdict.reason) == (exceeded, reason)
    assert "of the 1.00 USD budget" in verdict.message or "over the 1.00 USD budget" in verdict.message


def test_another_currency_is_not_converted_but_said() -> None:
    verdict = budgets.judge(Budget(amount="1", currency="USD"), budgets.add_up([{"amount": "5", "currency": "EUR"}]))
    assert not verdict.exceeded and verdict.reason == "CurrencyMismatch"
    assert "EUR" in verdict.message and "1 USD" in verdict.message


def test_a_budget_is_refused_naming_the_field() -> None:
    with pytest.raises(ValueError, match="amount"):
        Budget.model_validate({"amount": "-1", "currency": "USD"})
    with pytest.raises(ValueError, match="currency"):
        Budget.model_validate({"amount": "1", "currency": "usd"})


# -- a workflow adds its tasks' costs and keeps to its budget ---------------------------------------


def chain(n: int, **kw: Any) -> WorkflowSpec:
    tasks = [{"name": "t0", "script": {"source": "print()"}}]
    tasks += [{"name": f"t{i}", "script": {"source": "print()"}, "dependencies": [f"t{i - 1}"]} for i in range(1, n)]
    return WorkflowSpec.model_validate({"tasks": tasks, **kw})


def run_chain(spec: WorkflowSpec, costs: dict[str, dict[str, str]]) -> tuple[WorkflowStatus, list[WorkflowEvent]]:
    """Each started task finishes on the next step, priced as `costs` says (as its child's status)."""
    plan = build_plan(spec)
    status, observed, events = WorkflowStatus(), dict[str, ChildObservation](), list[WorkflowEvent]()
    now = T0
    for _ in range(30):
        d = decide_workflow(plan, spec, status, observed, now, name="wf")
        status = d.status
        events += d.events
        if status.phase in ("Succeeded", "Failed"):
            return status, events
        for node, obs in list(observed.items()):
            if obs.phase == "Running":
                child = {"phase": "Succeeded", "attempts": [{"exitCode": 0}], "cost": costs.get(node)}
                observed[node] = observe_child(child)
        for start in d.start:
            observed[start.node] = ChildObservation(phase="Running", attempts=1)
        now += timedelta(seconds=1)
    raise AssertionError(f"did not finish: {status}")


def test_a_workflow_sums_its_tasks_and_shows_each() -> None:
    status, _ = run_chain(chain(3), {"t0": usd("0.1"), "t1": usd("0.25"), "t2": usd("0.000004")})
    assert status.phase == "Succeeded"
    assert status.cost is not None and status.cost.amount == "0.350004" and status.cost.display == "0.3500 USD"
    assert status.cost.tasks == 3 and status.cost.projected is None
    assert status.tasks["t1"].cost == "0.250000 USD"
    assert all(c.type != budgets.CONDITION for c in status.conditions)  # no budget, no condition


def test_a_stop_budget_starts_nothing_more_once_spent() -> None:
    spec = chain(4, budget={"amount": "1.00", "currency": "USD", "action": "Stop"})
    status, events = run_chain(spec, {f"t{i}": usd("0.40") for i in range(4)})
    # t0 (0.40, projected 1.60): a warning; t2 brings it to 1.20: past the budget, t3 never starts
    assert status.phase == "Failed"
    assert [status.tasks[t].phase for t in ("t0", "t1", "t2", "t3")] == ["Succeeded"] * 3 + ["Omitted"]
    cond = next(c for c in status.conditions if c.type == budgets.CONDITION)
    assert (cond.status, cond.reason) == ("True", "BudgetExceeded")
    assert cond.message == "spent 1.200000 USD of the 1.00 USD budget"
    completed = next(c for c in status.conditions if c.type == "Completed")
    assert completed.reason == "BudgetExceeded" and "spec.budget.action: Stop" in (status.message or "")
    warnings = [(e.type, e.reason) for e in events if e.reason in ("ProjectedOverBudget", "BudgetExceeded")]
    assert warnings == [("Warning", "ProjectedOverBudget"), ("Warning", "BudgetExceeded")]  # each once


def test_a_warn_budget_lets_every_task_run() -> None:
    spec = chain(4, budget={"amount": "1.00", "currency": "USD"})
    status, events = run_chain(spec, {f"t{i}": usd("0.40") for i in range(4)})
    assert status.phase == "Succeeded" and status.cost is not None and status.cost.amount == "1.600000"
    cond = next(c for c in status.conditions if c.type == budgets.CONDITION)
    assert (cond.status, cond.reason) == ("True", "BudgetExceeded")
    assert sum(1 for e in events if e.reason == "BudgetExceeded") == 1


def test_a_budget_in_another_currency_never_stops_the_workflow() -> None:
    spec = chain(3, budget={"amount": "0.01", "currency": "USD", "action": "Stop"})
    status, _ = run_chain(spec, {f"t{i}": {"amount": "5", "currency": "EUR"} for i in range(3)})
    assert status.phase == "Succeeded"
    cond = next(c for c in status.conditions if c.type == budgets.CONDITION)
    assert (cond.status, cond.reason) == ("False", "CurrencyMismatch")


# -- a ScriptRun's budget --------------------------------------------------------------------------


def spec_of(**kw: Any) -> ScriptRunSpec:
    return ScriptRunSpec.model_validate({"script": {"source": "print(1)"}, **kw})


def test_a_runs_budget_is_judged_once_its_cost_is_known() -> None:
    sp = spec_of(budget={"amount": "0.01", "currency": "USD"})
    status = ScriptRunStatus(phase=RunPhase.SUCCEEDED)
    status.cost = RunCost(amount="0.020000", currency="USD", source="static")
    events = judge_budget(sp, status, T0, 3)
    assert [(e.type, e.reason) for e in events] == [("Warning", "BudgetExceeded")]
    cond = next(c for c in status.conditions if c.type == budgets.CONDITION)
    assert (cond.status, cond.observed_generation) == ("True", 3)
    assert judge_budget(sp, status, T0, 3) == []  # already said
    assert judge_budget(spec_of(), status, T0, 3) == []  # no budget


def test_a_stop_budget_spent_by_the_attempts_so_far_ends_the_retries() -> None:
    sp = spec_of(retryStrategy={"limit": 5}, budget={"amount": "0.01", "currency": "USD", "action": "Stop"})
    s = decide(sp, ScriptRunStatus(), {}, T0).status
    obs = {1: AttemptObservation(1, "r-a1", "Failed", T0, T0 + timedelta(seconds=5), 1, "Error")}
    inputs = RunInputs(spec=sp, status=s, observed=obs, now=T0 + timedelta(seconds=6))
    assert decide_run(inputs).actions == [StartAttempt(2)]  # within the budget: retried
    over = decide_run(RunInputs(spec=sp, status=s, observed=obs, now=inputs.now, over_budget="spent 0.02 USD"))
    assert over.actions == [] and over.status.phase == RunPhase.FAILED
    failed = next(c for c in over.status.conditions if c.type == "Failed")
    assert failed.reason == "BudgetExceeded" and "spent 0.02 USD" in failed.message


# -- disruptions (spot reclaims) -------------------------------------------------------------------


def disrupted_pod(reason: str = "TerminationByKubelet") -> dict[str, Any]:
    return {
        "metadata": {"name": "r-a1"},
        "spec": {"nodeName": "spot-1"},
        "status": {
            "phase": "Failed",
            "reason": "Terminated",
            "message": "Pod was terminated in response to imminent node shutdown.",
            "startTime": "2026-11-22T12:00:00Z",
            "conditions": [{"type": "DisruptionTarget", "status": "True", "reason": reason}],
            "containerStatuses": [
                {"name": "main", "state": {"terminated": {"exitCode": 143, "reason": "Error"}}},
            ],
        },
    }


def test_a_disrupted_pod_is_retried_without_counting_even_with_no_retries() -> None:
    sp = spec_of()  # no retryStrategy: a script failure would end the run
    s = decide(sp, ScriptRunStatus(), {}, T0).status
    obs = {1: observe_pod(disrupted_pod(), 1, monitor_enabled=False)}
    assert obs[1].disruption == "TerminationByKubelet"
    d = decide(sp, s, obs, T0 + timedelta(seconds=5))
    assert d.actions == [StartAttempt(2)]
    first = d.status.attempts[0]
    assert (first.counted, first.disruption, first.node_name) == (False, "TerminationByKubelet", "spot-1")
    assert ("Warning", "Disrupted") in [(e.type, e.reason) for e in d.events]
    # sticky: the next pass leaves it as it is
    again = decide(sp, d.status, obs, T0 + timedelta(seconds=6), expected={2})
    assert again.status.attempts[0] == first and not any(e.reason == "Disrupted" for e in again.events)


def test_eviction_from_a_spot_node_is_a_reclaim_elsewhere_an_error() -> None:
    sp = spec_of()
    s = decide(sp, ScriptRunStatus(), {}, T0).status
    evicted = {1: AttemptObservation(1, "r-a1", "Failed", T0, T0 + timedelta(seconds=3), None, "Evicted", node="n1")}
    now = T0 + timedelta(seconds=4)
    on_spot = decide_run(RunInputs(spec=sp, status=s, observed=evicted, now=now, spot_nodes=frozenset({"n1"})))
    assert on_spot.actions == [StartAttempt(2)]
    assert on_spot.status.attempts[0].disruption == "SpotReclaim"
    on_demand = decide_run(RunInputs(spec=sp, status=s, observed=evicted, now=now))
    assert on_demand.status.phase == RunPhase.FAILED  # no retry strategy: an eviction ends the run


def test_disruptions_count_again_once_disruption_retries_are_used() -> None:
    sp = spec_of(disruptionRetries=1)
    status = decide(sp, ScriptRunStatus(), {}, T0).status
    obs: dict[int, AttemptObservation] = {}
    for n in (1, 2):
        pod = disrupted_pod()
        pod["metadata"]["name"] = f"r-a{n}"
        obs[n] = observe_pod(pod, n, monitor_enabled=False)
        d = decide(sp, status, obs, T0 + timedelta(seconds=10 * n))
        status = d.status
    assert [a.counted for a in status.attempts] == [False, True]
    assert status.phase == RunPhase.FAILED
