"""The Helm chart renders and the API server accepts it (its RBAC, enough and no more: test_rbac.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from scriptrun import API_GROUP, API_VERSION
from scriptrun.build.pod import PodInputs, RunRef, build_pod
from scriptrun.model.manifest import parse_object
from scriptrun.model.scriptrun import ScriptRun
from scriptrun.telemetry.alerts import OPERATOR_JOB
from tests.support.controlplane import ControlPlane

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
        "ClusterRole",  # only what is cluster-scoped: nodes, CRDs, namespaces
        "ClusterRoleBinding",
        *["CustomResourceDefinition"] * 4,  # ScriptRun, Workflow, Kopf's two peering kinds
        "Deployment",
        *["KopfPeering"] * 2,  # one in each watched namespace
        *["Role"] * 5,  # in each watched namespace the operator's and its peering's; the heartbeat's
        *["RoleBinding"] * 5,
        "ServiceAccount",
    ]
    deployment = next(d for d in yaml.safe_load_all(rendered) if d and d["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["--namespace=a", "--namespace=b"]
    # the heartbeat Lease (and its Role) where the operator watches: not the release's namespace here
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["SCRIPTRUN_HEARTBEAT_NAMESPACE"] == "a"
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    roles = {(d["metadata"]["name"], d["metadata"]["namespace"]) for d in docs if d["kind"] == "Role"}
    assert roles == {
        *{("scriptrun", ns) for ns in "ab"},
        *{("scriptrun-peering", ns) for ns in "ab"},
        ("scriptrun-heartbeat", "a"),
    }
    (cluster_role,) = [d for d in docs if d["kind"] == "ClusterRole"]
    assert {r for rule in cluster_role["rules"] for r in rule["resources"]} == {
        "nodes",
        "customresourcedefinitions",
        "namespaces",
    }
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def _matches(pod: dict[str, Any], monitor: dict[str, Any]) -> bool:
    """Would this PodMonitor scrape this pod: its labels, and a container port of that name."""
    labels = pod["metadata"]["labels"]
    containers = pod["spec"]["containers"] + pod["spec"].get("initContainers", [])
    ports = {p["name"] for c in containers for p in c.get("ports", [])}
    selected = monitor["selector"]["matchLabels"].items() <= labels.items()
    return selected and all(e["port"] in ports for e in monitor["podMetricsEndpoints"])


def _render(cluster: ControlPlane, *values: str) -> list[dict[str, Any]]:
    sets = [arg for value in values for arg in ("--set", value)]
    return [d for d in yaml.safe_load_all(helm(cluster, "template", "scriptrun", str(CHART), "-n", NS, *sets)) if d]


def test_chart_ships_dashboards_and_podmonitors_only_when_enabled(cluster: ControlPlane) -> None:
    assert not [d for d in _render(cluster) if d["kind"] in ("ConfigMap", "PodMonitor")]
    docs = _render(cluster, "dashboards.enabled=true", "podMonitor.enabled=true", "dashboards.annotations.f=x")

    # one ConfigMap a generated dashboard, labelled for the Grafana sidecar
    maps = [d for d in docs if d["kind"] == "ConfigMap"]
    files = {f.name: f.read_text() for f in (CHART / "files" / "dashboards").glob("*.json")}
    assert files and len(maps) == len(files)
    shipped: dict[str, str] = {}
    for cm in maps:
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert cm["metadata"]["annotations"] == {"f": "x"}
        shipped.update(cm["data"])
    assert shipped == {name: text.rstrip("\n") for name, text in files.items()}
    cluster.kubectl("create", "namespace", NS, check=False)
    cluster.kubectl("apply", "--dry-run=server", "-n", NS, "-f", "-", input=yaml.safe_dump_all(maps))

    # the operator scraped as the alerts' job, run pods' monitor sidecars in every namespace
    monitors = {d["metadata"]["name"]: d["spec"] for d in docs if d["kind"] == "PodMonitor"}
    assert set(monitors) == {"scriptrun", "scriptrun-runs"}
    operator, runs = monitors["scriptrun"], monitors["scriptrun-runs"]
    relabel = {"action": "replace", "targetLabel": "job", "replacement": OPERATOR_JOB}
    assert operator["podMetricsEndpoints"][0]["relabelings"] == [relabel]
    assert operator["podMetricsEndpoints"][0]["honorLabels"] is True  # the runs' `namespace` label stays
    assert runs["namespaceSelector"] == {"any": True} and runs["podMetricsEndpoints"][0]["honorLabels"] is True
    operator_pod = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]
    body = {"apiVersion": f"{API_GROUP}/{API_VERSION}", "kind": "ScriptRun", "metadata": {"name": "r"}}
    run = parse_object({**body, "spec": {"script": {"source": "print(1)"}}})
    assert isinstance(run, ScriptRun)
    run_pod = build_pod(PodInputs(run=RunRef("r", "ns1", "uid-1"), spec=run.spec, attempt=1))
    assert _matches(operator_pod, operator) and not _matches(operator_pod, runs)
    assert _matches(run_pod, runs) and not _matches(run_pod, operator)

    # no operator PodMonitor when it serves no metrics; run pods in the watched namespaces
    docs = _render(cluster, "podMonitor.enabled=true", "operator.metricsPort=0", "watchNamespaces={a,b}")
    monitors = {d["metadata"]["name"]: d["spec"] for d in docs if d["kind"] == "PodMonitor"}
    assert set(monitors) == {"scriptrun-runs"}
    assert monitors["scriptrun-runs"]["namespaceSelector"] == {"matchNames": ["a", "b"]}


def test_chart_sets_the_otel_variables_when_tracing_is_on(cluster: ControlPlane) -> None:
    def operator_env(*values: str) -> dict[str, str]:
        (deployment,) = [d for d in _render(cluster, *values) if d["kind"] == "Deployment"]
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        return {e["name"]: e.get("value") for e in container["env"]}

    assert not [k for k in operator_env() if k.startswith("OTEL_")]
    env = operator_env(
        "tracing.enabled=true",
        "tracing.endpoint=http://collector:4318",
        "tracing.protocol=http/protobuf",
        "tracing.sampleRatio=0.25",
        "tracing.extraEnv.OTEL_EXPORTER_OTLP_TIMEOUT=5000",
    )
    assert env["OTEL_TRACES_EXPORTER"] == "otlp" and env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://collector:4318"
    assert env["OTEL_EXPORTER_OTLP_PROTOCOL"] == "http/protobuf"
    assert env["OTEL_TRACES_SAMPLER"] == "parentbased_traceidratio" and env["OTEL_TRACES_SAMPLER_ARG"] == "0.25"
    assert env["OTEL_EXPORTER_OTLP_TIMEOUT"] == "5000" and env["OTEL_SERVICE_NAME"] == "scriptrun-operator"
    proc = subprocess.run(
        [cluster.binary("helm"), "template", "x", str(CHART), "--set", "tracing.enabled=true", "--kube-version=1.34.1"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0 and "tracing.endpoint is required" in proc.stderr
