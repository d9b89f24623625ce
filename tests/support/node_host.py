"""The host side of the real-node tier: packages, the network namespace, global sysctls, and the
inventory of everything a node leaves on a machine (processes, mounts, cgroups, netns, sysctls, files
in /run), so teardown can remove it and a test can prove it did.

Facts behind each step: shared/notes/real-cluster.md (verified on these VMs).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

# Debian packages for a node (the kubelet and kube-proxy are built from Go modules, hack/k8s-binaries.sh)
PACKAGES = ("containerd", "runc", "containernetworking-plugins", "iptables", "conntrack", "gcc", "libc6-dev")
# Global (not per-netns) sysctls a kubelet sets or checks; restored at teardown
SYSCTLS = (
    "vm.overcommit_memory",
    "vm.panic_on_oom",
    "kernel.panic",
    "kernel.panic_on_oops",
    "kernel.keys.root_maxkeys",
    "kernel.keys.root_maxbytes",
)
CNI_BIN = Path("/usr/lib/cni")
RUN_CONTAINERD = Path("/run/containerd")
RUN_NETNS = Path("/run/netns")


def sh(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def missing_packages() -> list[str]:
    out = sh("dpkg-query", "-W", "-f=${Package} ${db:Status-Status}\n", *PACKAGES, check=False).stdout
    installed = {line.split()[0] for line in out.splitlines() if line.endswith(" installed")}
    return [p for p in PACKAGES if p not in installed]


def install_packages() -> list[str]:
    """apt-get install what is missing (root); returns what was installed."""
    missing = missing_packages()
    if missing:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, capture_output=True, env=env, timeout=600)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
            check=True,
            capture_output=True,
            env=env,
            timeout=900,
        )
    return missing


def package_version(name: str) -> str:
    return sh("dpkg-query", "-W", "-f=${Version}", name, check=False).stdout.strip() or "?"


def read_sysctls() -> dict[str, str]:
    values = {}
    for key in SYSCTLS:
        path = Path("/proc/sys") / key.replace(".", "/")
        if path.exists():
            values[key] = path.read_text().strip()
    return values


def restore_sysctls(saved: dict[str, str]) -> None:
    for key, value in saved.items():
        path = Path("/proc/sys") / key.replace(".", "/")
        try:
            if path.read_text().strip() != value:
                path.write_text(value)
        except OSError:
            pass


@dataclass
class NetNS:
    """A private network namespace: a veth pair with both ends inside it (the `dummy` link type is
    not built into these kernels), the node address on eth0, a default route, forwarding on."""

    name: str
    node_ip: str
    had_run_netns: bool = field(default_factory=RUN_NETNS.exists)

    @property
    def path(self) -> str:
        return str(RUN_NETNS / self.name)

    def create(self) -> None:
        sh("ip", "netns", "add", self.name)
        ip = ("ip", "-n", self.name)
        sh(*ip, "link", "set", "lo", "up")
        sh(*ip, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p")
        sh(*ip, "link", "set", "eth0p", "up")
        sh(*ip, "addr", "add", f"{self.node_ip}/24", "dev", "eth0")
        sh(*ip, "link", "set", "eth0", "up")
        sh(*ip, "route", "add", "default", "dev", "eth0")
        self.run("sysctl", "-qw", "net.ipv4.ip_forward=1")

    def wrap(self, args: list[str]) -> list[str]:
        """Run a command in the namespace's network only (not `ip netns exec`, which also unshares
        the mount namespace: the kubelet and containerd must see the same mounts)."""
        return ["nsenter", f"--net={self.path}", "--", *args]

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return sh(*self.wrap(list(args)), check=check)

    def exists(self) -> bool:
        return Path(self.path).exists()

    def delete(self) -> None:
        if self.exists():
            sh("ip", "netns", "del", self.name, check=False)
        # the first `ip netns add` turns /run/netns into a shared self-bind mount; undo it when unused
        if not self.had_run_netns and RUN_NETNS.exists() and not any(RUN_NETNS.iterdir()):
            sh("umount", str(RUN_NETNS), check=False)
            with contextlib.suppress(OSError):
                RUN_NETNS.rmdir()


def mounts_under(root: Path) -> list[str]:
    """Mount points at or below `root`, deepest first."""
    prefix = str(root)
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point == prefix or point.startswith(prefix + "/"):
            points.append(point)
    return sorted(set(points), key=lambda p: (-p.count("/"), p))


def unmount_all(root: Path) -> None:
    for _ in range(5):  # a lazy unmount can reveal mounts stacked under it
        points = mounts_under(root)
        if not points:
            return
        for point in points:
            sh("umount", "-l", point, check=False)


def cgroup_roots() -> list[Path]:
    roots = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        parts = line.split()
        if parts[2] in ("cgroup", "cgroup2"):
            roots.append(Path(parts[1]))
    return roots


def kubepods_cgroups() -> list[Path]:
    return [root / "kubepods" for root in cgroup_roots() if (root / "kubepods").is_dir()]


def remove_cgroups() -> None:
    for top in kubepods_cgroups():
        dirs = sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
        for d in [*dirs, top]:
            for _ in range(20):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.1)


def processes_mentioning(text: str) -> list[tuple[int, str]]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append((int(entry.name), cmdline.strip()))
    return found


def kill_processes_mentioning(text: str) -> None:
    for pid, _ in processes_mentioning(text):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def host_kube_chains() -> list[str]:
    """KUBE-* iptables chains in the host's network namespace (a node must leave none there)."""
    if not shutil.which("iptables-save"):
        return []
    out = sh("iptables-save", check=False).stdout
    return [line for line in out.splitlines() if line.startswith(":KUBE")]


@dataclass
class HostSnapshot:
    """What the machine looked like before a node came up."""

    sysctls: dict[str, str]
    had_run_containerd: bool
    netns: set[str]
    kube_chains: list[str]

    @classmethod
    def take(cls) -> HostSnapshot:
        names = set(os.listdir(RUN_NETNS)) if RUN_NETNS.exists() else set()
        return cls(read_sysctls(), RUN_CONTAINERD.exists(), names, host_kube_chains())


def leftovers(before: HostSnapshot, workdir: Path, netns: NetNS) -> list[str]:
    """Everything a torn-down node left behind; empty when the machine is as it was."""
    found = [f"process {pid}: {cmd[:160]}" for pid, cmd in processes_mentioning(str(workdir))]
    found += [f"mount {p}" for p in mounts_under(workdir)]
    found += [f"cgroup {p}" for p in kubepods_cgroups()]
    if netns.exists():
        found.append(f"netns {netns.name}")
    if not netns.had_run_netns and RUN_NETNS.exists():
        found.append(f"{RUN_NETNS} (created by `ip netns add`)")
    if not before.had_run_containerd and RUN_CONTAINERD.exists():
        found.append(f"{RUN_CONTAINERD}: {sorted(str(p) for p in RUN_CONTAINERD.rglob('*'))[:5]}")
    now = read_sysctls()
    found += [f"sysctl {k}={now.get(k)} (was {v})" for k, v in before.sysctls.items() if now.get(k) != v]
    chains = [c for c in host_kube_chains() if c not in before.kube_chains]
    found += [f"host iptables chain {c}" for c in chains]
    if workdir.exists():
        found.append(f"work dir {workdir}")
    return found
