"""Two operator replicas with Kopf peering (controllers/peering.py): one active, the other a paused
standby that stays live; SIGKILL of the active one mid-workflow, and the standby takes over within the
peering lifetime with no task lost and no pod duplicated; the killed replica comes back as the standby;
a clean stop (SIGTERM) hands over at once. The takeover times are printed in the summary."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.controlplane.conftest import CONTROL_PLANE_INFO
from tests.support.controlplane import ControlPlane
from tests.support.kube import Kube, scriptrun
from tests.support.operator import OperatorProcess, namespace

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "scriptrun"
PEERING_CRDS = CHART / "crds" / "kopf.dev_peerings.yaml"
PEERING = "scriptrun-ha-test"
LIFETIME = 6  # seconds: the takeover bound after a crash
WINDOW = 5  # the hung-watch window: a standby outlives it and stays live
EXIT = "test.scriptrun.dev/exit-code"


def health(op: OperatorProcess) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{op.liveness_port}/healthz", timeout=5) as resp:
        assert resp.status == 200
        return dict(json.loads(resp.read() or b"{}"))


def replica(cluster: ControlPlane, name: str) -> OperatorProcess:
    op = OperatorProcess(
        cluster,
        extra_env={
            "POD_NAME": name,
            "SCRIPTRUN_PEERING": PEERING,
            "SCRIPTRUN_PEERING_LIFETIME_SECONDS": str(LIFETIME),
            "SCRIPTRUN_HEARTBEAT_NAMESPACE": "default",
            "SCRIPTRUN_HEARTBEAT_SECONDS": "1",
            "SCRIPTRUN_WATCH_TIMEOUT_SECONDS": str(WINDOW),
        },
    )
    op.log = cluster.workdir / f"operator-{name}.log"
    return op


def standby(op: OperatorProcess) -> bool:
    return bool(health(op).get("watch", {}).get("standby"))


def acted_by(kube: Kube, name: str) -> set[str]:
    """Which replicas posted Events about the object (reportingInstance: the pod's name)."""
    return {e.get("reportingInstance", "") for e in kube.events(name)}


@pytest.fixture(scope="module")
def replicas(cluster: ControlPlane, operator: OperatorProcess) -> Iterator[tuple[OperatorProcess, OperatorProcess]]:
    operator.stop()  # the session's standalone operator would reconcile everything too
    cluster.kubectl("apply", "-f", str(PEERING_CRDS))
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/clusterkopfpeerings.kopf.dev")
    peering = {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": PEERING}}
    cluster.kubectl("apply", "-f", "-", input=json.dumps(peering))
    first, second = replica(cluster, "ha-a"), replica(cluster, "ha-b")
    try:
        first.start()
        second.start()  # started later: the lower priority
        yield first, second
    finally:
        first.stop()
        second.stop()
        cluster.kubectl("delete", "clusterkopfpeering", PEERING, "--wait=false", check=False)


@pytest.fixture
def kube(cluster: ControlPlane, replicas: tuple[OperatorProcess, OperatorProcess]) -> Iterator[Kube]:
    yield from namespace(cluster, replicas[0])


def chain(name: str, n: int) -> dict[str, Any]:
    tasks = [{"name": f"t{i}", "script": {"source": "print(1)"}} for i in range(n)]
    for i in range(1, n):
        tasks[i]["dependencies"] = [f"t{i - 1}"]
    return {
        "apiVersion": "scriptrun.dev/v1alpha1",
        "kind": "Workflow",
        "metadata": {"name": name},
        "spec": {"tasks": tasks},
    }


def finish(kube: Kube, run: str) -> None:
    kube.wait(f"pod of {run}", lambda: kube.get("pod", f"{run}-a1"))
    kube.patch("pod", f"{run}-a1", {"metadata": {"annotations": {EXIT: "0"}}})


def test_one_active_replica_and_takeover(kube: Kube, replicas: tuple[OperatorProcess, OperatorProcess]) -> None:
    a, b = replicas
    kube.wait("ha-b standby", lambda: standby(b))
    assert not standby(a)
    time.sleep(WINDOW + 1)  # past the hung-watch window: a paused standby is not a hung one
    assert standby(b) and health(b)["watch"]["active"] == "ha-a"
    assert "lastHeartbeatSecondsAgo" in health(a)["watch"]

    kube.apply(chain("ha", 4))
    finish(kube, "ha-t0")
    kube.wait("t1 running", lambda: kube.run_status("ha-t1").get("phase") == "Running")
    assert acted_by(kube, "ha-t1") == {"ha-a"}, "only the active replica acts"

    a.kill()  # SIGKILL: no goodbye, the keep-alive must run out
    killed = time.monotonic()
    finish(kube, "ha-t1")
    kube.wait("t2 created by the standby", lambda: kube.get("scriptrun", "ha-t2"), timeout=LIFETIME + 30)
    kube.wait("t2's pod", lambda: kube.get("pod", "ha-t2-a1"), timeout=30)
    takeover = time.monotonic() - killed
    assert takeover < LIFETIME + 15, takeover
    finish(kube, "ha-t2")
    finish(kube, "ha-t3")
    done = kube.wait(
        "workflow Succeeded", lambda: (kube.get("workflow", "ha") or {}).get("status", {}).get("phase") == "Succeeded"
    )
    assert done
    assert acted_by(kube, "ha-t2") == {"ha-b"}
    pods = sorted(p["metadata"]["name"] for p in kube.list("pods"))
    assert pods == [f"ha-t{i}-a1" for i in range(4)], "one pod per attempt"
    assert sorted(r["metadata"]["name"] for r in kube.list("scriptruns")) == [f"ha-t{i}" for i in range(4)]

    a.start()  # back, started later than b: the standby now
    kube.wait("ha-a standby", lambda: standby(a))
    assert not standby(b)

    b.stop()  # SIGTERM: Kopf says goodbye (lifetime 0), a takes over at once
    stopped = time.monotonic()
    kube.apply(scriptrun("after", {}, {EXIT: "0"}))
    kube.wait_phase("after", "Succeeded", timeout=LIFETIME + 30)
    handover = time.monotonic() - stopped
    assert acted_by(kube, "after") == {"ha-a"}
    for op in (a, b):
        assert not [e for e in op.errors() if "Traceback" in e], op.tail()
    CONTROL_PLANE_INFO.append(
        f"two replicas (Kopf peering, lifetime {LIFETIME}s): takeover after SIGKILL of the active one "
        f"{takeover:.1f}s (kill -> the next task's pod), after SIGTERM {handover:.1f}s (stop -> a new run Succeeded)"
    )


def _render(cluster: ControlPlane, *sets: str) -> subprocess.CompletedProcess[str]:
    args = [cluster.binary("helm"), "template", "x", str(CHART), f"--kube-version={cluster.versions['K8S_VERSION']}"]
    for value in sets:
        args += ["--set", value]
    return subprocess.run(args, capture_output=True, text=True, timeout=120)


def test_chart_runs_replicas_with_peering_and_shards(cluster: ControlPlane) -> None:
    docs = [d for d in yaml.safe_load_all(_render(cluster, "replicas=2", "shard.labelSelector=team=ml").stdout) if d]
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    assert deployment["spec"]["replicas"] == 2 and deployment["spec"]["strategy"] == {"type": "RollingUpdate"}
    env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["SCRIPTRUN_PEERING"] == "x-scriptrun" and env["SCRIPTRUN_PEERING_LIFETIME_SECONDS"] == "15"
    assert env["SCRIPTRUN_SHARD_SELECTOR"] == "team=ml"
    assert [d["metadata"]["name"] for d in docs if d["kind"] == "ClusterKopfPeering"] == ["x-scriptrun"]
    role = next(d for d in docs if d["kind"] == "ClusterRole" and d["metadata"]["name"] == "x-scriptrun-peering")
    assert role["rules"] == [
        {"apiGroups": ["kopf.dev"], "resources": ["clusterkopfpeerings"], "verbs": ["get", "list", "watch", "patch"]}
    ]
    namespaced = _render(cluster, "watchNamespaces={a,b}").stdout
    assert [
        (d["metadata"]["namespace"]) for d in yaml.safe_load_all(namespaced) if d and d["kind"] == "KopfPeering"
    ] == [
        "a",
        "b",
    ]
    refused = _render(cluster, "replicas=2", "peering.enabled=false")
    assert refused.returncode != 0 and "replicas > 1 needs peering.enabled" in refused.stderr
    single = [d for d in yaml.safe_load_all(_render(cluster, "peering.enabled=false").stdout) if d]
    assert next(d for d in single if d["kind"] == "Deployment")["spec"]["strategy"] == {"type": "Recreate"}
    assert not [d for d in single if "Peering" in d["kind"]]
