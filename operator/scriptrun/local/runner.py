"""The local backend: drive a ScriptRun with the engine's `decide`, attempts as local processes."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from scriptrun.engine import clock
from scriptrun.engine.run import Blocked, RunEvent, StartAttempt, StopAttempt, decide
from scriptrun.local.cost import LocalPricing, estimate
from scriptrun.local.process import LocalAttempt, start_attempt
from scriptrun.model.scriptrun import ScriptRun

POLL_SECONDS = 0.05
Report = Callable[[RunEvent], None]


def _resolve_source(run: ScriptRun, configmaps: dict[str, dict[str, Any]]) -> tuple[str | None, Blocked | None]:
    script = run.spec.script
    if script.source is not None:
        return script.source, None
    ref = script.config_map_ref
    if ref is None:
        return None, None
    cm = configmaps.get(ref.name)
    if cm is None:
        return None, Blocked(
            "ConfigMapNotFound",
            f"ConfigMap {ref.name!r} (spec.script.configMapRef) not found; locally it must be in the same file",
        )
    data = cm.get("data") or {}
    if ref.key not in data:
        return None, Blocked("ConfigMapKeyNotFound", f"ConfigMap {ref.name!r} has no key {ref.key!r}")
    return str(data[ref.key]), None


class LocalRun:
    """One ScriptRun on this machine, advanced one `step()` at a time (so a workflow can run many)."""

    def __init__(
        self,
        run: ScriptRun,
        *,
        configmaps: dict[str, dict[str, Any]] | None = None,
        report: Report | None = None,
        base_dir: Path | None = None,
        pricing: LocalPricing | None = None,
    ) -> None:
        self.run = run
        self.report = report
        self.pricing = pricing  # when set, a finished run's status.cost is its estimate on this machine
        self.source, self.blocked = _resolve_source(run, configmaps or {})
        self.status = run.status.model_copy(deep=True)
        self.created = clock.utcnow()
        self.attempts: dict[int, LocalAttempt] = {}
        self.name = run.metadata.name or "scriptrun"
        self.base = base_dir or Path(tempfile.mkdtemp(prefix="scriptrun-"))
        self.wake_at: float | None = None

    @property
    def done(self) -> bool:
        return self.status.phase.terminal

    def terminate(self) -> None:
        self.run = self.run.model_copy(update={"spec": self.run.spec.model_copy(update={"terminate": True})})

    def step(self) -> None:
        now = clock.utcnow()
        observed = {n: a.observe() for n, a in self.attempts.items()}
        decision = decide(
            self.run.spec,
            self.status,
            observed,
            now,
            created=self.created,
            blocked=self.blocked,
            deadline_grace_seconds=0.0,
            attempt_name=lambda n: f"{self.name}-a{n}",
        )
        for action in decision.actions:
            if isinstance(action, StartAttempt):
                self.attempts[action.attempt] = start_attempt(
                    spec=self.run.spec,
                    attempt=action.attempt,
                    name=f"{self.name}-a{action.attempt}",
                    source=self.source,
                    base_dir=self.base,
                )
            elif isinstance(action, StopAttempt):
                self.attempts[action.attempt].killed_reason = action.reason
                self.attempts[action.attempt].stop(grace=2.0)
        for event in decision.events:
            if self.report:
                self.report(event)
        self.status = decision.status
        if self.pricing is not None and self.status.phase.terminal and self.status.cost is None:
            cost = estimate(self.run.spec, self.status, self.pricing)
            if cost is not None:
                self.status = self.status.model_copy(update={"cost": cost})

    def close(self) -> None:
        for att in self.attempts.values():
            att.stop(grace=1.0)


def run_local(
    run: ScriptRun,
    *,
    configmaps: dict[str, dict[str, Any]] | None = None,
    report: Report | None = None,
    base_dir: Path | None = None,
    pricing: LocalPricing | None = None,
) -> ScriptRun:
    """Run to completion; returns the run with its final status (with `pricing`, its cost estimate)."""
    local = LocalRun(run, configmaps=configmaps, report=report, base_dir=base_dir, pricing=pricing)
    try:
        while True:
            local.step()
            if local.done:
                break
            time.sleep(POLL_SECONDS)
    finally:
        local.close()
    return run.model_copy(update={"status": local.status})
