"""One attempt as a local process, observed the way a pod is, and measured by the same sampler
the sidecar uses (in-process here; wait4() gives the exact rusage of the whole waited tree).

A script killed by a signal fails with reason Error and says which signal (exit code 128+N, as
the kubelet reports it); OOMKilled only when the kernel's OOM killer did it: a SIGKILL while the
oom_kill count of this process's memory cgroup went up. Nothing limits memory locally.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from scriptrun.engine import clock
from scriptrun.engine.observe import GATE_FAILED, AttemptObservation
from scriptrun.model.contract import EXIT_FILE, OUTPUTS_SUBDIR, PID_FILE, SCRIPT_KEY, script_env
from scriptrun.model.scriptrun import MonitorSpec, RunTemplate
from scriptrun.monitor import launch
from scriptrun.monitor.launch import rusage_dict, wait_rusage
from scriptrun.monitor.outputs import collect_outputs
from scriptrun.monitor.sampler import TreeSampler, own_pids

CGROUP_ROOT = Path("/sys/fs/cgroup")


def oom_kills(proc_cgroup: Path = Path("/proc/self/cgroup"), root: Path = CGROUP_ROOT) -> int | None:
    """How many processes the OOM killer has killed in this process's memory cgroup (v2
    memory.events, v1 memory.oom_control), or None where that cannot be read."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            candidate = root / path.lstrip("/") / "memory.events"
        elif "memory" in controllers.split(","):
            candidate = root / "memory" / path.lstrip("/") / "memory.oom_control"
        else:
            continue
        try:
            for entry in candidate.read_text().splitlines():
                key, _, value = entry.partition(" ")
                if key == "oom_kill":
                    return int(value)
        except (OSError, ValueError):
            continue
    return None


def failure(code: int, *, oom_before: int | None, oom_after: int | None) -> tuple[str, str | None]:
    """The reason and message of an attempt that exited with `code` (not 0), as the kubelet would
    put them: Error, or OOMKilled when the OOM killer is known to have killed it."""
    if not 128 < code < 128 + signal.NSIG:
        return "Error", None
    number = code - 128
    try:
        name = signal.Signals(number).name
    except ValueError:
        name = f"signal {number}"
    killed = f"exit code {code}: killed by signal {number} ({name})"
    if number != signal.SIGKILL:
        return "Error", killed
    if oom_before is None or oom_after is None:
        return "Error", f"{killed}; whether by the OOM killer cannot be told here (no memory cgroup to read)"
    if oom_after > oom_before:
        return "OOMKilled", f"{killed} from the kernel's OOM killer (this memory cgroup's oom_kill count rose)"
    return "Error", f"{killed}, not by the OOM killer"


GateCheck = Callable[[Path | None, Path], tuple[list[dict[str, Any]] | None, str | None]]
"""(the script file or None, a scratch directory) -> (the before-gates' verdicts, why they block or None)."""


@dataclass
class LocalAttempt:
    attempt: int
    name: str
    proc: subprocess.Popen[bytes] | None
    started: datetime
    workdir: Path
    monitor: MonitorSpec
    start_error: str | None = None
    oom_before: int | None = None
    sampler: TreeSampler | None = None
    exit_code: int | None = None
    finished: datetime | None = None
    usage: dict[str, Any] | None = None
    killed_reason: str | None = None
    oom_after: int | None = None
    gates: list[dict[str, Any]] | None = None  # the before-gates' verdicts (GateResult dicts)
    gate_failure: str | None = None  # a before-gate blocked this attempt: the script never started
    next_sample: float = 0.0
    started_mono: float = field(default_factory=time.monotonic)

    def _script_pid(self) -> int | None:
        """The script's PID, as the launcher published it (the same handshake as in a pod)."""
        try:
            return int(json.loads((self.workdir / PID_FILE).read_text())["pid"])
        except (OSError, ValueError, KeyError):
            return None

    def tick(self) -> None:
        """Sample when due; reap the launcher once it has exited and read the script's exit record."""
        if self.exit_code is not None or self.proc is None:
            return
        now = time.monotonic()
        if self.sampler is None and self.monitor.enabled and (pid := self._script_pid()) is not None:
            self.sampler = TreeSampler.for_interval(pid, self.monitor.interval_seconds, exclude=own_pids())
        if self.sampler is not None and now >= self.next_sample:
            self.sampler.sample()
            self.next_sample = now + self.sampler.next_wait(self.monitor.interval_seconds)
        result = wait_rusage(self.proc.pid, block=False)
        if result is None:
            return
        code, ru = result
        record: dict[str, Any] = {}
        with contextlib.suppress(OSError, ValueError):
            record = json.loads((self.workdir / EXIT_FILE).read_text())
        code = int(record.get("exitCode", code))
        rusage = record.get("rusage") or rusage_dict(ru)
        self.proc.returncode = code
        self.exit_code = code
        self.finished = clock.utcnow()
        self.oom_after = oom_kills() if code != 0 else None
        if self.monitor.enabled:
            if self.sampler is None:  # gone before its PID was read: rusage is all there is
                self.sampler = TreeSampler(self.proc.pid, exclude=own_pids())
            self.usage = self.sampler.summary(
                exit_code=code, rusage=rusage, elapsed=time.monotonic() - self.started_mono
            )
            self.usage["available"] = True
            self.sampler.close()
        outputs, error = collect_outputs(self.workdir / OUTPUTS_SUBDIR)
        if outputs is not None or error is not None:
            self.usage = self.usage if self.usage is not None else {"available": False, "reason": "MonitorDisabled"}
            if outputs is not None:
                self.usage["outputs"] = outputs
            if error is not None:
                self.usage["outputsError"] = error

    def observe(self) -> AttemptObservation:
        found = self._observe()
        return replace(found, gates=self.gates) if self.gates is not None else found

    def _observe(self) -> AttemptObservation:
        if self.gate_failure is not None:
            at = self.started
            return AttemptObservation(self.attempt, self.name, "Failed", at, at, None, GATE_FAILED, self.gate_failure)
        self.tick()
        code = self.exit_code
        if self.start_error is not None:
            return AttemptObservation(
                self.attempt, self.name, "Failed", self.started, self.started, 128, "StartError", self.start_error
            )
        if code is None:
            return AttemptObservation(self.attempt, self.name, "Running", start_time=self.started)
        if code == 0:
            return AttemptObservation(
                self.attempt, self.name, "Succeeded", self.started, self.finished, 0, "Completed", usage=self.usage
            )
        reason, message = failure(code, oom_before=self.oom_before, oom_after=self.oom_after)
        if self.killed_reason is not None:
            reason, message = self.killed_reason, None
        return AttemptObservation(
            self.attempt, self.name, "Failed", self.started, self.finished, code, reason, message, usage=self.usage
        )

    def stop(self, grace: float = 5.0) -> None:
        if self.exit_code is not None or self.proc is None:
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
    *,
    spec: RunTemplate,
    attempt: int,
    name: str,
    source: str | None,
    base_dir: Path,
    python: str = sys.executable,
    environment: Mapping[str, str] | None = None,
    gate_check: GateCheck | None = None,
) -> LocalAttempt:
    """Start one attempt. `environment`: the spec's variables as resolved (by default its plain
    `value`s); a command that cannot be started is an attempt failed with reason StartError.
    `gate_check` (spec.gates.before) runs first, on the script file as the attempt will run it:
    when it blocks, the attempt fails with reason GateFailed and no process starts."""
    workdir = Path(tempfile.mkdtemp(prefix=f"{name[:100]}-", dir=base_dir))
    outputs = workdir / OUTPUTS_SUBDIR
    outputs.mkdir()
    script: Path | None = None
    if spec.script.command:
        command = list(spec.script.command)
    else:
        assert source is not None
        script = workdir / SCRIPT_KEY
        script.write_text(source)
        command = [python, str(script)]
    monitor = spec.monitor or MonitorSpec()
    gates: list[dict[str, Any]] | None = None
    if gate_check is not None:
        gates, blocked = gate_check(script, workdir)
        if blocked is not None:
            at = clock.utcnow()
            return LocalAttempt(attempt, name, None, at, workdir, monitor, gates=gates, gate_failure=blocked)
    command += list(spec.args or [])
    env = dict(os.environ)
    env.update(script_env(outputs_dir=str(outputs), attempt=attempt))
    if environment is None:
        environment = {var.name: var.value for var in spec.env or [] if var.value is not None}
    env.update(environment)
    # through the same small launcher a pod uses: the script is forked from it, not from this
    # (much larger) process, and its exit record carries the script's own wait4() rusage
    launcher = [python, launch.__file__, str(workdir), "--"]
    oom_before = oom_kills()
    try:
        proc = subprocess.Popen(
            [*launcher, *command], cwd=workdir, env=env, stdout=sys.stderr, stderr=sys.stderr, start_new_session=True
        )
    except (OSError, ValueError) as err:  # e.g. E2BIG: arguments and environment past the kernel's limit
        why = f"cannot start: {err.strerror if isinstance(err, OSError) and err.strerror else err}"
        return LocalAttempt(attempt, name, None, clock.utcnow(), workdir, monitor, start_error=why, gates=gates)
    return LocalAttempt(attempt, name, proc, clock.utcnow(), workdir, monitor, oom_before=oom_before, gates=gates)
