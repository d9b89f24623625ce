"""Workflows on a real node: a failing task retries and the exit handler sees the failure; the
operator pod is deleted mid-workflow and the Deployment's new pod finishes it, nothing run twice;
a task whose pod cannot start shows why in the workflow's task summary."""

from __future__ import annotations

import json
from typing import Any

from tests.e2e.conftest import OPERATOR_NS
from tests.support.kube import Kube


def workflow(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "scriptrun.dev/v1alpha1", "kind": "Workflow", "metadata": {"name": name}, "spec": spec}


def wait_workflow(kube: Kube, name: str, phase: str, timeout: float = 240) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        obj = kube.get("workflow", name) or {}
        status: dict[str, Any] = obj.get("status") or {}
        return status if status.get("phase") == phase else None

    return kube.wait(f"workflow {name} {phase}", done, timeout=timeout, interval=1)


def test_failing_task_retries_and_the_exit_handler_sees_it(kube: Kube) -> None:
    spec = {
        "tasks": [
            {
                "name": "flaky",
                "retryStrategy": {"limit": 1, "backoff": {"durationSeconds": 1}},
                "script": {"source": "import sys\nprint('failing on purpose')\nsys.exit(3)"},
            }
        ],
        "onExit": [
            {
                "name": "report",
                "env": [
                    {"name": "STATUS", "value": "{{workflow.status}}"},
                    {"name": "FAILURES", "value": "{{workflow.failures}}"},
                ],
                "script": {
                    "source": "import json, os\n"
                    "print('status', os.environ['STATUS'], 'failures', json.loads(os.environ['FAILURES']))"
                },
            }
        ],
    }
    kube.apply(workflow("fails", spec))
    status = wait_workflow(kube, "fails", "Failed")
    flaky = kube.get("scriptrun", "fails-flaky")
    assert flaky is not None
    attempts = flaky["status"]["attempts"]
    assert [a["exitCode"] for a in attempts] == [3, 3], attempts
    assert status["tasks"]["flaky"]["phase"] == "Failed"

    def reported() -> str | None:
        report = kube.get("scriptrun", "fails-report") or {}
        if (report.get("status") or {}).get("phase") != "Succeeded":
            return None
        pod = report["status"]["attempts"][-1]["podName"]
        return kube.cluster.kubectl("-n", kube.ns, "logs", pod, "-c", "main").stdout

    log = kube.wait("the exit handler's report", reported, timeout=120)
    assert "status Failed" in log and "['flaky']" in log, log


def _operator_pod(kube: Kube) -> str | None:
    """The one live operator pod, or None while there is not exactly one."""
    out = kube.cluster.kubectl(
        "-n", OPERATOR_NS, "get", "pods", "-l", "app.kubernetes.io/name=scriptrun", "-o", "json"
    ).stdout
    pods = [p for p in json.loads(out)["items"] if not p["metadata"].get("deletionTimestamp")]
    return str(pods[0]["metadata"]["name"]) if len(pods) == 1 else None


def test_operator_pod_deleted_mid_workflow(kube: Kube) -> None:
    step = "import time\ntime.sleep(2)\nprint('step done')"
    tasks: list[dict[str, Any]] = [{"name": "a", "script": {"source": step}}]
    for i, name in enumerate(["b", "c", "d", "e"]):
        tasks.append({"name": name, "dependencies": ["a" if i == 0 else "bcde"[i - 1]], "script": {"source": step}})
    tasks.append(
        {
            "name": "wide",
            "dependencies": ["a"],
            "matrix": {"params": [{"name": "i", "values": list("1234")}]},
            "script": {"source": step},
        }
    )
    kube.apply(workflow("survives", {"tasks": tasks}))
    kube.wait_phase("survives-a", "Succeeded", timeout=120)
    before = _operator_pod(kube)
    assert before is not None
    kube.cluster.kubectl("-n", OPERATOR_NS, "delete", "pod", before, "--wait=false")
    after = kube.wait(
        "a new operator pod", lambda: (name := _operator_pod(kube)) not in (None, before) and name, timeout=120
    )
    kube.cluster.kubectl("-n", OPERATOR_NS, "wait", "--for=condition=Ready", f"pod/{after}", "--timeout=120s")
    status = wait_workflow(kube, "survives", "Succeeded")
    assert status["progress"].startswith("9/"), status["progress"]
    children = kube.list("scriptruns", "scriptrun.dev/workflow=survives")
    assert len(children) == 9
    for child in children:
        assert child["status"]["attemptCount"] == 1, child["metadata"]["name"]
    pods = kube.list("pods", "app.kubernetes.io/managed-by=scriptrun")
    assert sorted(p["metadata"]["name"] for p in pods) == sorted(f"{c['metadata']['name']}-a1" for c in children)


def test_pending_task_shows_why_in_the_workflow(kube: Kube) -> None:
    spec = {
        "tasks": [
            {
                "name": "stuck",
                "image": "docker.io/scriptrun/not-there:0",
                "imagePullPolicy": "Never",
                "pendingTimeoutSeconds": 10,
                "script": {"source": "print(1)"},
            }
        ]
    }
    kube.apply(workflow("stuck", spec))

    def shown() -> dict[str, Any] | None:
        status = ((kube.get("workflow", "stuck") or {}).get("status") or {}).get("tasks", {}).get("stuck") or {}
        return status if "ErrImageNeverPull" in (status.get("message") or "") else None

    task = kube.wait("the task summary naming ErrImageNeverPull", shown, timeout=90)
    assert task["phase"] in ("Pending", "Failed"), task
    final = wait_workflow(kube, "stuck", "Failed", timeout=120)
    assert "ErrImageNeverPull" in (final["tasks"]["stuck"].get("message") or ""), final
