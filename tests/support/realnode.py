"""A real single-node Kubernetes cluster for the e2e tier: etcd, kube-apiserver, kube-controller-manager,
kube-scheduler, a real kubelet on containerd + runc + a CNI bridge, and kube-proxy, all inside a
network namespace this module creates. Images are imported from OCI archives; nothing is pulled.

The host's network and iptables are untouched. The API server listens inside the namespace (pods
reach it through the `kubernetes` Service); tests, kubectl and helm reach it through a forwarder on
the host's loopback (netns_forward.py). Everything is stopped by PID and removed at teardown, and
`leftovers()` lists whatever was not. Needs root. Facts: shared/notes/real-cluster.md.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from tests.support import node_host
from tests.support.certs import make_certs
from tests.support.controlplane import ROOT, ControlPlane, Proc, _die_with_parent, _versions, binaries_dir

NODE_NAME = "realnode"
NODE_IP = "10.250.0.2"
POD_CIDR = "10.244.0.0/24"
SERVICE_CIDR = "10.0.0.0/24"
API_PORT = 6443
PAUSE_IMAGE = "localhost/pause:srk8s"
SUPPORT = Path(__file__).parent


@dataclass
class Timings:
    steps: dict[str, float] = field(default_factory=dict)

    def mark(self, name: str, started: float) -> None:
        self.steps[name] = round(time.monotonic() - started, 2)


class RealCluster(ControlPlane):
    """ControlPlane's helpers (kubectl, request, binary, env) over a real node."""

    netns: node_host.NetNS
    before: node_host.HostSnapshot
    forwarder: subprocess.Popen[str] | None
    image_dir: Path | None
    timings: Timings
    torn_down: bool

    @classmethod
    def create_real(cls, image_dir: Path | None) -> RealCluster:
        bin_dir = binaries_dir()
        workdir = Path(tempfile.mkdtemp(prefix="srk8s-", dir="/tmp"))  # short: unix socket paths live here
        self = cls(workdir=workdir, bin_dir=bin_dir, versions=_versions(bin_dir))
        self.netns = node_host.NetNS(f"srk8s-{uuid.uuid4().hex[:8]}", NODE_IP)
        self.before = node_host.HostSnapshot.take()
        self.forwarder = None
        self.image_dir = image_dir
        self.timings = Timings()
        self.torn_down = False
        return self

    # -- bring-up ------------------------------------------------------------------------------
    def start_real(self, timeout: float = 120) -> RealCluster:
        t0 = time.monotonic()
        self.netns.create()
        self._start_forwarder()
        self._start_containerd()
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            imports = pool.submit(self._import_images)  # overlaps the control plane's start-up
            certs = make_certs(self.workdir, extra_ips=(NODE_IP,))
            self._start_control_plane(certs, timeout)
            self.timings.mark("apiserver ready", t0)
            self.image_refs = imports.result()
        self.timings.mark("images imported", t0)
        self._start_node(certs)
        self._wait_node_ready(timeout)
        self.timings.mark("node ready", t0)
        return self

    def _spawn_in_netns(self, name: str, args: list[str]) -> Proc:
        return self._spawn(name, self.netns.wrap(args))

    def _start_forwarder(self) -> None:
        self.forwarder = subprocess.Popen(
            [sys.executable, "-P", str(SUPPORT / "netns_forward.py"), self.netns.path, str(API_PORT)],
            stdout=subprocess.PIPE,
            stderr=(self.workdir / "forwarder.log").open("wb"),
            text=True,
            preexec_fn=_die_with_parent,
        )
        assert self.forwarder.stdout is not None
        self.port = int(self.forwarder.stdout.readline())

    # containerd ------------------------------------------------------------------------------
    @property
    def containerd_sock(self) -> Path:
        return self.workdir / "containerd" / "containerd.sock"

    def _containerd_config(self) -> str:
        w = self.workdir / "containerd"
        cri = '[plugins."io.containerd.grpc.v1.cri"'
        return f"""version = 2
root = "{w}/root"
state = "{w}/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "{self.containerd_sock}"
[ttrpc]
  address = "{self.containerd_sock}.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{w}/opt"
{cri}]
  sandbox_image = "{PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  disable_apparmor = true
  netns_mounts_under_state_dir = true
  {cri}.containerd]
    default_runtime_name = "runc"
    {cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      {cri}.containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{w}/runc"
  {cri}.cni]
    bin_dir = "{node_host.CNI_BIN}"
    conf_dir = "{self.workdir}/cni/net.d"
"""

    def _cni_config(self) -> dict[str, object]:
        return {
            "cniVersion": "0.4.0",
            "name": "srk8s",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": "cni0",
                    "isGateway": True,
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": POD_CIDR}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": str(self.workdir / "cni" / "ipam"),
                    },
                }
            ],
        }

    def _start_containerd(self) -> None:
        (self.workdir / "containerd").mkdir()
        (self.workdir / "cni" / "net.d").mkdir(parents=True)
        (self.workdir / "cni" / "net.d" / "10-srk8s.conflist").write_text(json.dumps(self._cni_config()))
        config = self.workdir / "containerd" / "config.toml"
        config.write_text(self._containerd_config())
        # containerd runs inside the namespace: the bridge plugin creates cni0 in the caller's netns
        self._spawn_in_netns("containerd", ["containerd", "--config", str(config)])
        deadline = time.monotonic() + 30
        while not self.containerd_sock.exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"containerd did not start:\n{self.logs('containerd')}")
            time.sleep(0.05)

    def ctr(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return node_host.sh("ctr", "--address", str(self.containerd_sock), "-n", "k8s.io", *args, check=check)

    def _pause_archive(self) -> Path:
        """A static pause binary (gcc), as a one-file OCI archive tagged PAUSE_IMAGE."""
        rootfs = self.workdir / "pause-rootfs"
        rootfs.mkdir()
        node_host.sh("gcc", "-static", "-Os", "-s", "-o", str(rootfs / "pause"), str(SUPPORT / "pause.c"))
        archive = self.workdir / "pause.oci.tar"
        node_host.sh(
            sys.executable,
            str(ROOT / "hack" / "oci_image.py"),
            "--rootfs",
            str(rootfs),
            "--output",
            str(archive),
            "--ref",
            PAUSE_IMAGE,
            "--entrypoint",
            "/pause",
            "--user",
            "65535:65535",
        )
        return archive

    def _import_images(self) -> list[str]:
        archives = [self._pause_archive()]
        if self.image_dir is not None:
            archives += sorted(self.image_dir.glob("*.oci.tar"))
        for archive in archives:
            self.ctr("images", "import", "--no-unpack=false", str(archive), timeout=300)
        listed = self.ctr("images", "list", "-q").stdout.split()
        return sorted(ref for ref in listed if not ref.startswith("sha256:"))

    # control plane ---------------------------------------------------------------------------
    def _start_control_plane(self, certs: dict[str, Path], timeout: float) -> None:
        self._spawn_in_netns(
            "etcd",
            [
                self.binary("etcd"),
                f"--data-dir={self.workdir / 'etcd'}",
                "--listen-client-urls=http://127.0.0.1:2379",
                "--advertise-client-urls=http://127.0.0.1:2379",
                "--listen-peer-urls=http://127.0.0.1:2380",
                "--initial-advertise-peer-urls=http://127.0.0.1:2380",
                "--initial-cluster=default=http://127.0.0.1:2380",
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        )
        self._spawn_in_netns(
            "kube-apiserver",
            [
                self.binary("kube-apiserver"),
                "--etcd-servers=http://127.0.0.1:2379",
                f"--secure-port={API_PORT}",
                "--bind-address=0.0.0.0",
                f"--advertise-address={NODE_IP}",
                f"--tls-cert-file={certs['server.crt']}",
                f"--tls-private-key-file={certs['server.key']}",
                f"--client-ca-file={certs['ca.crt']}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--allow-privileged=true",
                "--authorization-mode=RBAC",
                # ServiceAccount admission on: pods get projected tokens, as in any real cluster
                "--service-account-issuer=https://kubernetes.default.svc",
                f"--service-account-key-file={certs['sa.pub']}",
                f"--service-account-signing-key-file={certs['sa.key']}",
                "--endpoint-reconciler-type=lease",
                f"--kubelet-client-certificate={certs['admin.crt']}",
                f"--kubelet-client-key={certs['admin.key']}",
                "--kubelet-preferred-address-types=InternalIP",
                f"--cert-dir={self.workdir / 'apiserver-certs'}",
            ],
        )
        # outside the namespace (tests, kubectl, helm): through the forwarder; inside: the node address
        self.inner_kubeconfig = self._write_kubeconfig(certs, f"https://{NODE_IP}:{API_PORT}", "kubeconfig.node")
        self.kubeconfig = self._write_kubeconfig(certs)  # through the forwarder on the host's loopback
        self._wait_ready(timeout)
        # node lifecycle on: it lifts the not-ready taint a new Node gets
        controllers = "*,-nodeipam,-cloud-node-lifecycle,-service,-route"
        kcm = self.controller_manager_args(self.inner_kubeconfig, certs, controllers)
        self._spawn_in_netns("kube-controller-manager", kcm)
        self._spawn_in_netns("kube-scheduler", self.scheduler_args(self.inner_kubeconfig))

    # the node --------------------------------------------------------------------------------
    def _kubelet_config(self, certs: dict[str, Path]) -> dict[str, object]:
        w = self.workdir
        return {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "failCgroupV1": False,  # these VMs are cgroup v1
            "cgroupDriver": "cgroupfs",
            "failSwapOn": False,
            "containerRuntimeEndpoint": f"unix://{self.containerd_sock}",
            "address": NODE_IP,
            "readOnlyPort": 0,
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": False},
                "x509": {"clientCAFile": str(certs["ca.crt"])},
            },
            "authorization": {"mode": "AlwaysAllow"},
            "oomScoreAdj": 0,  # the default -999 needs CAP_SYS_RESOURCE, not in this bounding set
            "podLogsDir": str(w / "pod-logs"),
            "volumePluginDir": str(w / "volume-plugins"),
            "resolvConf": str(w / "resolv.conf"),
            "imageGCHighThresholdPercent": 100,  # never collect the imported images
            "imageGCLowThresholdPercent": 99,
            "evictionHard": {
                "memory.available": "100Mi",
                "nodefs.available": "1%",
                "imagefs.available": "1%",
                "nodefs.inodesFree": "1%",
            },
            "serializeImagePulls": False,
        }

    def _start_node(self, certs: dict[str, Path]) -> None:
        w = self.workdir
        (w / "resolv.conf").write_text("nameserver 127.0.0.1\n")  # no DNS: nothing leaves the namespace
        config = w / "kubelet-config.json"
        config.write_text(json.dumps(self._kubelet_config(certs)))
        self._spawn_in_netns(
            "kubelet",
            [
                self.binary("kubelet"),
                f"--config={config}",
                f"--kubeconfig={self.inner_kubeconfig}",
                f"--root-dir={w / 'kubelet'}",
                f"--cert-dir={w / 'kubelet' / 'pki'}",
                f"--hostname-override={NODE_NAME}",
                f"--node-ip={NODE_IP}",
                "--v=1",
            ],
        )
        self._spawn_in_netns(
            "kube-proxy",
            [
                self.binary("kube-proxy"),
                f"--kubeconfig={self.inner_kubeconfig}",
                "--proxy-mode=iptables",
                f"--hostname-override={NODE_NAME}",
                f"--cluster-cidr={POD_CIDR}",
                # conntrack sysctls are not writable from a child namespace
                "--conntrack-max-per-core=0",
                "--conntrack-tcp-timeout-established=0",
                "--conntrack-tcp-timeout-close-wait=0",
            ],
        )

    def _wait_node_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            for proc in self.procs:
                if proc.popen.poll() is not None:
                    raise RuntimeError(f"{proc.name} exited {proc.popen.returncode}:\n{self.logs(proc.name)}")
            try:
                node = self.request("GET", f"/api/v1/nodes/{NODE_NAME}")
                ready = any(
                    c["type"] == "Ready" and c["status"] == "True" for c in node.get("status", {}).get("conditions", [])
                )
                if ready and not node["spec"].get("taints"):
                    return
                last = json.dumps(node.get("spec", {}).get("taints"))
            except Exception as err:
                last = str(err)
            time.sleep(0.2)
        raise TimeoutError(f"node not Ready after {timeout}s ({last}):\n{self.logs('kubelet')}")

    def component_versions(self) -> dict[str, str]:
        return {
            "kubelet": self.versions["K8S_VERSION"],
            "kube-proxy": self.versions["K8S_VERSION"],
            "containerd": node_host.package_version("containerd"),
            "runc": node_host.package_version("runc"),
            "CNI plugins": node_host.package_version("containernetworking-plugins"),
            "etcd": self.versions["ETCD_VERSION"],
        }

    # -- teardown ------------------------------------------------------------------------------
    def _proc(self, name: str) -> Proc | None:
        return next((p for p in self.procs if p.name == name), None)

    def _stop(self, *names: str) -> None:
        for name in names:
            proc = self._proc(name)
            if proc is not None:
                proc.stop(timeout=15)
                self.procs.remove(proc)

    def _delete_pods(self, timeout: float = 60) -> None:
        """Every pod deleted through the API while the kubelet still runs (CRI stop + CNI DEL)."""
        if self._proc("kubelet") is None or self._proc("kube-apiserver") is None:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.kubectl("delete", "pods", "--all", "-A", "--grace-period=1", "--wait=false", check=False)
            pods = self.request("GET", "/api/v1/pods")
            if not pods.get("items"):
                return
            time.sleep(1)

    def _stop_containers(self) -> None:
        if self._proc("containerd") is None:
            return
        for task in self.ctr("tasks", "list", "-q", check=False).stdout.split():
            self.ctr("tasks", "kill", "-s", "SIGKILL", task, check=False)
            self.ctr("tasks", "delete", "-f", task, check=False)

    def stop(self) -> None:
        """Tear everything down, in the order the notes verified."""
        if self.torn_down:
            return
        self.torn_down = True
        try:
            self._stop("kube-controller-manager", "kube-scheduler")  # nothing recreates pods now
            self._delete_pods()
        except Exception as err:  # keep tearing down whatever happens
            print(f"realnode teardown: deleting pods failed: {err}", file=sys.stderr)
        self._stop("kube-proxy", "kubelet", "kube-apiserver", "etcd")
        self._stop_containers()
        self._stop("containerd")
        for proc in list(self.procs):
            proc.stop()
        self.procs.clear()
        node_host.kill_processes_mentioning(str(self.workdir))  # containerd shims
        if self.forwarder is not None and self.forwarder.poll() is None:
            self.forwarder.send_signal(signal.SIGTERM)
            self.forwarder.wait(10)
        time.sleep(0.2)
        node_host.unmount_all(self.workdir)
        node_host.remove_cgroups()
        for sub in ("s", "runc"):
            d = node_host.RUN_CONTAINERD / sub
            if d.is_dir() and not any(d.iterdir()):
                d.rmdir()
        if not self.before.had_run_containerd and node_host.RUN_CONTAINERD.is_dir():
            with contextlib.suppress(OSError):
                node_host.RUN_CONTAINERD.rmdir()
        self.netns.delete()
        node_host.restore_sysctls(self.before.sysctls)
        if os.environ.get("SCRIPTRUN_KEEP_REALNODE"):
            print(f"realnode: kept {self.workdir}", file=sys.stderr)
        elif not node_host.mounts_under(self.workdir):  # never rm -rf through a live mount
            shutil.rmtree(self.workdir, ignore_errors=True)

    def leftovers(self) -> list[str]:
        found = node_host.leftovers(self.before, self.workdir, self.netns)
        if os.environ.get("SCRIPTRUN_KEEP_REALNODE"):
            found = [f for f in found if not f.startswith("work dir")]
        return found
