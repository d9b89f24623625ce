"""Debian's `prometheus` on the real node: inside the node's network namespace (where pod IPs route), scraping the
in-cluster operator and the live monitor sidecar of a run during a workflow, with the chart's rules loaded. Every
series a rule reads and every dashboard expression has data here, the live sidecar panels included (they are
expected-empty only on kwok).

Debian builds prometheus without Kubernetes discovery (removed in 1.5.0: "the insane amount of dependencies in
their client library"; `kubernetes_sd_configs` does not parse). So the test discovers pods itself, as
kubernetes_sd_configs role pod does (one target per container port, init containers included, the same meta
labels), into a file_sd file, and the jobs relabel those labels as users' configs do. The jobs are what the
Prometheus Operator makes of the chart's PodMonitors (namespace, pod and container target labels, Failed and
Succeeded pods dropped), with honor_labels on both: without it the operator's own `namespace` label (the run's)
would become `exported_namespace`."""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scriptrun.telemetry import dashboards
from scriptrun.telemetry.alerts import ALERTS, OPERATOR_JOB
from tests.e2e.conftest import OPERATOR_NS, REALNODE_INFO
from tests.support.controlplane import _die_with_parent
from tests.support.kube import Kube, scriptrun
from tests.support.prometheus import api, tools
from tests.support.realnode import SUPPORT, RealCluster

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "charts" / "scriptrun" / "files" / "alerts.yaml"
RUNS_JOB = "scriptrun-runs"
PORT = 9090  # Prometheus's, on the node namespace's loopback; the host reaches it through netns_forward.py
META = "__meta_kubernetes_pod_"

# 50 MiB resident and half a core, for 20 s: long enough for discovery (Prometheus applies it every 5 s) and scrapes
HOLD = """
import time
block = bytearray(50 * 1024 * 1024)
for i in range(0, len(block), 4096):
    block[i] = 1
end = time.monotonic() + 20
while time.monotonic() < end:
    busy = time.monotonic() + 0.1
    while time.monotonic() < busy:
        pass
    time.sleep(0.1)
"""


def _label(name: str) -> str:
    return re.sub(r"\W", "_", name)


def pod_targets(pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """file_sd target groups as kubernetes_sd_configs role pod discovers them: one per container port of every pod
    with an IP, init containers (native sidecars) included, with that role's meta labels."""
    groups = []
    for pod in pods:
        meta, status = pod["metadata"], pod.get("status") or {}
        if not status.get("podIP"):
            continue
        labels = {
            "__meta_kubernetes_namespace": meta["namespace"],
            META + "name": meta["name"],
            META + "ip": status["podIP"],
            META + "phase": status.get("phase", ""),
            **{META + "label_" + _label(k): v for k, v in (meta.get("labels") or {}).items()},
        }
        for init, key in ((False, "containers"), (True, "initContainers")):
            for container in pod["spec"].get(key) or []:
                for port in container.get("ports") or []:
                    number = str(port["containerPort"])
                    groups.append(
                        {
                            "targets": [f"{status['podIP']}:{number}"],
                            "labels": {
                                **labels,
                                META + "container_name": container["name"],
                                META + "container_init": str(init).lower(),
                                META + "container_port_name": port.get("name", ""),
                                META + "container_port_number": number,
                            },
                        }
                    )
    return groups


def discover(cluster: RealCluster, path: Path, stop: threading.Event) -> None:
    """Keeps `path` (file_sd) up to date with the cluster's pods until `stop` is set."""
    written = None
    while not stop.wait(0.5):
        try:
            text = json.dumps(pod_targets(cluster.request("GET", "/api/v1/pods")["items"]), sort_keys=True)
        except (OSError, ValueError):  # the API server busy or going away: try again
            continue
        if text != written:
            path.with_suffix(".tmp").write_text(text)
            os.replace(path.with_suffix(".tmp"), path)  # Prometheus watches the directory: one whole file at a time
            written = text


def pod_job(name: str, files: list[str], label: str, value: str, namespace: str = ".+") -> dict[str, Any]:
    """A scrape job for the `metrics` container port of pods labelled label=value in namespaces matching `namespace`."""
    return {
        "job_name": name,
        "honor_labels": True,
        "file_sd_configs": [{"files": files}],
        "relabel_configs": [
            {"action": "keep", "source_labels": [META + "label_" + _label(label)], "regex": value},
            {"action": "keep", "source_labels": ["__meta_kubernetes_namespace"], "regex": namespace},
            {"action": "keep", "source_labels": [META + "container_port_name"], "regex": "metrics"},
            {"action": "drop", "source_labels": [META + "phase"], "regex": "Failed|Succeeded"},
            {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
            {"source_labels": [META + "name"], "target_label": "pod"},
            {"source_labels": [META + "container_name"], "target_label": "container"},
        ],
    }


@pytest.fixture(scope="module")
def prometheus(realnode: RealCluster, installed: str) -> Iterator[str]:
    binary, promtool = tools()
    check = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    workdir = realnode.workdir / "prometheus"
    (workdir / "sd").mkdir(parents=True)
    pods = workdir / "sd" / "pods.json"
    pods.write_text("[]")
    stop = threading.Event()
    discovery = threading.Thread(target=discover, args=(realnode, pods, stop), daemon=True)
    discovery.start()
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [
            pod_job(OPERATOR_JOB, [str(pods)], "app.kubernetes.io/name", "scriptrun", installed),
            pod_job(RUNS_JOB, [str(pods)], "app.kubernetes.io/managed-by", "scriptrun"),
        ],
    }
    (workdir / "prometheus.yml").write_text(json.dumps(config))
    args = [
        binary,
        f"--config.file={workdir / 'prometheus.yml'}",
        f"--storage.tsdb.path={workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{PORT}",
    ]
    with (workdir / "prometheus.log").open("wb") as log:
        server = subprocess.Popen(
            realnode.netns.wrap(args), stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent
        )
    forward = subprocess.Popen(
        [sys.executable, "-P", str(SUPPORT / "netns_forward.py"), realnode.netns.path, str(PORT)],
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=_die_with_parent,
    )
    try:
        assert forward.stdout is not None
        url = f"http://127.0.0.1:{int(forward.stdout.readline())}"
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, (workdir / "prometheus.log").read_text()[-2000:]
            assert time.monotonic() < deadline, (workdir / "prometheus.log").read_text()[-2000:]
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                time.sleep(0.2)
        yield url
    finally:
        stop.set()
        discovery.join(10)
        for proc in (server, forward):
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_prometheus_scrapes_the_operator_and_a_live_sidecar(kube: Kube, prometheus: str) -> None:
    started = time.time()
    url, ns = prometheus, kube.ns

    def has_data(expr: str, instant: bool = False) -> int:
        """Series the expression returns: now (instant), or over the test's time so far (range, as a graph)."""
        if instant:
            return len(api(url, "query", query=expr)["result"])
        window = {"start": str(started), "end": str(time.time()), "step": "1"}
        return len(api(url, "query_range", query=expr, **window)["result"])

    tasks = [
        {"name": "hold", "script": {"source": HOLD}},
        {
            "name": "bad",
            "script": {"source": "import sys\nsys.exit(3)"},
            "retryStrategy": {"limit": 1, "backoff": {"durationSeconds": 1}},
        },
    ]
    kube.apply(
        {
            "apiVersion": "scriptrun.dev/v1alpha1",
            "kind": "Workflow",
            "metadata": {"name": "observed"},
            "spec": {"tasks": tasks},
        }
    )
    # a run whose pod the API server refuses (requests above limits): the API errors panel
    refused = {"resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}}
    kube.apply(scriptrun("refused", refused))

    # while the task runs: its monitor sidecar (an init container, restartPolicy Always) is scraped
    hold = f'namespace="{ns}", workflow="observed", task="hold"'

    def values(metric: str) -> list[float]:
        return [float(r["value"][1]) for r in api(url, "query", query=f"{metric}{{{hold}}}")["result"]]

    kube.wait(
        "the sidecar's RSS (>= 50 MiB)",
        lambda: any(v >= 50 * 2**20 for v in values("scriptrun_run_memory_rss_bytes")),
        timeout=120,
        interval=1,
    )
    kube.wait(
        "the sidecar's CPU (> 0.1 cores)",
        lambda: any(v > 0.1 for v in values("scriptrun_run_cpu_cores")),
        timeout=30,
        interval=1,
    )
    targets = api(url, "targets", state="active")["activeTargets"]
    sidecars = [t["labels"] | {"health": t["health"]} for t in targets if t["scrapePool"] == RUNS_JOB]
    hold_pod = {"namespace": ns, "pod": "observed-hold-a1", "container": "monitor", "health": "up"}
    assert any(hold_pod.items() <= target.items() for target in sidecars), sidecars

    kube.wait(
        "workflow failed",
        lambda: ((kube.get("workflow", "observed") or {}).get("status") or {}).get("phase") == "Failed",
        timeout=180,
        interval=1,
    )
    kube.wait_phase("refused", "Failed")
    finished = f'scriptrun_finished_total{{kind="Workflow", namespace="{ns}"}}'  # the operator's namespace label kept
    kube.wait("Prometheus scraped the finished workflow", lambda: has_data(finished, instant=True), timeout=30)

    # every series a rule reads has data, the memory rule's too (the live RSS; its limits side, from
    # kube-state-metrics, is not here, so that rule evaluates to nothing)
    for alert in ALERTS:
        api(url, "query", query=alert.expr)  # evaluates (true or not)
        assert has_data(alert.data), f"{alert.name}: no data for {alert.data}"
    # every dashboard expression, as Grafana runs it with all values selected (graphs over the time range,
    # other panels now): nothing is expected-empty on a real node; rates need two scrapes after a change
    counts: dict[str, int] = {}
    for board, panel, query in dashboards.queries():
        where = f"{board.uid} / {panel.title}: {query.expr}"
        expr, instant = dashboards.runnable(query.expr), panel.kind != "timeseries"
        counts[where] = kube.wait(f"data for {where}", functools.partial(has_data, expr, instant), timeout=30)
    for board in dashboards.DASHBOARDS:
        for variable in board.variables:
            match = dashboards.runnable(variable.selector)
            assert api(url, "series", **{"match[]": match, "start": str(started)}), variable

    # the rules are loaded and evaluate without errors; the operator is up
    def evaluated() -> bool:
        rules = [r for g in api(url, "rules")["groups"] for r in g["rules"]]
        assert {r["name"] for r in rules} == {a.name for a in ALERTS}
        return all(r.get("health") == "ok" for r in rules)

    kube.wait("rules evaluated without errors", evaluated, timeout=30)
    up = api(url, "query", query=f'up{{job="{OPERATOR_JOB}", namespace="{OPERATOR_NS}"}}')["result"]
    assert [u["value"][1] for u in up] == ["1"], up

    series = {
        job: len(api(url, "series", **{"match[]": f'{{job="{job}"}}', "start": str(started)}))
        for job in (OPERATOR_JOB, RUNS_JOB)
    }
    REALNODE_INFO.append(
        f"prometheus in the node's netns: {series[OPERATOR_JOB]} operator series, {series[RUNS_JOB]} monitor-sidecar"
        f" series; {len(counts)} dashboard queries with data ({sum(counts.values())} series), {len(ALERTS)} rules ok"
    )
