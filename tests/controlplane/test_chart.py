"""The Helm chart renders, the API server accepts it, and its RBAC is enough to run the operator."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

import yaml

from tests.support.controlplane import ControlPlane
from tests.support.kube import Kube, scriptrun
from tests.support.operator import OperatorProcess

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "scriptrun"
NS = "scriptrun-system"


def helm(cluster: ControlPlane, *args: str) -> str:
    # render for the cluster under test (helm's built-in default is an old v1.20)
    args = (*args, f"--kube-version={cluster.versions['K8S_VERSION']}")
    proc = subprocess.run([cluster.binary("helm"), *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_chart_lints_and_renders(cluster: ControlPlane) -> None:
    helm(cluster, "lint", str(CHART))
    rendered = helm(
        cluster,
        "template",
        "scriptrun",
        str(CHART),
        "--namespace",
        NS,
        "--include-crds",
        "--set",
        "watchNamespaces={a,b}",
    )
    kinds = sorted(d["kind"] for d in yaml.safe_load_all(rendered) if d)
    assert kinds == [
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "CustomResourceDefinition",
        "Deployment",
        "ServiceAccount",
    ]
    deployment = next(d for d in yaml.safe_load_all(rendered) if d and d["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["--namespace=a", "--namespace=b"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_chart_rbac_is_enough_to_run_the_operator(
    cluster: ControlPlane, kube: Kube, live_operator: OperatorProcess
) -> None:
    cluster.kubectl("create", "namespace", NS, check=False)
    rendered = helm(cluster, "template", "scriptrun", str(CHART), "--namespace", NS)
    cluster.kubectl("apply", "-n", NS, "-f", "-", input=rendered)
    token = cluster.kubectl("-n", NS, "create", "token", "scriptrun", "--duration=1h").stdout.strip()
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    restricted = {
        **admin,
        "users": [{"name": "operator", "user": {"token": token}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "operator"}}],
    }
    path = cluster.workdir / "operator-sa.kubeconfig"
    path.write_text(yaml.safe_dump(restricted))
    assert base64.b64decode(admin["clusters"][0]["cluster"]["certificate-authority-data"])

    live_operator.kill()  # one operator at a time
    sa_operator = OperatorProcess(cluster, extra_env={"KUBECONFIG": str(path)})
    sa_operator.log = cluster.workdir / "operator-sa.log"
    try:
        sa_operator.start()
        retry = {"retryStrategy": {"limit": 1, "backoff": {"durationSeconds": 0}}}
        kube.apply(
            [
                scriptrun("rbac-ok", {}, {"test.scriptrun.dev/exit-code": "0"}),
                scriptrun("rbac-fail", retry, {"test.scriptrun.dev/exit-code": "2"}),
            ]
        )
        kube.wait_phase("rbac-ok", "Succeeded")
        failed = kube.wait_phase("rbac-fail", "Failed")
        assert len(failed["attempts"]) == 2
        assert {e["reason"] for e in kube.events("rbac-ok")} >= {"AttemptCreated", "Succeeded"}
        log = sa_operator.log.read_text()
        assert "Forbidden" not in log and "403" not in log, sa_operator.tail()
    finally:
        sa_operator.stop()
