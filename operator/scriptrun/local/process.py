"""One attempt as a local process, observed the way a pod is, and measured by the same sampler
the sidecar uses (in-process here; wait4() gives the exact rusage of the whole waited tree)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from scriptrun.engine import clock
from scriptrun.engine.observe import AttemptObservation
from scriptrun.model.scriptrun import MonitorSpec, RunTemplate
from scriptrun.monitor.launch import rusage_dict, wait_rusage
from scriptrun.monitor.outputs import collect_outputs
from scriptrun.monitor.sampler import TreeSampler, own_pids


@dataclass
class LocalAttempt:
    attempt: int
    name: str
    proc: subprocess.Popen[bytes]
    started: datetime
    workdir: Path
    monitor: MonitorSpec
    sampler: TreeSampler | None = None
    exit_code: int | None = None
    finished: datetime | None = None
    usage: dict[str, Any] | None = None
    killed_reason: str | None = None
    next_sample: float = 0.0
    started_mono: float = field(default_factory=time.monotonic)

    def tick(self) -> None:
        """Sample when due; reap the process (with its rusage) once it has exited."""
        if self.exit_code is not None:
            return
        now = time.monotonic()
        if self.sampler is not None and now >= self.next_sample:
            self.sampler.sample()
            self.next_sample = now + self.sampler.next_wait(self.monitor.interval_seconds)
        result = wait_rusage(self.proc.pid, block=False)
        if result is None:
            return
        code, ru = result
        self.proc.returncode = code
        self.exit_code = code
        self.finished = clock.utcnow()
        if self.sampler is not None:
            self.usage = self.sampler.summary(
                exit_code=code, rusage=rusage_dict(ru), elapsed=time.monotonic() - self.started_mono
            )
            self.usage["available"] = True
            self.sampler.close()
        outputs, error = collect_outputs(self.workdir / "outputs")
        if outputs is not None or error is not None:
            self.usage = self.usage if self.usage is not None else {"available": False, "reason": "MonitorDisabled"}
            if outputs is not None:
                self.usage["outputs"] = outputs
            if error is not None:
                self.usage["outputsError"] = error

    def observe(self) -> AttemptObservation:
        self.tick()
        code = self.exit_code
        if code is None:
            return AttemptObservation(self.attempt, self.name, "Running", start_time=self.started)
        if code == 0:
            return AttemptObservation(
                self.attempt, self.name, "Succeeded", self.started, self.finished, 0, "Completed", usage=self.usage
            )
        reason = self.killed_reason or ("OOMKilled" if code == 137 else "Error")
        return AttemptObservation(
            self.attempt, self.name, "Failed", self.started, self.finished, code, reason, usage=self.usage
        )

    def stop(self, grace: float = 5.0) -> None:
        if self.exit_code is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while self.exit_code is None and time.monotonic() < deadline:
            self.tick()
            time.sleep(0.02)
        if self.exit_code is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            while self.exit_code is None:
                self.tick()
                time.sleep(0.01)


def start_attempt(
    *, spec: RunTemplate, attempt: int, name: str, source: str | None, base_dir: Path, python: str = sys.executable
) -> LocalAttempt:
    workdir = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=base_dir))
    outputs = workdir / "outputs"
    outputs.mkdir()
    if spec.script.command:
        command = list(spec.script.command)
    else:
        assert source is not None
        script = workdir / "main.py"
        script.write_text(source)
        command = [python, str(script)]
    command += list(spec.args or [])
    env = dict(os.environ)
    env["SCRIPTRUN_OUTPUTS"] = str(outputs)
    env["SCRIPTRUN_ATTEMPT"] = str(attempt)
    for var in spec.env or []:
        if var.value is not None:
            env[var.name] = var.value
    monitor = spec.monitor or MonitorSpec()
    proc = subprocess.Popen(command, cwd=workdir, env=env, stdout=sys.stderr, stderr=sys.stderr, start_new_session=True)
    sampler = (
        TreeSampler.for_interval(proc.pid, monitor.interval_seconds, exclude=own_pids()) if monitor.enabled else None
    )
    return LocalAttempt(attempt, name, proc, clock.utcnow(), workdir, monitor, sampler)
