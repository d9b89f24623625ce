"""The local backend: drive a ScriptRun with the engine's `decide`, attempts as local processes."""

from __future__ import annotations

import contextlib
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from scriptrun.engine import clock
from scriptrun.engine.gates import before_gates
from scriptrun.engine.run import Blocked, RunEvent, StartAttempt, StopAttempt, decide
from scriptrun.local.cost import LocalPricing, estimate
from scriptrun.local.gates import BeforeReport, check_before
from scriptrun.local.ignored import environment
from scriptrun.local.process import LocalAttempt, start_attempt
from scriptrun.model.scriptrun import ScriptRun

POLL_SECONDS = 0.05
TEMP_PREFIX = "scriptrun-"
Report = Callable[[RunEvent], None]


@contextlib.contextmanager
def shielded() -> Iterator[None]:
    """Cleanup that a second Ctrl-C (or a SIGTERM) does not cut short: the signals are ignored
    meanwhile (in the main thread; elsewhere signals are not delivered anyway)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def work_dir(base_dir: Path | None) -> tuple[Path, bool]:
    """`base_dir`, or a new temporary directory that the caller owns (True) and removes."""
    if base_dir is not None:
        return base_dir, False
    return Path(tempfile.mkdtemp(prefix=TEMP_PREFIX)), True


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
        self.configmaps = configmaps or {}
        self.gate_report: BeforeReport | None = None  # the last attempt's before-gates (spec.gates.before)
        self.environment = environment(run.spec, configmaps or {})
        self.status = run.status.model_copy(deep=True)
        self.created = clock.utcnow()
        self.attempts: dict[int, LocalAttempt] = {}
        self.name = run.metadata.name or "scriptrun"
        self.base, self.owns_base = work_dir(base_dir)
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
                    environment=self.environment,
                    gate_check=self._gate_check if before_gates(self.run.spec) is not None else None,
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

    def _gate_check(self, script: Path | None, work: Path) -> tuple[list[dict[str, Any]] | None, str | None]:
        """spec.gates.before on this machine: the same scans as the gate container; the OSV
        database is a ConfigMap of the same file."""
        self.gate_report = check_before(self.run, script, work, self.configmaps)
        return [r.dump() for r in self.gate_report.results], self.gate_report.failure

    def close(self) -> None:
        """Stop what still runs; remove the work directory if this run made it."""
        with shielded():
            for att in self.attempts.values():
                att.stop(grace=1.0)
            if self.owns_base:
                shutil.rmtree(self.base, ignore_errors=True)


def run_local(
    run: ScriptRun,
    *,
    configmaps: dict[str, dict[str, Any]] | None = None,
    report: Report | None = None,
    base_dir: Path | None = None,
    pricing: LocalPricing | None = None,
    gate_reports: dict[str, BeforeReport] | None = None,
) -> ScriptRun:
    """Run to completion; returns the run with its final status (with `pricing`, its cost estimate).
    Whatever ends it (also Ctrl-C), its processes are stopped and its work directory is removed.
    `gate_reports` (when given) gets the last attempt's before-gate report (SARIF, SBOM) under ""."""
    base, owns_base = work_dir(base_dir)
    try:
        local = LocalRun(run, configmaps=configmaps, report=report, base_dir=base, pricing=pricing)
        try:
            while True:
                local.step()
                if local.done:
                    break
                time.sleep(POLL_SECONDS)
        finally:
            local.close()
            if gate_reports is not None and local.gate_report is not None:
                gate_reports[""] = local.gate_report
    finally:
        if owns_base:
            with shielded():
                shutil.rmtree(base, ignore_errors=True)
    return run.model_copy(update={"status": local.status})
