"""Hung watches are detected: the operator's heartbeat Lease stops coming back through its watch when
the API server is frozen (SIGSTOP), and the liveness endpoint turns red within the window; when the
API server resumes, it turns green again and runs still finish."""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.controlplane import ControlPlane
from tests.support.kube import Kube, scriptrun
from tests.support.operator import OperatorProcess, namespace, own_operator

EXIT = "test.scriptrun.dev/exit-code"
WINDOW = 6


@pytest.fixture(scope="module")
def watched(cluster: ControlPlane, operator: OperatorProcess) -> Iterator[OperatorProcess]:
    env = {
        "POD_NAMESPACE": "default",
        "POD_NAME": "scriptrun-operator-test",
        "SCRIPTRUN_HEARTBEAT_SECONDS": "1",
        "SCRIPTRUN_WATCH_TIMEOUT_SECONDS": str(WINDOW),
    }
    op = own_operator(cluster, operator, env, "operator-liveness.log")
    yield op
    op.stop()


@pytest.fixture
def ns(cluster: ControlPlane, watched: OperatorProcess) -> Iterator[Kube]:
    yield from namespace(cluster, watched)


def probe(op: OperatorProcess) -> tuple[int, dict[str, Any] | str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{op.liveness_port}/healthz", timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(errors="replace")


def wait_for(what: str, fn: Any, timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if fn():
            return time.monotonic() - started
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def test_a_frozen_api_server_turns_liveness_red_and_back(
    cluster: ControlPlane, watched: OperatorProcess, ns: Kube
) -> None:
    wait_for("a heartbeat through the watch", lambda: probe(watched)[0] == 200, 30)
    _, body = probe(watched)
    assert isinstance(body, dict) and body["watch"]["lease"] == "default/scriptrun-heartbeat-scriptrun-operator-test"
    lease = cluster.request(
        "GET", "/apis/coordination.k8s.io/v1/namespaces/default/leases/scriptrun-heartbeat-scriptrun-operator-test"
    )
    assert lease["metadata"]["labels"] == {"scriptrun.dev/heartbeat": "true"}
    assert lease["spec"]["holderIdentity"] == "scriptrun-operator-test"

    (apiserver,) = [p for p in cluster.procs if p.name == "kube-apiserver"]
    os.kill(apiserver.popen.pid, signal.SIGSTOP)
    try:
        # the window, plus up to one heartbeat interval, plus Kopf's 10 s cache of probe results
        red = wait_for("liveness to fail", lambda: probe(watched)[0] == 500, WINDOW + 1 + 10 + 5)
    finally:
        os.kill(apiserver.popen.pid, signal.SIGCONT)
    assert "watch streams look hung" in watched.tail(200)
    green = wait_for("liveness to recover", lambda: probe(watched)[0] == 200, 60)
    print(f"\nliveness: red {red:.1f}s after SIGSTOP (window {WINDOW}s), green {green:.1f}s after SIGCONT")

    ns.apply(scriptrun("after", {}, {EXIT: "0"}))
    assert ns.wait_phase("after", "Succeeded", timeout=60)
