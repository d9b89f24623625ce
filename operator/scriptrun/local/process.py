"""One attempt as a local process, observed the way a pod is."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from scriptrun.engine import clock
from scriptrun.engine.observe import AttemptObservation
from scriptrun.model.scriptrun import RunTemplate


@dataclass
class LocalAttempt:
    attempt: int
    name: str
    proc: subprocess.Popen[bytes]
    started: datetime
    workdir: Path
    finished: datetime | None = None
    killed_reason: str | None = None
    outputs: dict[str, str] = field(default_factory=dict)

    def observe(self) -> AttemptObservation:
        code = self.proc.poll()
        if code is None:
            return AttemptObservation(self.attempt, self.name, "Running", start_time=self.started)
        if self.finished is None:
            self.finished = clock.utcnow()
        if code < 0:  # killed by a signal: report it the way a container runtime does
            code = 128 - code
        if code == 0:
            return AttemptObservation(self.attempt, self.name, "Succeeded", self.started, self.finished, 0, "Completed")
        reason = self.killed_reason or ("OOMKilled" if code == 137 else "Error")
        return AttemptObservation(self.attempt, self.name, "Failed", self.started, self.finished, code, reason)

    def stop(self, grace: float = 5.0) -> None:
        if self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        except ProcessLookupError:
            pass


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
    proc = subprocess.Popen(command, cwd=workdir, env=env, stdout=sys.stderr, stderr=sys.stderr, start_new_session=True)
    return LocalAttempt(attempt, name, proc, clock.utcnow(), workdir)
