"""As a user does it, on a real node: every example applied with `kubectl apply -f`, waited for with
`kubectl wait`, and checked: real pods ran real Python, outputs travelled between tasks, the
measured usage is there, and `kubectl get` prints the printer columns."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from tests.support.kube import Kube

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
KINDS = {"Workflow": "workflow", "ScriptRun": "scriptrun"}


def _runs(path: Path) -> list[tuple[str, str]]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    return [(KINDS[d["kind"]], d["metadata"]["name"]) for d in docs if d["kind"] in KINDS]


def _children(kube: Kube, workflow: str) -> dict[str, dict[str, Any]]:
    runs = kube.list("scriptruns", f"scriptrun.dev/workflow={workflow}")
    return {r["metadata"]["labels"]["scriptrun.dev/node"]: r for r in runs}


def test_every_example_succeeds_on_a_real_node(kube: Kube) -> None:
    assert len(EXAMPLES) >= 5
    for path in EXAMPLES:
        kube.cluster.kubectl("-n", kube.ns, "apply", "-f", str(path))
    for path in EXAMPLES:
        for kind, name in _runs(path):
            proc = kube.cluster.kubectl(
                "-n",
                kube.ns,
                "wait",
                f"{kind}/{name}",
                "--for=jsonpath={.status.phase}=Succeeded",
                "--timeout=240s",
                check=False,
            )
            assert proc.returncode == 0, (
                f"{path.name}: {kind}/{name} did not succeed: {proc.stderr}\n{kube.diagnostics()}"
            )

    # hello: real Python printed what the manifest asked for, and the monitor measured it
    hello = kube.get("scriptrun", "hello")
    assert hello is not None
    pod = hello["status"]["attempts"][-1]["podName"]
    log = kube.cluster.kubectl("-n", kube.ns, "logs", pod, "-c", "main").stdout
    assert "hello from scriptrun on Python 3." in log and "greeting: hi" in log
    usage = hello["status"]["usage"]
    assert usage["available"] is True and usage["exitCode"] == 0
    assert 1 < usage["memoryMaxMb"] < 100, usage

    # ETL: outputs passed from extract through the transform matrix to load
    etl = _children(kube, "etl")
    extract = etl["extract"]["status"]["outputs"]
    assert extract["rows"] == "2000" and len(extract["checksum"]) == 16
    sizes = [int(c["status"]["outputs"]["bytes"]) for node, c in etl.items() if node.startswith("transform")]
    assert len(sizes) == 3 and all(s > 0 for s in sizes)
    assert int(etl["load"]["status"]["outputs"]["total"]) == sum(sizes)
    for node, child in etl.items():
        assert child["status"]["usage"]["available"] is True, (node, child["status"].get("usage"))
        assert child["status"]["attemptCount"] == 1, node

    # the API integration retried twice with real exit codes before it got its records
    api = _children(kube, "api-sync")
    fetch = api["fetch"]["status"]
    assert [a.get("exitCode") for a in fetch["attempts"]] == [75, 75, 0]
    assert api["fetch"]["status"]["outputs"] == {"records": "5"}

    # the diamond took the fast branch and skipped the other
    diamond = kube.get("workflow", "diamond")
    assert diamond is not None
    tasks = diamond["status"]["tasks"]
    assert tasks["fast"]["phase"] == "Succeeded" and tasks["thorough"]["phase"] == "Skipped"

    # the file fan-out merged eight shards
    files = _children(kube, "files")
    assert sum(1 for node in files if node.startswith("process")) == 8


def test_kubectl_get_by_singular_name_prints_columns(kube: Kube) -> None:
    kube.apply(
        [
            {
                "apiVersion": "scriptrun.dev/v1alpha1",
                "kind": "ScriptRun",
                "metadata": {"name": "cols"},
                "spec": {"script": {"source": "print('columns')"}},
            }
        ]
    )
    kube.wait_phase("cols", "Succeeded", timeout=120)
    out = kube.cluster.kubectl("-n", kube.ns, "get", "scriptrun", "cols").stdout
    header, row = out.splitlines()[:2]
    assert header.split()[:2] == ["NAME", "PHASE"] and row.split()[:2] == ["cols", "Succeeded"], out
    wide = json.loads(kube.cluster.kubectl("-n", kube.ns, "get", "sr", "cols", "-o", "json").stdout)
    assert wide["status"]["phase"] == "Succeeded"

    kube.apply(
        {
            "apiVersion": "scriptrun.dev/v1alpha1",
            "kind": "Workflow",
            "metadata": {"name": "cols-wf"},
            "spec": {"tasks": [{"name": "one", "script": {"source": "print(1)"}}]},
        }
    )
    kube.cluster.kubectl(
        "-n", kube.ns, "wait", "workflow/cols-wf", "--for=jsonpath={.status.phase}=Succeeded", "--timeout=120s"
    )
    out = kube.cluster.kubectl("-n", kube.ns, "get", "workflow", "cols-wf").stdout
    header, row = out.splitlines()[:2]
    assert header.split()[:3] == ["NAME", "PHASE", "PROGRESS"], out
    assert row.split()[:3] == ["cols-wf", "Succeeded", "1/1"], out
