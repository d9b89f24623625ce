"""The local backend for Workflows: nodes as LocalRuns (processes) under the same engine."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from scriptrun.engine import clock, observe
from scriptrun.engine.dag import Plan
from scriptrun.engine.observe import ChildObservation
from scriptrun.engine.workflow import WorkflowEvent, decide_workflow
from scriptrun.local.cost import LocalPricing
from scriptrun.local.gates import BeforeReport
from scriptrun.local.runner import POLL_SECONDS, LocalRun, shielded, work_dir
from scriptrun.local.validate import plan as build_plan
from scriptrun.model.common import ObjectMeta
from scriptrun.model.gates import GateResult
from scriptrun.model.scriptrun import RunCost, ScriptRun, ScriptRunSpec
from scriptrun.model.workflow import Workflow, WorkflowPhase

NodeReport = Callable[[Workflow, Plan], None]


def observe_child(run: LocalRun) -> ChildObservation:
    """The same observation a cluster's Workflow makes of a child ScriptRun's status."""
    return observe.observe_child(run.status.dump(), stopping=bool(getattr(run.run.spec, "terminate", False)))


def run_workflow_local(
    wf: Workflow,
    *,
    overrides: dict[str, str] | None = None,
    on_change: NodeReport | None = None,
    on_event: Callable[[WorkflowEvent], None] | None = None,
    base_dir: Path | None = None,
    pricing: LocalPricing | None = None,
    costs: dict[str, RunCost] | None = None,
    configmaps: dict[str, dict[str, Any]] | None = None,
    gates: dict[str, list[GateResult]] | None = None,
    gate_reports: dict[str, BeforeReport] | None = None,
) -> Workflow:
    """Run to completion. With `pricing`, each task's run gets its cost estimate (its status.cost)
    when it finishes, and `costs` (when given) is filled with them by node id. Tasks read the
    `configmaps` (of the same file) as a ScriptRun does. `gates` (when given) is filled with each
    node's gate verdicts (its run's status.gates), and `gate_reports` with its before-gate report."""
    plan = build_plan(wf.spec, overrides=overrides)
    name = wf.metadata.name or "workflow"
    runs: dict[str, LocalRun] = {}
    status = wf.status.model_copy(deep=True)
    base, owns_base = work_dir(base_dir)
    try:
        while True:
            for run in runs.values():
                if not run.done:
                    run.step()
            observed = {n: observe_child(r) for n, r in runs.items()}
            decision = decide_workflow(
                plan, wf.spec, status, observed, clock.utcnow(), name=name, namespace=wf.metadata.namespace
            )
            for start in decision.start:
                child = ScriptRun(
                    metadata=ObjectMeta(name=f"{name}-{start.node}", namespace=wf.metadata.namespace),
                    spec=ScriptRunSpec.model_validate(start.template.model_dump()),
                )
                runs[start.node] = LocalRun(child, configmaps=configmaps, base_dir=base, pricing=pricing)
                runs[start.node].step()
            for stop in decision.stop:
                runs[stop.node].terminate()
            for event in decision.events:
                if on_event:
                    on_event(event)
            changed = decision.status.model_dump() != status.model_dump()
            status = decision.status
            current = wf.model_copy(update={"status": status})
            if changed and on_change:
                on_change(current, plan)
            if WorkflowPhase(status.phase).terminal:
                if costs is not None:
                    costs.update({n: r.status.cost for n, r in runs.items() if r.status.cost is not None})
                if gates is not None:
                    gates.update({n: r.status.gates for n, r in runs.items() if r.status.gates})
                if gate_reports is not None:
                    gate_reports.update({n: r.gate_report for n, r in runs.items() if r.gate_report is not None})
                return current
            time.sleep(POLL_SECONDS)
    finally:
        with shielded():
            for run in runs.values():
                run.close()
            if owns_base:
                shutil.rmtree(base, ignore_errors=True)
