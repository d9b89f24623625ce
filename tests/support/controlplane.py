"""A real Kubernetes control plane for tests and benchmarks, on loopback with random ports:
etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok (simulated nodes).

Binaries come from hack/k8s-binaries.sh (built from Go modules, cached outside the repo).
Every process is started here and stopped here, by PID.
"""

from __future__ import annotations

import base64
import ctypes
import json
import os
import secrets
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.support.certs import make_certs
from tests.support.ports import allocate_port

ROOT = Path(__file__).resolve().parents[2]
KWOK_STAGES = Path(__file__).parent / "kwok"
# The API server's audit log (ControlPlane.audit): the requests of ServiceAccounts only, at Metadata
# level (who, verb, resource, namespace, the authorization decision; no bodies). Everything else is
# level None, which the API server decides per request without writing anything: the control plane's
# own components, kwok and the tests use the admin certificate or token, so a cluster where no
# ServiceAccount calls the API writes no audit event at all (tests/controlplane/test_rbac.py reads it).
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [
        {"level": "Metadata", "userGroups": ["system:serviceaccounts"]},
        {"level": "None"},
    ],
}


def binaries_dir() -> Path:
    out = subprocess.run(
        ["bash", str(ROOT / "hack" / "k8s-binaries.sh"), "--print-dir"], check=True, capture_output=True, text=True
    )
    return Path(out.stdout.strip())


def _versions(bin_dir: Path) -> dict[str, str]:
    env = bin_dir / "versions.env"
    if not env.exists():
        raise FileNotFoundError(f"{env} missing: run `make bins` (hack/k8s-binaries.sh) first")
    return dict(line.split("=", 1) for line in env.read_text().split() if "=" in line)


def _die_with_parent() -> None:
    """preexec_fn: the child gets SIGTERM when the test process dies, so nothing is left running."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def free_port() -> int:
    """A port for a child process to listen on: held machine-wide for this test process, outside the
    kernel's ephemeral range, so nothing else takes it before the child binds it (tests/support/ports.py)."""
    return allocate_port()


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def stop(self, timeout: float = 10) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


@dataclass
class ControlPlane:
    workdir: Path
    bin_dir: Path
    versions: dict[str, str]
    port: int = 0
    kubeconfig: Path = Path()
    procs: list[Proc] = field(default_factory=list)
    extra_stages: list[Path] = field(default_factory=list)
    nodes: int = 1
    token: str = field(default_factory=lambda: secrets.token_hex(16))  # a static token, group system:masters
    # the audit log of ServiceAccounts' requests (AUDIT_POLICY) in audit_log: create() turns it on;
    # off for a ControlPlane built directly (the unit tests' stand-ins, realnode.RealCluster)
    audit: bool = False

    # -- lifecycle -----------------------------------------------------------------------------
    @classmethod
    def create(cls, *, extra_stages: list[Path] | None = None, nodes: int = 1, audit: bool = True) -> ControlPlane:
        """`audit`: on by default, as it costs nothing measurable (AUDIT_POLICY logs only what
        ServiceAccounts ask, and only tests/controlplane/test_rbac.py runs as one; measured: start-up
        and 300 GETs took the same time with and without it)."""
        bin_dir = binaries_dir()
        workdir = Path(tempfile.mkdtemp(prefix="scriptrun-cp-"))
        return cls(
            workdir=workdir,
            bin_dir=bin_dir,
            versions=_versions(bin_dir),
            extra_stages=list(extra_stages or []),
            nodes=nodes,
            audit=audit,
        )

    @property
    def audit_log(self) -> Path:
        return self.workdir / "audit.log"

    def audit_events(self) -> list[dict[str, Any]]:
        """Every audit event written so far (one JSON object a line; a line being written is skipped),
        oldest first: the API server rotates its log at 100 MB (audit-<time>.log beside it), which a
        bench or the 100-kill chaos run can pass."""
        if not self.audit:
            raise RuntimeError("this control plane was started without its audit log (ControlPlane.create(audit=True))")
        rotated = sorted(self.audit_log.parent.glob(f"{self.audit_log.stem}-*{self.audit_log.suffix}"))
        events = []
        for path in [*rotated, self.audit_log]:
            for line in path.read_text(errors="replace").splitlines() if path.exists() else []:
                try:
                    events.append(json.loads(line))
                except ValueError:
                    continue
        return events

    def binary(self, name: str) -> str:
        key = {"etcd": "ETCD_VERSION", "kwok": "KWOK_VERSION", "helm": "HELM_VERSION"}.get(name, "K8S_VERSION")
        version = self.versions[key]
        path = self.bin_dir / f"{name}-{version}"
        if not path.exists():
            raise FileNotFoundError(f"{path} missing: run hack/k8s-binaries.sh")
        return str(path)

    def _spawn(self, name: str, args: list[str], env: dict[str, str] | None = None) -> Proc:
        log = self.workdir / f"{name}.log"
        handle = log.open("wb")
        popen = subprocess.Popen(
            args,
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=env or dict(os.environ),
            cwd=self.workdir,
            preexec_fn=_die_with_parent,
        )
        handle.close()
        proc = Proc(name, popen, log)
        self.procs.append(proc)
        return proc

    def start(self, timeout: float = 120, crds: Path | None = None) -> ControlPlane:
        """Start everything; CRDs in `crds` are installed before the controller manager starts, so its
        garbage collector knows our kinds from the first moment (it re-reads discovery only every 30 s)."""
        certs = make_certs(self.workdir)
        etcd_port, peer_port = free_port(), free_port()
        self._spawn(
            "etcd",
            [
                self.binary("etcd"),
                "--data-dir",
                str(self.workdir / "etcd"),
                "--listen-client-urls",
                f"http://127.0.0.1:{etcd_port}",
                "--advertise-client-urls",
                f"http://127.0.0.1:{etcd_port}",
                "--listen-peer-urls",
                f"http://127.0.0.1:{peer_port}",
                "--initial-advertise-peer-urls",
                f"http://127.0.0.1:{peer_port}",
                "--initial-cluster",
                f"default=http://127.0.0.1:{peer_port}",
                "--unsafe-no-fsync",
                "--quota-backend-bytes",
                str(4 * 1024**3),
                "--log-level",
                "warn",
            ],
        )
        self.port = free_port()
        tokens = self.workdir / "tokens.csv"
        tokens.write_text(f'{self.token},scriptrun-token-admin,token-admin,"system:masters"\n')
        audit: list[str] = []
        if self.audit:
            policy = self.workdir / "audit-policy.yaml"
            policy.write_text(yaml.safe_dump(AUDIT_POLICY))
            audit = [f"--audit-policy-file={policy}", f"--audit-log-path={self.audit_log}"]
        self._spawn(
            "kube-apiserver",
            [
                self.binary("kube-apiserver"),
                f"--etcd-servers=http://127.0.0.1:{etcd_port}",
                f"--secure-port={self.port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--tls-cert-file={certs['server.crt']}",
                f"--tls-private-key-file={certs['server.key']}",
                f"--client-ca-file={certs['ca.crt']}",
                f"--token-auth-file={tokens}",
                "--service-cluster-ip-range=10.0.0.0/24",
                "--allow-privileged=true",
                "--disable-admission-plugins=ServiceAccount",
                "--authorization-mode=RBAC",
                f"--service-account-issuer=https://127.0.0.1:{self.port}",
                f"--service-account-key-file={certs['sa.pub']}",
                f"--service-account-signing-key-file={certs['sa.key']}",
                "--endpoint-reconciler-type=none",
                f"--cert-dir={self.workdir / 'apiserver-certs'}",
                *audit,
            ],
        )
        self.kubeconfig = self._write_kubeconfig(certs)
        self._wait_ready(timeout)
        kc = str(self.kubeconfig)
        if crds is not None:
            self.kubectl("apply", "-f", str(crds))
            self.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
            shutil.rmtree(self.workdir / "kubectl-cache", ignore_errors=True)  # discovery read before the CRDs
        controllers = "*,-nodeipam,-nodelifecycle,-cloud-node-lifecycle,-service,-route"
        kcm = self.controller_manager_args(self.kubeconfig, certs, controllers)
        # its client's default 20 QPS made the garbage collector delete 10,000 orphaned pods at
        # ~18/s, longer than `make bench-load` waits to see the operator's memory once they are gone
        gc = ["--concurrent-gc-syncs=10", "--kube-api-qps=100", "--kube-api-burst=200"]
        self._spawn("kube-controller-manager", [*kcm, *gc])
        self._spawn("kube-scheduler", self.scheduler_args(self.kubeconfig))
        home = self.workdir / "kwok-home"
        home.mkdir()
        stages = sorted(KWOK_STAGES.glob("scriptrun-pod-*.yaml"))
        stages = [s for s in stages if "autocomplete" not in s.name] + self.extra_stages
        self._spawn(
            "kwok",
            [
                self.binary("kwok"),
                f"--kubeconfig={kc}",
                "--manage-all-nodes=true",
                *[f"--config={s}" for s in stages],
            ],
            env={**os.environ, "HOME": str(home)},
        )
        for i in range(self.nodes):
            self.create_node(f"kwok-node-{i}")
        return self

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()
        self.procs.clear()
        if not os.environ.get("SCRIPTRUN_KEEP_CONTROLPLANE"):
            shutil.rmtree(self.workdir, ignore_errors=True)

    def logs(self, name: str, tail: int = 40) -> str:
        for proc in self.procs:
            if proc.name == name:
                return "\n".join(proc.log.read_text(errors="replace").splitlines()[-tail:])
        return ""

    # -- helpers -------------------------------------------------------------------------------
    def _write_kubeconfig(self, certs: dict[str, Path], server: str | None = None, name: str = "kubeconfig") -> Path:
        """An admin kubeconfig for `server` (default: this API server on loopback); also sets up the TLS
        context `request()` uses."""

        def b64(path: Path) -> str:
            return base64.b64encode(path.read_bytes()).decode()

        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "test",
            "clusters": [
                {
                    "name": "test",
                    "cluster": {
                        "server": server or f"https://127.0.0.1:{self.port}",
                        "certificate-authority-data": b64(certs["ca.crt"]),
                    },
                }
            ],
            "users": [
                {
                    "name": "admin",
                    "user": {
                        "client-certificate-data": b64(certs["admin.crt"]),
                        "client-key-data": b64(certs["admin.key"]),
                    },
                }
            ],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "admin", "namespace": "default"}}],
        }
        path = self.workdir / name
        path.write_text(yaml.safe_dump(config))
        self._ssl = ssl.create_default_context(cafile=str(certs["ca.crt"]))
        self._ssl.load_cert_chain(str(certs["admin.crt"]), str(certs["admin.key"]))
        return path

    def controller_manager_args(self, kubeconfig: Path, certs: dict[str, Path], controllers: str) -> list[str]:
        return [
            self.binary("kube-controller-manager"),
            f"--kubeconfig={kubeconfig}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            "--secure-port=0",
            f"--root-ca-file={certs['ca.crt']}",
            f"--service-account-private-key-file={certs['sa.key']}",
            "--use-service-account-credentials=false",
            f"--controllers={controllers}",
        ]

    def scheduler_args(self, kubeconfig: Path) -> list[str]:
        return [
            self.binary("kube-scheduler"),
            f"--kubeconfig={kubeconfig}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            "--secure-port=0",
        ]

    def request(self, method: str, path: str, body: Any = None, content_type: str = "application/json") -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            f"https://127.0.0.1:{self.port}{path}", data=data, method=method, headers={"Content-Type": content_type}
        )
        with urllib.request.urlopen(req, context=self._ssl, timeout=30) as resp:
            raw = resp.read()
        return json.loads(raw) if raw and raw[:1] in b"{[" else raw.decode()

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            for proc in self.procs:
                if proc.popen.poll() is not None:
                    raise RuntimeError(f"{proc.name} exited {proc.popen.returncode}:\n{self.logs(proc.name)}")
            try:
                if self.request("GET", "/readyz") == "ok":
                    return
            except Exception as err:
                last = err
            time.sleep(0.3)
        raise TimeoutError(f"kube-apiserver not ready after {timeout}s: {last}\n{self.logs('kube-apiserver')}")

    def create_node(
        self,
        name: str,
        *,
        labels: dict[str, str] | None = None,
        provider_id: str | None = None,
        capacity: dict[str, str] | None = None,
        taints: list[dict[str, str]] | None = None,
    ) -> None:
        """A kwok node (64 CPUs, 512 GiB unless `capacity` says otherwise), e.g. shaped like a cloud's."""
        resources = {"cpu": "64", "memory": "512Gi", "pods": "5000", **(capacity or {})}
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "labels": {
                    "type": "kwok",
                    "kubernetes.io/hostname": name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    **(labels or {}),
                },
                "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            },
            "spec": {"providerID": provider_id} if provider_id else {},
            "status": {
                "allocatable": resources,
                "capacity": resources,
                "nodeInfo": {"kubeletVersion": "fake", "architecture": "amd64", "operatingSystem": "linux"},
            },
        }
        self.request("POST", "/api/v1/nodes", node)
        # Admission adds the not-ready taint at creation; the node lifecycle controller (off here: no
        # real kubelets to watch over) would lift it. kwok keeps the node Ready, so lift it now.
        patch = {"spec": {"taints": taints or None}}
        self.request("PATCH", f"/api/v1/nodes/{name}", patch, "application/merge-patch+json")

    def env(self) -> dict[str, str]:
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [
                self.binary("kubectl"),
                f"--kubeconfig={self.kubeconfig}",
                f"--cache-dir={self.workdir / 'kubectl-cache'}",
                *args,
            ],
            input=input,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if check and proc.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
        return proc

    def version(self) -> dict[str, Any]:
        result = self.request("GET", "/version")
        assert isinstance(result, dict)
        return result
