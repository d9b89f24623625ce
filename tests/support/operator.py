"""The scriptrun operator as a real subprocess (so tests can kill -9 it and start it again)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

from tests.support.controlplane import ControlPlane, _die_with_parent, free_port
from tests.support.kube import Kube


class OperatorProcess:
    def __init__(self, cluster: ControlPlane, *, extra_env: dict[str, str] | None = None) -> None:
        self.cluster = cluster
        self.extra_env = extra_env or {}
        self.popen: subprocess.Popen[bytes] | None = None
        self.log = cluster.workdir / "operator.log"
        self.starts = 0
        self.metrics_port = 0
        self.liveness_port = 0

    def start(self, timeout: float = 60) -> OperatorProcess:
        # free_port() holds each port machine-wide for this test process and draws it from outside the
        # kernel's ephemeral range, so no connection or other test run takes it before the operator binds
        port = self.liveness_port = free_port()
        # the metrics port stays the same across restarts, like a Deployment's: scrape configs hold
        self.metrics_port = self.metrics_port or free_port()
        env = {
            **self.cluster.env(),
            "SCRIPTRUN_METRICS_PORT": str(self.metrics_port),
            "SCRIPTRUN_DEADLINE_GRACE_SECONDS": "1",
            "SCRIPTRUN_RESYNC_SECONDS": "15",
            "PYTHONUNBUFFERED": "1",
            **self.extra_env,
        }
        handle = self.log.open("ab")
        handle.write(f"\n===== start {self.starts} =====\n".encode())
        handle.flush()
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "scriptrun", "operator", f"--liveness=http://127.0.0.1:{port}/healthz"],
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=Path(__file__).resolve().parents[2],
            preexec_fn=_die_with_parent,
        )
        handle.close()
        self.starts += 1
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"operator exited {self.popen.returncode}:\n{self.tail()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
                    if resp.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"operator not live after {timeout}s:\n{self.tail()}")

    def scrape(self) -> str:
        """The operator's Prometheus metrics, as text."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as resp:
            return str(resp.read().decode())

    def kill(self) -> None:
        """SIGKILL: no cleanup, as in a crash or an OOM kill."""
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(signal.SIGKILL)
            self.popen.wait()

    def stop(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def tail(self, lines: int = 60) -> str:
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def errors(self) -> list[str]:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return [line for line in text.splitlines() if "Traceback" in line or " ERROR " in line]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def finish_pod_while_down(kube: Kube, op: OperatorProcess, pod: str) -> None:
    """SIGKILL the operator, let `pod` exit 0 while none runs (kwok's exit-code annotation), start it
    again: the restarted operator must find the attempt done, not start another."""
    op.kill()
    time.sleep(1)
    kube.patch("pod", pod, {"metadata": {"annotations": {"test.scriptrun.dev/exit-code": "0"}}})
    op.start()


def own_operator(cluster: ControlPlane, session: OperatorProcess, env: dict[str, str], log: str) -> OperatorProcess:
    """A module's own operator (extra settings) in place of the session one: two operators would
    both reconcile every object. The next module's `live_operator` starts the session one again."""
    session.stop()
    op = OperatorProcess(cluster, extra_env=env)
    op.log = cluster.workdir / log
    return op.start()


def namespace(cluster: ControlPlane, op: OperatorProcess) -> Iterator[Kube]:
    """A fresh namespace for one test, watched by `op` (deleted afterwards, without waiting)."""
    ns = f"t-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", ns)
    yield Kube(cluster, ns, lambda: f"--- operator log:\n{op.tail(40)}")
    cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)
