"""The local backend for Workflows: nodes as LocalRuns (processes) under the same engine."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from scriptrun.engine import clock
from scriptrun.engine.dag import Plan, build_plan
from scriptrun.engine.workflow import ChildObservation, WorkflowEvent, decide_workflow
from scriptrun.local.runner import POLL_SECONDS, LocalRun
from scriptrun.model.common import ObjectMeta
from scriptrun.model.scriptrun import RunPhase, ScriptRun, ScriptRunSpec
from scriptrun.model.workflow import Workflow

NodeReport = Callable[[Workflow, Plan], None]


def observe_child(run: LocalRun) -> ChildObservation:
    status = run.status
    last = status.attempts[-1] if status.attempts else None
    failed = next((c for c in status.conditions if c.type == "Failed" and c.status == "True"), None)
    phase = status.phase.value
    if phase == RunPhase.PENDING.value and status.attempts:
        phase = "Running"
    return ChildObservation(
        phase=phase,  # type: ignore[arg-type]
        attempts=len(status.attempts),
        exit_code=last.exit_code if last else None,
        started=status.start_time,
        finished=status.completion_time,
        reason=failed.reason if failed else None,
        message=status.message if failed else None,
        outputs=status.outputs,
        outputs_error=status.outputs_error,
        usage=status.usage,
    )


def run_workflow_local(
    wf: Workflow,
    *,
    overrides: dict[str, str] | None = None,
    on_change: NodeReport | None = None,
    on_event: Callable[[WorkflowEvent], None] | None = None,
    base_dir: Path | None = None,
) -> Workflow:
    plan = build_plan(wf.spec, overrides=overrides)
    name = wf.metadata.name or "workflow"
    base = base_dir or Path(tempfile.mkdtemp(prefix=f"{name}-"))
    runs: dict[str, LocalRun] = {}
    status = wf.status.model_copy(deep=True)
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
                runs[start.node] = LocalRun(child, base_dir=base)
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
            if status.phase in ("Succeeded", "Failed", "Error"):
                return current
            time.sleep(POLL_SECONDS)
    finally:
        for run in runs.values():
            run.close()
