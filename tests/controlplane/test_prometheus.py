"""The operator's alerting rules and dashboards against real tools: Debian's `promtool check rules`,
and Debian's `prometheus` scraping the real operator during a workflow, with the rules loaded, every
series a rule reads present and every dashboard expression returning data (or listed as
expected-empty, with the reason: the live sidecar panels, shown with data on the real node)."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from scriptrun.telemetry import dashboards
from scriptrun.telemetry.alerts import ALERTS, OPERATOR_JOB, render
from scriptrun.telemetry.usage_metrics import metric_names
from tests.support.controlplane import ControlPlane, _die_with_parent, free_port
from tests.support.kube import Kube, scriptrun
from tests.support.operator import OperatorProcess
from tests.support.prometheus import api, tools

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "charts" / "scriptrun" / "files" / "alerts.yaml"
EXIT = "test.scriptrun.dev/exit-code"  # kwok ends the pod with this exit code
MONITOR = "test.scriptrun.dev/monitor-message"  # and writes this as the monitor's termination message
SUMMARY = {"cpuAvgPercent": 50.0, "memoryMaxMb": 12.5, "userTimeSeconds": 1.5, "systemTimeSeconds": 0.5}


@pytest.fixture(scope="module")
def prometheus(cluster: ControlPlane, operator: OperatorProcess) -> Iterator[str]:
    binary, _ = tools()
    if not operator.alive:  # an earlier test killed it: the port stays the same when it comes back
        operator.start()
    workdir = cluster.workdir / "prometheus"
    workdir.mkdir(exist_ok=True)
    port = free_port()
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [
            {"job_name": OPERATOR_JOB, "static_configs": [{"targets": [f"127.0.0.1:{operator.metrics_port}"]}]}
        ],
    }
    (workdir / "prometheus.yml").write_text(json.dumps(config))
    log = (workdir / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=_die_with_parent,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as resp:
                if resp.status == 200:
                    break
        except OSError:
            time.sleep(0.2)
    else:
        proc.kill()
        raise TimeoutError((workdir / "prometheus.log").read_text()[-2000:])
    yield url
    proc.terminate()
    proc.wait(timeout=30)
    log.close()


def test_the_rule_file_is_generated_and_passes_promtool() -> None:
    assert RULES.read_text() == render(), "charts/scriptrun/files/alerts.yaml is stale: run make crds"
    _, promtool = tools()
    proc = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in proc.stdout


def test_prometheus_scrapes_the_operator_and_every_expression_has_data(kube: Kube, prometheus: str) -> None:
    ann = {MONITOR: json.dumps(SUMMARY)}  # kwok runs no monitor: the summary it would have written
    tasks = [
        {"name": "ok", "script": {"source": "print(1)"}, "podMetadata": {"annotations": {EXIT: "0", **ann}}},
        {
            "name": "bad",
            "script": {"source": "print(1)"},
            "podMetadata": {"annotations": {EXIT: "1", **ann}},
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
    # and a run whose pod the API server refuses (requests above limits): the API errors panel
    refused = {"script": {"source": "print(1)"}, "resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}}
    kube.apply(scriptrun("refused", refused))
    kube.wait(
        "workflow failed",
        lambda: ((kube.get("workflow", "observed") or {}).get("status") or {}).get("phase") == "Failed",
        timeout=60,
    )
    kube.wait_phase("refused", "Failed")
    ns = kube.ns

    def scraped_the_end() -> bool:
        done = api(prometheus, "query", query=f'scriptrun_finished_total{{kind="Workflow",namespace="{ns}"}}')
        return bool(done["result"])

    kube.wait("Prometheus scraped the finished workflow", scraped_the_end, timeout=30)
    empty = []
    for alert in ALERTS:
        api(prometheus, "query", query=alert.expr)  # evaluates (true or not)
        result = api(prometheus, "query", query=alert.data)["result"]
        if alert.expected_empty:
            empty.append(alert.name)
            continue
        assert result, f"{alert.name}: no data for {alert.data}"
    assert empty == ["ScriptrunRunNearMemoryLimit"]  # listed with its reason in scriptrun.telemetry.alerts

    # every dashboard expression, as Grafana runs it with all values selected, returns data; rates
    # need two scrapes after the change, so wait for each a little
    missing: dict[str, str] = {}
    for board, panel, query in dashboards.queries():
        where = f"{board.uid} / {panel.title}: {query.expr}"
        if query.expected_empty:
            missing[where] = query.expected_empty
            continue

        def answers(query: dashboards.Query = query) -> bool:
            return bool(api(prometheus, "query", query=dashboards.runnable(query.expr))["result"])

        kube.wait(f"data for {where}", answers, timeout=30)
    assert all("real node" in why for why in missing.values()), missing  # tests/e2e shows those with data
    sidecar = tuple(metric_names())  # only live monitor sidecars serve these: not on kwok
    for board in dashboards.DASHBOARDS:
        for variable in board.variables:
            if not variable.selector.startswith(sidecar):
                assert api(prometheus, "series", **{"match[]": dashboards.runnable(variable.selector)}), variable

    # the rules are loaded and evaluate without errors
    groups = api(prometheus, "rules")["groups"]
    rules = {r["name"]: r for g in groups for r in g["rules"]}
    assert set(rules) == {a.name for a in ALERTS}

    def evaluated() -> bool:
        now = api(prometheus, "rules")["groups"]
        return all(r.get("health") == "ok" for g in now for r in g["rules"])

    kube.wait("rules evaluated without errors", evaluated, timeout=30)
    # a real operator's up series, and no alert about it
    up = api(prometheus, "query", query=f'up{{job="{OPERATOR_JOB}"}}')["result"]
    assert up and up[0]["value"][1] == "1"
