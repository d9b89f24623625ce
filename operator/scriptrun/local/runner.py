"""The local backend: drive a ScriptRun with the engine's `decide`, attempts as local processes."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from scriptrun.engine import clock
from scriptrun.engine.run import Blocked, RunEvent, StartAttempt, StopAttempt, decide
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


def run_local(
    run: ScriptRun,
    *,
    configmaps: dict[str, dict[str, Any]] | None = None,
    report: Report | None = None,
    base_dir: Path | None = None,
) -> ScriptRun:
    """Run to completion; returns the run with its final status."""
    source, blocked = _resolve_source(run, configmaps or {})
    status = run.status.model_copy(deep=True)
    created = clock.utcnow()
    attempts: dict[int, LocalAttempt] = {}
    name = run.metadata.name or "scriptrun"
    base = base_dir or Path(tempfile.mkdtemp(prefix="scriptrun-"))
    try:
        while True:
            now = clock.utcnow()
            observed = {n: a.observe() for n, a in attempts.items()}
            decision = decide(
                run.spec,
                status,
                observed,
                now,
                created=created,
                blocked=blocked,
                deadline_grace_seconds=0.0,
                attempt_name=lambda n: f"{name}-a{n}",
            )
            for action in decision.actions:
                if isinstance(action, StartAttempt):
                    attempts[action.attempt] = start_attempt(
                        spec=run.spec,
                        attempt=action.attempt,
                        name=f"{name}-a{action.attempt}",
                        source=source,
                        base_dir=base,
                    )
                elif isinstance(action, StopAttempt):
                    attempts[action.attempt].killed_reason = action.reason
                    attempts[action.attempt].stop(grace=2.0)
            for event in decision.events:
                if report:
                    report(event)
            status = decision.status
            if status.phase.terminal:
                break
            wait = POLL_SECONDS
            if decision.wake_at is not None:
                wait = min(max(0.0, (decision.wake_at - clock.utcnow()).total_seconds()), POLL_SECONDS)
            time.sleep(wait)
    finally:
        for att in attempts.values():
            att.stop(grace=1.0)
    return run.model_copy(update={"status": status})
