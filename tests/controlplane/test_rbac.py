"""RBAC least privilege, proven on the control plane: the operator runs every controller path under the
Helm chart's ServiceAccount, with the roles, command, arguments and environment the chart renders.

ENOUGH: runs succeed, fail and retry, time out, lose their pod, are deleted while running, expire, read
their script from a ConfigMap or get one made, find their pod's name taken; a Workflow passes outputs
between six tasks and collects their pods, is terminated, retried, deleted and expires; a run is priced
from its node; Events are posted; the heartbeat Lease is renewed and watched; the operator is killed
and started again as the chart renders it with watchNamespaces (Kopf then lists and watches
namespaces; every namespaced rule, the heartbeat's and peering's too, is then a Role in the watched
namespace, and the ClusterRole keeps only nodes, CRDs and namespaces). Nothing is forbidden: neither
in the operator's log nor in the API server's own record, its audit log (tests/support/controlplane.py
AUDIT_POLICY: the requests of ServiceAccounts only, at Metadata level).

NO MORE: every (apiGroup, resource, verb) a rendering of the chart grants was used in the audit log by
the operator run under that rendering (a rule both renderings grant: by either), or is in UNEXERCISED
with the reason. The comparison reads the rendered chart: a rule added later must be used or listed.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import pytest
import yaml

from scriptrun.build import names
from tests.support.controlplane import ControlPlane, _die_with_parent, free_port
from tests.support.kube import Kube, scriptrun
from tests.support.operator import OperatorProcess

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "scriptrun"
NS = "scriptrun-system"  # the release's namespace: its ServiceAccount, and the heartbeat's when it watches all
POD = "scriptrun-rbac"  # the operator's pod name (the chart gives it through the downward API)
LEASE = f"scriptrun-heartbeat-{POD}"
EXIT = "test.scriptrun.dev/exit-code"
MONITOR = "test.scriptrun.dev/monitor-message"
NODE = "rbac-m5"  # a kwok node shaped like an AWS m5.large: the cost path reads it
TAINT = {"key": "scriptrun.dev/rbac-test", "value": "true", "effect": "NoSchedule"}
LARGE = {"script": {"source": "# " + "x" * 40_000 + "\nprint('hi')\n"}}  # over the in-pod limit: a ConfigMap
NO_BACKOFF = {"durationSeconds": 0}
HISTORY = {"regression": {"key": "rbac-history", "minRuns": 3}}  # its history ConfigMap: created, then replaced
MEASURED = json.dumps({"executionTimeSeconds": 2.0, "memoryMaxMb": 30.0})
# test speed over the chart's defaults (ChartOperator also gives each start a free metrics port, and a
# price table for the cost path: the chart would mount cost.prices as a file)
FAST = {"SCRIPTRUN_HEARTBEAT_SECONDS": "1", "SCRIPTRUN_DEADLINE_GRACE_SECONDS": "1", "SCRIPTRUN_RESYNC_SECONDS": "15"}

# Grants no path on this control plane can use, each with the reason. Keep it small: a rule that is
# neither used here nor listed fails the test (remove it from the chart, or exercise it here).
LISTED_FIRST = (
    "Kopf lists before it watches only with operator.watchStreaming=false or an API server older than "
    "1.34; on this 1.34 control plane each watch streams its initial state (sendInitialEvents)"
)
UNEXERCISED: dict[tuple[str, str, str], str] = {
    ("", "pods", "list"): LISTED_FIRST,
    ("apiextensions.k8s.io", "customresourcedefinitions", "list"): LISTED_FIRST,
    ("coordination.k8s.io", "leases", "list"): LISTED_FIRST,
    ("kopf.dev", "clusterkopfpeerings", "list"): LISTED_FIRST,
    ("kopf.dev", "kopfpeerings", "list"): LISTED_FIRST,
    ("scriptrun.dev", "scriptruns", "list"): LISTED_FIRST,
    ("scriptrun.dev", "workflows", "list"): LISTED_FIRST,
    ("", "pods/log", "get"): (
        "the gate container's log is read when a run with spec.gates.before finishes; kwok runs no container, "
        "so the real-node tier exercises it under the chart's ServiceAccount (tests/e2e/test_gates.py)"
    ),
}


class Rule(NamedTuple):
    group: str
    resource: str  # "scriptruns/status" for a subresource
    verb: str
    namespace: str | None  # a Role's namespace; None for a ClusterRole (every namespace, and cluster scope)


class Use(NamedTuple):
    group: str
    resource: str
    verb: str
    namespace: str | None  # None: a cluster-scoped request (a node, or a list/watch across namespaces)


def covers(rule: Rule, use: Use) -> bool:
    same = (rule.group, rule.resource, rule.verb) == (use.group, use.resource, use.verb)
    return same and (rule.namespace is None or rule.namespace == use.namespace)


@dataclass
class Render:
    """The chart rendered with some values: what is applied (all but the Deployment: the operator runs
    here as a subprocess, with that Deployment's command, arguments and environment), and its CRDs."""

    values: tuple[str, ...]
    docs: list[dict[str, Any]]
    crds: list[dict[str, Any]]
    container: dict[str, Any]

    @property
    def user(self) -> str:
        (account,) = [d for d in self.docs if d["kind"] == "ServiceAccount"]
        return f"system:serviceaccount:{NS}:{account['metadata']['name']}"

    def rules(self) -> set[Rule]:
        bound = {
            (d["roleRef"]["kind"], d["roleRef"]["name"], d["metadata"].get("namespace"))
            for d in self.docs
            if d["kind"] in ("ClusterRoleBinding", "RoleBinding")
            and any(f"system:serviceaccount:{s.get('namespace')}:{s['name']}" == self.user for s in d["subjects"])
        }
        found = set()
        for doc in self.docs:
            if doc["kind"] not in ("ClusterRole", "Role"):
                continue
            namespace = doc["metadata"]["namespace"] if doc["kind"] == "Role" else None
            assert (doc["kind"], doc["metadata"]["name"], namespace) in bound, f"not bound to the operator: {doc}"
            for rule in doc["rules"]:
                assert set(rule) == {"apiGroups", "resources", "verbs"}, f"no resourceNames or URLs expected: {rule}"
                for group in rule["apiGroups"]:
                    for resource in rule["resources"]:
                        for verb in rule["verbs"]:
                            assert "*" not in (group, resource, verb), f"a wildcard is not least privilege: {rule}"
                            found.add(Rule(group, resource, verb, namespace))
        return found


def render(cluster: ControlPlane, *values: str) -> Render:
    sets = [arg for value in values for arg in ("--set", value)]
    args = ["template", "scriptrun", str(CHART), "--namespace", NS, "--include-crds", *sets]
    args.append(f"--kube-version={cluster.versions['K8S_VERSION']}")
    proc = subprocess.run([cluster.binary("helm"), *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    crds = [d for d in docs if d["kind"] == "CustomResourceDefinition"]
    rest = [d for d in docs if d["kind"] not in ("Deployment", "CustomResourceDefinition")]
    return Render(values, rest, crds, container)


def _key(doc: dict[str, Any]) -> tuple[str, str, str]:
    return doc["kind"], doc["metadata"].get("namespace", ""), doc["metadata"]["name"]


@dataclass
class Release:
    """The chart installed, one rendering at a time (a `helm upgrade` without helm's bookkeeping)."""

    cluster: ControlPlane
    applied: list[dict[str, Any]] = field(default_factory=list)

    def install(self, chart: Render) -> tuple[Path, str]:
        """Apply `chart` (its CRDs only if missing: ours are the session's), remove what the previous
        rendering had and this one has not; a kubeconfig with a new token of the account, and the
        token's ID (the audit log's credential-id tells the renderings' requests apart)."""
        cluster = self.cluster
        cluster.kubectl("create", "namespace", NS, check=False)
        installed = set(cluster.kubectl("get", "crd", "-o", "name").stdout.split())
        missing = [
            c
            for c in chart.crds
            if f"customresourcedefinition.apiextensions.k8s.io/{c['metadata']['name']}" not in installed
        ]
        if missing:
            cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(missing))
            cluster.kubectl(
                "wait",
                "--for=condition=Established",
                "--timeout=60s",
                *(f"crd/{c['metadata']['name']}" for c in missing),
            )
        self._kubectl("apply", chart.docs)
        keep = {_key(d) for d in chart.docs}
        self._kubectl("delete", [d for d in self.applied if _key(d) not in keep], "--wait=false")
        self.applied = chart.docs
        account = chart.user.rsplit(":", 1)[1]
        token = cluster.kubectl("-n", NS, "create", "token", account, "--duration=1h").stdout.strip()
        claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
        admin = yaml.safe_load(cluster.kubeconfig.read_text())
        restricted = {
            **admin,
            "users": [{"name": "operator", "user": {"token": token}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "operator"}}],
        }
        path = cluster.workdir / f"operator-sa-{claims['jti']}.kubeconfig"
        path.write_text(yaml.safe_dump(restricted))
        return path, f"JTI={claims['jti']}"

    def uninstall(self) -> None:
        self._kubectl("delete", self.applied, "--wait=false", check=False)

    def _kubectl(self, verb: str, docs: list[dict[str, Any]], *args: str, check: bool = True) -> None:
        """`kubectl apply/delete` of `docs`, by namespace (a namespaced object without one: the release's)."""
        by_namespace: dict[str, list[dict[str, Any]]] = {}
        for doc in docs:
            by_namespace.setdefault(doc["metadata"].get("namespace") or NS, []).append(doc)
        for namespace, group in by_namespace.items():
            self.cluster.kubectl(verb, "-n", namespace, "-f", "-", *args, input=yaml.safe_dump_all(group), check=check)


class ChartOperator(OperatorProcess):
    """The operator as the chart's Deployment runs it (`run_as`): its command and arguments (e.g.
    `--namespace` for watchNamespaces), its environment (POD_NAME from the downward API), the
    ServiceAccount's token; with FAST, a metrics port of its own and a price table."""

    def __init__(self, cluster: ControlPlane, log: str, prices: Path) -> None:
        super().__init__(cluster)
        self.log = cluster.workdir / log
        self.prices = prices
        self.args: list[str] = []

    def run_as(self, chart: Render, kubeconfig: Path) -> None:
        command = chart.container["command"]
        assert command[:2] == ["scriptrun", "operator"] and command[2].startswith("--liveness="), command
        self.args = [*command[1:2], *command[3:], *chart.container.get("args", [])]
        downward = {"metadata.name": POD, "metadata.namespace": NS}
        env = {}
        for var in chart.container["env"]:
            if "value" in var:
                env[var["name"]] = str(var["value"])
            else:
                env[var["name"]] = downward[var["valueFrom"]["fieldRef"]["fieldPath"]]
        self.metrics_port = self.metrics_port or free_port()
        env.update(FAST, SCRIPTRUN_METRICS_PORT=str(self.metrics_port), SCRIPTRUN_PRICES=str(self.prices))
        self.extra_env = {**env, "KUBECONFIG": str(kubeconfig), "PYTHONUNBUFFERED": "1"}

    def start(self, timeout: float = 60) -> OperatorProcess:
        port = self.liveness_port = free_port()
        args = [*self.args, f"--liveness=http://127.0.0.1:{port}/healthz"]
        with self.log.open("ab") as handle:
            handle.write(f"\n===== start {self.starts}: scriptrun {' '.join(args)} =====\n".encode())
            handle.flush()
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "scriptrun", *args],
                stdout=handle,
                stderr=subprocess.STDOUT,
                env={**self.cluster.env(), **self.extra_env},
                cwd=ROOT,
                preexec_fn=_die_with_parent,
            )
        self.starts += 1
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.popen.poll() is None, f"operator exited {self.popen.returncode}:\n{self.tail()}"
            if probe(self)[0] == 200:
                return self
            time.sleep(0.2)
        raise TimeoutError(f"operator not live after {timeout}s:\n{self.tail()}")


def probe(op: OperatorProcess) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{op.liveness_port}/healthz", timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except OSError:  # HTTPError (a failing probe) included
        return 0, {}


@pytest.fixture(scope="module")
def release(cluster: ControlPlane) -> Iterator[Release]:
    if not cluster.audit:
        pytest.skip("the control plane runs without its audit log (ControlPlane.create(audit=False))")
    rel = Release(cluster)
    yield rel
    rel.uninstall()
    cluster.kubectl("-n", NS, "delete", "lease", LEASE, "--wait=false", check=False)


@pytest.fixture(scope="module")
def sa_operator(cluster: ControlPlane, operator: OperatorProcess, release: Release) -> Iterator[ChartOperator]:
    """Ours in place of the session operator (two would both reconcile everything); the next module's
    `live_operator` starts that one again."""
    existing = {n["metadata"]["name"] for n in cluster.request("GET", "/api/v1/nodes")["items"]}
    if NODE not in existing:
        labels = {
            "topology.kubernetes.io/region": "us-east-1",
            "topology.kubernetes.io/zone": "us-east-1a",
            "node.kubernetes.io/instance-type": "m5.large",
        }
        capacity = {"cpu": "2", "memory": "8Gi"}
        cluster.create_node(
            NODE, labels=labels, provider_id="aws:///us-east-1a/i-0rbac", capacity=capacity, taints=[TAINT]
        )
    prices = cluster.workdir / "prices-rbac.yaml"
    prices.write_text(yaml.safe_dump({"currency": "USD", "nodes": {"m5.large": {"hourly": "3600"}}}))
    operator.stop()
    op = ChartOperator(cluster, "operator-rbac.log", prices)
    yield op
    op.stop()
    cluster.request("DELETE", f"/api/v1/nodes/{NODE}")  # other modules count the nodes in scheduler messages


@pytest.fixture(scope="module")
def ns(cluster: ControlPlane, sa_operator: ChartOperator) -> Iterator[Kube]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    yield Watched(cluster, name, lambda: f"--- operator log:\n{sa_operator.tail(60)}")
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


class Watched(Kube):
    """Waits stop at the first request the API server forbade (only ServiceAccounts' are audited),
    rather than time out on a path it broke."""

    def wait(self, what: str, fn: Callable[[], T | None], timeout: float = 60, interval: float = 0.25) -> T:
        def done() -> T | None:
            denied = forbidden(self.cluster.audit_events())
            assert not denied, f"forbidden while waiting for {what}: {denied}\n{self.diagnostics()}"
            return fn()

        return super().wait(what, done, timeout, interval)


# --- what the operator is asked to do


def task(name: str, exit_code: int | None = 0, **spec: Any) -> dict[str, Any]:
    annotations = {} if exit_code is None else {EXIT: str(exit_code)}
    return {"name": name, "script": {"source": f"print('{name}')"}, "podMetadata": {"annotations": annotations}, **spec}


def workflow(name: str, tasks: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    body = {"apiVersion": "scriptrun.dev/v1alpha1", "kind": "Workflow", "metadata": {"name": name}}
    return {**body, "spec": {"tasks": tasks, **spec}}


def etl() -> dict[str, Any]:
    """examples/etl-workflow.yaml (6 tasks: a matrix, outputs passed along, an exit handler), its
    pods collected as each run ends."""
    doc = yaml.safe_load((ROOT / "examples" / "etl-workflow.yaml").read_text())
    outputs = {"extract": {"rows": "20", "checksum": "abc"}, "transform": {"bytes": "10"}, "load": {"total": "30"}}
    for t in [*doc["spec"]["tasks"], *doc["spec"]["onExit"]]:
        annotations = {EXIT: "0"}
        if t["name"] in outputs:
            annotations[MONITOR] = json.dumps({"cpuAvgPercent": 5.0, "outputs": outputs[t["name"]]})
        t["podMetadata"] = {"annotations": annotations}
    doc["spec"]["podGC"] = {"strategy": "OnPodCompletion"}
    return dict(doc)


def every_kind_of_run() -> list[dict[str, Any]]:
    retry = {"retryStrategy": {"limit": 1, "backoff": NO_BACKOFF}}
    pinned = {
        "nodeSelector": {"kubernetes.io/hostname": NODE},
        "tolerations": [{**TAINT, "operator": "Equal"}],
        "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}},
    }
    return [
        scriptrun("ok", {}, {EXIT: "0"}),
        scriptrun("fail", retry, {EXIT: "2"}),
        scriptrun("slow", {"timeoutSeconds": 1}),  # no exit code: runs until the operator deletes its pod
        scriptrun("gone", {"retryStrategy": {"limit": 1, "retryPolicy": "Always", "backoff": NO_BACKOFF}}),
        scriptrun("doomed", LARGE),  # its script in a ConfigMap the operator creates
        scriptrun("ttl", {"ttlSecondsAfterFinished": 0}, {EXIT: "0"}),
        scriptrun("fromcm", {"script": {"configMapRef": {"name": "code", "key": "job.py"}}}, {EXIT: "0"}),
        scriptrun("held", {}, {EXIT: "0"}),  # its pod's name taken by a pod it does not own
        scriptrun("priced", pinned, {EXIT: "0"}),
        scriptrun("restart", {}),  # finishes while the operator is down
        scriptrun("hist-1", HISTORY, {EXIT: "0", MONITOR: MEASURED}),
        scriptrun("hist-2", HISTORY, {EXIT: "0", MONITOR: MEASURED}),
        etl(),
        workflow("tidy", [task("a")], ttlStrategy={"secondsAfterCompletion": 0}),
        workflow("killme", [task("slow", None), task("next", dependencies=["slow"])]),
        workflow("again", [task("a", 1)]),
        workflow("bye", [task("slow", None)]),
    ]


def squatter(name: str) -> dict[str, Any]:
    """A pod of nobody's (no owner, not labelled as the operator's), holding a run's pod name."""
    container = {"name": "main", "image": "busybox"}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": {"containers": [container]}}


def wait_wf(kube: Kube, name: str, phase: str, **match: Any) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        st = (kube.get("workflow", name) or {}).get("status") or {}
        return st if st.get("phase") == phase and all(st.get(k) == v for k, v in match.items()) else None

    return kube.wait(f"workflow {name} {phase} {match or ''}", done)


def pod_phase(kube: Kube, name: str) -> str | None:
    return ((kube.get("pod", name) or {}).get("status") or {}).get("phase")


def exit_now(kube: Kube, pod: str, code: int = 0) -> None:
    kube.patch("pod", pod, {"metadata": {"annotations": {EXIT: str(code)}}})


def lease(cluster: ControlPlane, namespace: str) -> dict[str, Any]:
    """The operator's heartbeat Lease in `namespace` ({} if there is none)."""
    try:
        found = cluster.request("GET", f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{LEASE}")
    except urllib.error.HTTPError as err:
        if err.code == 404:
            return {}
        raise
    assert isinstance(found, dict)
    return found


# --- the audit log


def requests_of(cluster: ControlPlane, user: str) -> list[dict[str, Any]]:
    """The user's requests, one audit event each (the last stage written: a watch still open has
    only ResponseStarted)."""
    last: dict[str, dict[str, Any]] = {}
    for event in cluster.audit_events():
        if event.get("user", {}).get("username") == user:
            last[event["auditID"]] = event
    return list(last.values())


def credential(event: dict[str, Any]) -> str:
    return "".join(event["user"].get("extra", {}).get("authentication.kubernetes.io/credential-id", []))


def as_use(event: dict[str, Any]) -> Use | None:
    ref = event.get("objectRef")
    if not ref or "resource" not in ref:
        return None  # a non-resource URL: discovery (/api, /apis/...), /version
    resource = ref["resource"] + (f"/{ref['subresource']}" if ref.get("subresource") else "")
    return Use(ref.get("apiGroup", ""), resource, event["verb"], ref.get("namespace"))


def forbidden(events: Iterable[dict[str, Any]]) -> list[str]:
    return [
        f"{e['verb']} {e['requestURI']}"
        for e in events
        if (e.get("annotations") or {}).get("authorization.k8s.io/decision") == "forbid"
    ]


# --- the tests

# filled by the first test once it passed: the renderings and their tokens' IDs, our namespaces
PHASES: dict[str, Any] = {}


def test_chart_rbac_is_enough_to_run_the_operator(
    cluster: ControlPlane, release: Release, sa_operator: ChartOperator, ns: Kube
) -> None:
    started = time.monotonic()
    everywhere, watching = render(cluster), render(cluster, f"watchNamespaces={{{ns.ns}}}")
    kubeconfig, everywhere_id = release.install(everywhere)
    sa_operator.run_as(everywhere, kubeconfig)
    sa_operator.start()
    cluster.kubectl("-n", ns.ns, "create", "configmap", "code", "--from-literal=job.py=print('from a ConfigMap')")
    cluster.kubectl("-n", ns.ns, "apply", "-f", "-", input=yaml.safe_dump(squatter(names.pod_name("held", 1))))
    ns.apply(every_kind_of_run())

    # ScriptRuns: succeeded (Events posted), failed after a retry, stopped at their deadline
    ns.wait_phase("ok", "Succeeded")
    assert len(ns.wait_phase("fail", "Failed")["attempts"]) == 2
    assert ns.wait_phase("slow", "Failed")["attempts"][0]["reason"] == "DeadlineExceeded"
    ns.wait("the late pod deleted", lambda: ns.get("pod", "slow-a1") is None)
    ns.wait("events", lambda: {e["reason"] for e in ns.events("ok")} >= {"AttemptCreated", "Succeeded"})
    # its pod deleted by someone else: a second attempt
    ns.wait("gone's pod", lambda: pod_phase(ns, "gone-a1") == "Running")
    ns.delete("pod", "gone-a1")
    ns.wait("gone's second attempt", lambda: pod_phase(ns, "gone-a2") == "Running")
    exit_now(ns, "gone-a2")
    assert ns.wait_phase("gone", "Succeeded")["attempts"][0]["reason"] == "PodDeleted"
    # deleted while running: its pod and ConfigMap go with it
    ns.wait("doomed running", lambda: ns.run_status("doomed").get("phase") == "Running")
    assert ns.get("configmap", "doomed-script") is not None
    ns.delete("scriptrun", "doomed")
    # deleted by its TTL; its script from a ConfigMap; a held pod name freed; priced from its node
    ns.wait("ttl deleted by the operator", lambda: ns.get("scriptrun", "ttl") is None)
    ns.wait_phase("fromcm", "Succeeded")
    ns.wait_phase("held", "Succeeded")
    assert (ns.get("pod", "held-a1") or {})["metadata"]["ownerReferences"][0]["name"] == "held"
    cost = ns.wait_phase("priced", "Succeeded").get("cost") or {}
    assert cost.get("source") == "static", cost  # the node's instance type was read
    ns.wait_phase("hist-1", "Succeeded")
    ns.wait_phase("hist-2", "Succeeded")
    history = json.loads((ns.get("configmap", "scriptrun-history-rbac-history") or {})["data"]["history.json"])
    assert sorted(r["name"] for r in history["runs"]) == ["hist-1", "hist-2"]

    # Workflows: outputs passed along and pods collected; expired; terminated; retried; deleted
    st = wait_wf(ns, "etl", "Succeeded")
    assert st["progress"] == "6/6" and st["tasks"]["extract"]["outputs"] == {"rows": "20", "checksum": "abc"}
    ns.wait("etl's pods collected", lambda: ns.list("pods", "scriptrun.dev/workflow=etl") == [])
    ns.wait("tidy deleted by its TTL", lambda: ns.get("workflow", "tidy") is None)
    ns.wait("killme running", lambda: pod_phase(ns, "killme-slow-a1") == "Running")
    ns.patch("workflow", "killme", {"spec": {"shutdown": "Terminate"}})
    wait_wf(ns, "killme", "Failed")
    ns.wait("killme's pod deleted", lambda: ns.get("pod", "killme-slow-a1") is None)
    wait_wf(ns, "again", "Failed")
    first = (ns.get("scriptrun", "again-a") or {})["metadata"]["uid"]
    cluster.kubectl("-n", ns.ns, "annotate", "workflow/again", "scriptrun.dev/retry=1")
    wait_wf(ns, "again", "Failed", retryRound=1)
    ns.wait("a new child", lambda: (ns.get("scriptrun", "again-a") or {}).get("metadata", {}).get("uid") != first)
    ns.wait("bye running", lambda: pod_phase(ns, "bye-slow-a1") == "Running")
    ns.delete("workflow", "bye")
    ns.wait("bye's children collected", lambda: ns.list("scriptruns", "scriptrun.dev/workflow=bye") == [])
    ns.wait("doomed's children collected", lambda: ns.get("configmap", "doomed-script") is None)

    # the heartbeat: the Lease renewed under the account, watched back
    assert lease(cluster, NS)["spec"]["holderIdentity"] == POD
    assert probe(sa_operator)[1]["watch"]["lease"] == f"{NS}/{LEASE}"

    # killed; started again as the chart runs it with watchNamespaces: the run that finished
    # meanwhile is seen in the initial listing, a new one runs, the heartbeat moves to the namespace
    ns.wait("restart running", lambda: pod_phase(ns, "restart-a1") == "Running")
    sa_operator.kill()
    exit_now(ns, "restart-a1")
    kubeconfig, watching_id = release.install(watching)
    sa_operator.run_as(watching, kubeconfig)
    assert sa_operator.args[-1] == f"--namespace={ns.ns}"
    sa_operator.start()
    ns.wait_phase("restart", "Succeeded")
    ns.apply(scriptrun("watched", {}, {EXIT: "0"}))
    ns.wait_phase("watched", "Succeeded")
    ns.wait("a heartbeat in the watched namespace", lambda: lease(cluster, ns.ns).get("spec", {}).get("holderIdentity"))
    sa_operator.stop()

    # nothing was forbidden: in the operator's log, and in the API server's record
    log = sa_operator.log.read_text(errors="replace")
    assert everywhere.user not in log and "Not enough permissions" not in log, sa_operator.tail(200)
    events = requests_of(cluster, everywhere.user)
    assert {credential(e) for e in events} >= {everywhere_id, watching_id}, f"no requests in {cluster.audit_log}"
    assert forbidden(events) == []  # an RBAC denial anywhere
    # nor refused by admission here (creates in another module's namespace being deleted are refused)
    here = [e for e in events if (e.get("objectRef") or {}).get("namespace") in (ns.ns, NS)]
    refused = [f"{e['verb']} {e['requestURI']}" for e in here if e.get("responseStatus", {}).get("code") == 403]
    assert refused == []
    # on 1.34 each watch gets its initial state streamed over it: no list of everything first
    runs = [e for e in events if (e.get("objectRef") or {}).get("resource") == "scriptruns"]
    assert [e for e in runs if e["verb"] == "watch" and "sendInitialEvents=true" in e["requestURI"]], runs
    assert [e["requestURI"] for e in runs if e["verb"] == "list"] == []
    PHASES.update(namespaces=[ns.ns, NS], renderings=[(everywhere, everywhere_id), (watching, watching_id)])
    print(f"\nevery path under {everywhere.user}: {len(events)} requests in {time.monotonic() - started:.1f}s")


def test_chart_rbac_grants_only_what_the_operator_used(cluster: ControlPlane, release: Release) -> None:
    if not PHASES:
        pytest.fail("needs test_chart_rbac_is_enough_to_run_the_operator to have passed first (run the module)")
    renderings: list[tuple[Render, str]] = PHASES["renderings"]
    events = requests_of(cluster, renderings[0][0].user)
    ours = {*PHASES["namespaces"], None}  # this module's requests; not those about other modules' leftovers
    used: dict[str, set[Use]] = {token: set() for _, token in renderings}
    for event in events:
        use = as_use(event)
        if use is not None and use.namespace in ours and credential(event) in used:
            used[credential(event)].add(use)

    everything = set().union(*used.values())
    # what every rendering grants, whatever the scope (a ClusterRole's rule, or the same in a Role of
    # each watched namespace): used under any of them, in a namespace the rule covers
    shared = set.intersection(*({(r.group, r.resource, r.verb) for r in c.rules()} for c, _ in renderings))
    report = []
    for chart, token in renderings:
        rules = chart.rules()
        name = " ".join(chart.values) or "default values"
        # a rule of this rendering alone: used under it; one all renderings grant: under any of them
        unused = sorted(
            r for r in rules if not any(covers(r, u) for u in (everything if r[:3] in shared else used[token]))
        )
        unexplained = [r for r in unused if (r.group, r.resource, r.verb) not in UNEXERCISED]
        assert unexplained == [], f"{name}: granted, never used (remove, or list in UNEXERCISED): {unexplained}"
        beyond = sorted(u for u in used[token] if not any(covers(r, u) for r in rules))
        assert beyond == [], f"{name}: used, allowed by other roles than the chart's: {beyond}"
        report += [f"  {rule_text(r)}    (with {name})" for r in sorted(rules, key=lambda r: (r.namespace or "", r))]
    granted = {(r.group, r.resource, r.verb) for c, _ in renderings for r in c.rules()}
    exercised = {(u.group, u.resource, u.verb) for u in everything}
    stale = {k for k in UNEXERCISED if k not in granted or k in exercised}
    assert stale == set(), f"listed in UNEXERCISED, but no longer granted or used after all: {stale}"
    print("\nevery grant of the chart used by the operator:\n" + "\n".join(report))


def rule_text(rule: Rule) -> str:
    where = f"in namespace {rule.namespace}" if rule.namespace else "cluster-wide"
    return f"{rule.group or 'core'} {rule.resource} {rule.verb} ({where})"
