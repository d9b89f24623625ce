"""Chaos: 200-task Workflows (a 40-way matrix, retries, failures a retry gets past, tasks that take
time) while the operator is SIGKILLed at random moments, the API server and etcd are restarted, every
watch stream is cut, child ScriptRuns and pods are deleted by someone else and a kwok node is removed.

Every Workflow must end in a terminal phase with a reason, and the API server's own audit log (the
operator runs as a ServiceAccount, whose requests it records) must show: no task lost, exactly one pod
created per attempt, no child created twice. The figures go to the summary.

`make test` runs the bounded variant (SCRIPTRUN_CHAOS_KILLS, default 6, one or two Workflows);
`make chaos` the full one (100 kills). SCRIPTRUN_CHAOS_SEED replays a run's random choices.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import time
import urllib.error
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import yaml

from tests.controlplane.conftest import CONTROL_PLANE_INFO, ROOT
from tests.support.chaos import TcpProxy, restart
from tests.support.controlplane import ControlPlane, binaries_dir
from tests.support.operator import OperatorProcess

KILLS = int(os.environ.get("SCRIPTRUN_CHAOS_KILLS") or 6)
SEED = int(os.environ.get("SCRIPTRUN_CHAOS_SEED") or time.time_ns() % 10**6)
EXIT, FIRST_EXIT, DELAY = (f"test.scriptrun.dev/{k}" for k in ("exit-code", "first-exit-code", "delay"))
API = "/apis/scriptrun.dev/v1alpha1"
TERMINAL_WF = {"Succeeded", "Failed", "Error"}
TERMINAL_NODE = {"Succeeded", "Failed", "Skipped", "Omitted"}
SLOW = 20.0  # a recovery this long is named in the summary, with the operator log's start marker
MATRIX, CHAIN = 40, 79  # 1 + 40 + 2*79 + 1 = 200 task nodes


def workflow(name: str, rng: random.Random) -> dict[str, Any]:
    def task(task_name: str, deps: list[str], **extra: Any) -> dict[str, Any]:
        ann = {EXIT: "0", DELAY: f"{rng.randint(200, 1500)}ms"}
        if rng.random() < 0.2:
            ann[FIRST_EXIT] = "3"  # the first attempt fails, its retry succeeds
        return {
            "name": task_name,
            "dependencies": deps,
            "script": {"source": "print('chaos')"},
            "retryStrategy": {"limit": 4, "retryPolicy": "Always", "backoff": {"durationSeconds": 1}},
            "podMetadata": {"annotations": ann},
            **extra,
        }

    tasks = [task("prep", [])]
    tasks.append(task("fan", ["prep"], matrix={"params": [{"name": "i", "values": [str(i) for i in range(MATRIX)]}]}))
    for i in range(CHAIN):
        tasks.append(task(f"a{i:02d}", ["prep"]))
        tasks.append(task(f"b{i:02d}", [f"a{i:02d}"]))
    tasks.append(task("join", ["fan", "a00", "b00"]))
    return {
        "apiVersion": "scriptrun.dev/v1alpha1",
        "kind": "Workflow",
        "metadata": {"name": name},
        "spec": {"tasks": tasks},
    }


@dataclass
class Tally:
    kills: int = 0
    recoveries: list[float] = field(default_factory=list)
    slow: list[str] = field(default_factory=list)  # recoveries over SLOW seconds: which start of the log to read
    faults: list[str] = field(default_factory=list)
    workflows: list[str] = field(default_factory=list)
    phases: Counter[str] = field(default_factory=Counter)
    tasks: int = 0
    lost: int = 0
    extra_pods: int = 0
    duplicated_children: int = 0
    attempts: int = 0
    ends: Counter[str] = field(default_factory=Counter)  # the tasks not Succeeded: phase/reason
    odd_runs: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def chaos_cluster() -> Iterator[ControlPlane]:
    if not (binaries_dir() / "versions.env").exists():
        pytest.skip("Kubernetes binaries not built: run `make bins`")
    cp = ControlPlane.create(nodes=3, audit=True)
    try:
        cp.start(crds=ROOT / "crds")
        yield cp
    finally:
        cp.stop()


@pytest.fixture(scope="module")
def proxy(chaos_cluster: ControlPlane) -> Iterator[TcpProxy]:
    p = TcpProxy(chaos_cluster.port)
    yield p
    p.close()


@pytest.fixture(scope="module")
def chaos_operator(chaos_cluster: ControlPlane, proxy: TcpProxy) -> Iterator[OperatorProcess]:
    """The operator through the proxy, as a ServiceAccount (the audit log records exactly its requests)."""
    cp = chaos_cluster
    cp.kubectl("-n", "default", "create", "serviceaccount", "chaos-operator")
    cp.kubectl(
        "create",
        "clusterrolebinding",
        "chaos-operator",
        "--clusterrole=cluster-admin",
        "--serviceaccount=default:chaos-operator",
    )
    token = cp.kubectl("-n", "default", "create", "token", "chaos-operator", "--duration=6h").stdout.strip()
    config = yaml.safe_load(cp.kubeconfig.read_text())
    config["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{proxy.port}"
    config["users"] = [{"name": config["contexts"][0]["context"]["user"], "user": {"token": token}}]
    path = cp.workdir / "chaos-operator.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    op = OperatorProcess(
        cp, extra_env={"KUBECONFIG": str(path), "POD_NAME": "chaos-operator", "SCRIPTRUN_RESYNC_SECONDS": "10"}
    )
    op.log = cp.workdir / "operator-chaos.log"
    op.start()
    yield op
    op.stop()


def call(cp: ControlPlane, method: str, path: str, tries: int = 40) -> Any:
    """The test's own request, waiting out an API server that is restarting (refused connections,
    or 429/5xx while it starts up: /readyz says ok a moment before it takes every request)."""
    for i in range(tries):
        try:
            return cp.request(method, path)
        except urllib.error.HTTPError as err:
            if err.code not in (429, 500, 502, 503, 504) or i == tries - 1:
                raise
        except OSError:
            if i == tries - 1:
                raise
        time.sleep(0.5)
    raise AssertionError("unreachable")


def get_wf(cp: ControlPlane, ns: str, name: str) -> dict[str, Any]:
    return dict(call(cp, "GET", f"{API}/namespaces/{ns}/workflows/{name}"))


def wait_for(what: str, check: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := check():
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s: {what}")


class Chaos:
    def __init__(self, cp: ControlPlane, op: OperatorProcess, proxy: TcpProxy, ns: str, rng: random.Random) -> None:
        self.cp, self.op, self.proxy, self.ns, self.rng = cp, op, proxy, ns, rng
        self.tally = Tally()
        self.deleted_children: Counter[str] = Counter()

    def progress(self, name: str) -> tuple[str, str]:
        status = get_wf(self.cp, self.ns, name).get("status") or {}
        return status.get("phase", ""), status.get("progress", "")

    def kill(self, name: str) -> bool:
        before = self.progress(name)
        if before[0] in TERMINAL_WF:
            return False
        self.op.kill()
        killed = time.monotonic()
        self.op.start()
        self.tally.kills += 1
        try:  # recovered: the Workflow moves on (a task done, or the end)
            wait_for("progress after a restart", lambda: self.progress(name) not in (before, ("", "")), 90)
            took = time.monotonic() - killed
            self.tally.recoveries.append(took)
            if took > SLOW:
                self.tally.slow.append(
                    f"{took:.1f}s after kill {self.tally.kills} (=== start {self.op.starts - 1} ===)"
                )
        except AssertionError:
            raise AssertionError(f"no progress in 90 s after kill {self.tally.kills}:\n{self.op.tail()}") from None
        return True

    def fault(self, kind: str, name: str) -> None:
        cp, ns = self.cp, self.ns
        if kind == "apiserver":
            down = restart(cp, "etcd", "kube-apiserver")
            self.tally.faults.append(f"API server and etcd restarted (down {down:.1f}s)")
        elif kind == "cut":
            self.tally.faults.append(f"{self.proxy.cut()} connections of the operator cut (its watches among them)")
        elif kind == "children":
            runs = call(cp, "GET", f"{API}/namespaces/{ns}/scriptruns?labelSelector=scriptrun.dev/workflow={name}")
            live = [
                r["metadata"]["name"]
                for r in runs["items"]
                if (r.get("status") or {}).get("phase") in ("Running", "Pending", None)
            ]
            for victim in self.rng.sample(live, min(3, len(live))):
                cp.kubectl("-n", ns, "delete", "scriptrun", victim, "--wait=false")
                self.deleted_children[victim] += 1
            self.tally.faults.append(f"{min(3, len(live))} running child ScriptRuns deleted")
        elif kind == "pods":
            pods = call(cp, "GET", f"/api/v1/namespaces/{ns}/pods")["items"]
            live = [p["metadata"]["name"] for p in pods if p["status"].get("phase") in ("Running", "Pending")]
            for victim in self.rng.sample(live, min(3, len(live))):
                cp.kubectl("-n", ns, "delete", "pod", victim, "--wait=false")
            self.tally.faults.append(f"{min(3, len(live))} running pods deleted")
        elif kind == "node":
            busy = Counter(p["spec"].get("nodeName") for p in call(cp, "GET", f"/api/v1/namespaces/{ns}/pods")["items"])
            node = max((n for n in busy if n), key=lambda n: busy[n], default="kwok-node-2")
            cp.kubectl("delete", "node", node, "--wait=false")
            self.tally.faults.append(f"kwok node {node} removed ({busy[node]} pods on it)")

    def run(self, name: str, faults: list[str], kills: int) -> int:
        self.cp.kubectl("-n", self.ns, "apply", "-f", "-", input=json.dumps(workflow(name, self.rng)))
        deadline = time.monotonic() + 600
        while self.progress(name)[0] not in TERMINAL_WF:
            assert time.monotonic() < deadline, f"{name} not terminal after 600 s:\n{self.op.tail()}"
            time.sleep(self.rng.uniform(0.3, 2.5))
            if faults:
                self.fault(faults.pop(0), name)
            elif kills and self.kill(name):
                kills -= 1
        self.check(name)
        # done with it: its children and pods go too, so restarts do not re-list every earlier Workflow's
        self.cp.kubectl("-n", self.ns, "delete", "workflow", name, "--wait=false")
        return kills

    def check(self, name: str) -> None:
        """The end state, and what the audit log says the operator created."""
        wf = get_wf(self.cp, self.ns, name)
        status = wf.get("status") or {}
        self.tally.workflows.append(name)
        self.tally.phases[status["phase"]] += 1
        conditions = status.get("conditions") or []
        assert any(c.get("reason") for c in conditions), f"{name}: terminal without a reason: {conditions}"
        tasks = status.get("tasks") or {}
        for task in tasks.values():
            if task.get("phase") != "Succeeded":
                self.tally.ends[f"{task.get('phase')}/{task.get('reason') or task.get('message', '')[:40]}"] += 1
        self.tally.tasks += 200
        self.tally.lost += 200 - sum(1 for t in tasks.values() if t.get("phase") in TERMINAL_NODE)
        runs = call(
            self.cp, "GET", f"{API}/namespaces/{self.ns}/scriptruns?labelSelector=scriptrun.dev/workflow={name}"
        )
        attempts = {
            r["metadata"]["name"]: [a["podName"] for a in (r.get("status") or {}).get("attempts") or []]
            for r in runs["items"]
        }
        stored: Counter[tuple[str, str]] = Counter()  # (resource, name): creates answered 201
        unsure: set[tuple[str, str]] = set()  # creates answered 5xx: the object may have been stored
        for event in self.cp.audit_events():
            ref = event.get("objectRef") or {}
            code = (event.get("responseStatus") or {}).get("code", 0)
            if event.get("verb") == "create" and ref.get("namespace") == self.ns:
                key = (ref.get("resource", ""), ref.get("name", ""))
                if code == 201:
                    stored[key] += 1
                elif code >= 500:
                    unsure.add(key)
        self.tally.duplicated_children += sum(
            max(0, c - 1 - self.deleted_children[n])
            for (res, n), c in stored.items()
            if res == "scriptruns" and n.startswith(f"{name}-")
        )
        created = set(stored) | unsure
        pods = {n for (res, n) in created if res == "pods"}  # a 409 is a second try that found the name taken
        for run, pod_names in attempts.items():
            self.tally.attempts += len(pod_names)
            made = {p for p in pods if p.rsplit("-a", 1)[0] == run}
            odd = made.symmetric_difference(pod_names)  # a pod no attempt records, or an attempt without one
            if odd or len(set(pod_names)) != len(pod_names):
                self.tally.extra_pods += max(1, len(odd))
                self.tally.odd_runs.append(f"{run}: attempts {pod_names}, pods {sorted(made)}")


@pytest.mark.timeout(600 + 30 * KILLS)  # each kill and restart costs some 10-20 s on two cores
def test_chaos(chaos_cluster: ControlPlane, chaos_operator: OperatorProcess, proxy: TcpProxy) -> None:
    cp = chaos_cluster
    ns = f"chaos-{uuid.uuid4().hex[:6]}"
    cp.kubectl("create", "namespace", ns)
    chaos = Chaos(cp, chaos_operator, proxy, ns, random.Random(SEED))
    faults = ["cut", "apiserver", "children", "pods", "node"]
    kills, i = KILLS, 0
    started = time.monotonic()
    while kills or faults or i == 0:
        kills = chaos.run(f"wf{i}", faults, kills)
        i += 1
    t = chaos.tally
    rec = sorted(t.recoveries)
    line = (
        f"chaos (seed {SEED}): {len(t.workflows)} workflows of 200 tasks in {time.monotonic() - started:.0f}s, "
        f"{t.kills} operator SIGKILLs; ended {dict(t.phases)}; tasks lost {t.lost} of {t.tasks}; "
        f"pods created per attempt off by {t.extra_pods} over {t.attempts} attempts; duplicated children "
        f"{t.duplicated_children}; kill -> progress again: median {statistics.median(rec) if rec else 0:.1f}s, "
        f"max {max(rec, default=0):.1f}s{'; slow: ' + ', '.join(t.slow) if t.slow else ''}; "
        f"tasks not Succeeded {dict(t.ends)}; faults: {'; '.join(t.faults)}"
    )
    CONTROL_PLANE_INFO.append(line)
    print(line)
    assert t.kills == KILLS and len(t.faults) == 5
    assert t.lost == 0 and t.extra_pods == 0 and t.duplicated_children == 0, f"{line}\n{t.odd_runs}"
    assert not [e for e in chaos_operator.errors() if "Traceback" in e], chaos_operator.tail()
