"""The real-node tier: one real single-node cluster for the session (tests/support/realnode.py), the
chart installed with `helm install` as a user does it, and a fresh namespace per test.

Needs root (network namespace, containerd, kubelet, image build). As a normal user the tier skips
with one line; under CI (SCRIPTRUN_REQUIRE_E2E=1, set by .ci/run) it fails instead of skipping.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from tests.support import node_host
from tests.support.controlplane import binaries_dir
from tests.support.kube import Kube
from tests.support.realnode import RealCluster
from tests.support.testlogs import FailureLogs

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "scriptrun"
OPERATOR_NS = "scriptrun-system"
REALNODE_INFO: list[str] = []
FAILURE_LOGS = FailureLogs("e2e")
TIER_STARTED: list[float] = []  # when the real node started coming up (the tier's duration ends at teardown)
REQUIRED_ARCHIVES = ("runner.oci.tar", "monitor.oci.tar", "operator.oci.tar", "test-python3.oci.tar")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for line in REALNODE_INFO:
        terminalreporter.write_line(line)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failed test (setup, call or teardown): keep the real node's logs (control plane, kubelet,
    containerd, kube-proxy, and every container's, the operator's among them) past the run (testlogs.py)."""
    report = yield
    if report.failed and (line := FAILURE_LOGS.on_failure(getattr(item, "funcargs", {}), report.nodeid, report.when)):
        REALNODE_INFO.append(line)
    return report


def image_dir() -> Path:
    default = Path(os.environ.get("SCRIPTRUN_CACHE", Path.home() / ".cache" / "scriptrun")) / "image"
    return Path(os.environ.get("SCRIPTRUN_IMAGE_DIR", default))


def why_not() -> str | None:
    """Why this tier cannot run here, or None."""
    if os.geteuid() != 0:
        return "e2e tier (real kubelet) skipped: needs root (network namespace, containerd, kubelet)"
    bins = binaries_dir()
    versions = bins / "versions.env"
    if not versions.exists() or not any(bins.glob("kubelet-*")):
        return "e2e tier skipped: kubelet/kube-proxy not built: run `make bins` (make test does)"
    missing = [name for name in REQUIRED_ARCHIVES if not (image_dir() / name).exists()]
    if missing:
        return f"e2e tier skipped: image archives missing in {image_dir()}: {missing}: run `make image`"
    return None


def _skip_or_fail(reason: str) -> None:
    if os.environ.get("SCRIPTRUN_REQUIRE_E2E"):
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def realnode() -> Iterator[RealCluster]:
    reason = why_not()
    if reason:
        _skip_or_fail(reason)
    started = time.monotonic()
    TIER_STARTED.append(started)
    installed = node_host.install_packages()
    cluster = RealCluster.create_real(image_dir())
    try:
        cluster.start_real()
        versions = cluster.component_versions()
        REALNODE_INFO.append(
            "e2e tests ran on a real node: "
            + ", ".join(f"{k} {v}" for k, v in versions.items())
            + f" in network namespace {cluster.netns.name}; node Ready in {time.monotonic() - started:.1f}s"
            + (f" (installed {', '.join(installed)})" if installed else "")
        )
        yield cluster
    finally:
        cluster.stop()
        left = cluster.leftovers()
        if left:
            REALNODE_INFO.append(f"REAL NODE TEARDOWN LEFT: {left}")
            raise AssertionError(f"the real node left things behind: {left}")


def helm(cluster: RealCluster, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [cluster.binary("helm"), f"--kubeconfig={cluster.kubeconfig}", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "HELM_CACHE_HOME": str(cluster.workdir / "helm-cache"), "HOME": str(cluster.workdir)},
    )
    assert proc.returncode == 0, f"helm {' '.join(args)}: {proc.stderr}"
    return proc


# what a user sets to run the images `make image` built and imported, never pulling
HELM_VALUES = (
    "image.pullPolicy=Never",
    "monitorImage.pullPolicy=Never",
    "operator.resyncSeconds=15",
    "operator.deadlineGraceSeconds=2",
)


@pytest.fixture(scope="session")
def installed(realnode: RealCluster) -> str:
    """`helm install` the chart; the operator runs in-cluster with its ServiceAccount. Returns its namespace."""
    # the operator's namespace enforces the Pod Security Standards' "restricted" level: the chart's
    # pod must pass the API server's PodSecurity admission
    realnode.kubectl("create", "namespace", OPERATOR_NS)
    realnode.kubectl("label", "namespace", OPERATOR_NS, "pod-security.kubernetes.io/enforce=restricted")
    args = ["install", "scriptrun", str(CHART), "--namespace", OPERATOR_NS]
    for value in HELM_VALUES:
        args += ["--set", value]
    helm(realnode, *args, "--wait", "--timeout=180s")
    realnode.kubectl("-n", OPERATOR_NS, "rollout", "status", "deployment/scriptrun", "--timeout=120s")
    realnode.kubectl(
        "-n", OPERATOR_NS, "wait", "--for=condition=Ready", "pod", "-l", "app.kubernetes.io/name=scriptrun"
    )
    return OPERATOR_NS


def operator_log(cluster: RealCluster, tail: int = 60) -> str:
    proc = cluster.kubectl(
        "-n", OPERATOR_NS, "logs", "deployment/scriptrun", f"--tail={tail}", "--all-containers", check=False
    )
    return proc.stdout + proc.stderr


@pytest.fixture
def kube(realnode: RealCluster, installed: str) -> Iterator[Kube]:
    ns = f"e2e-{uuid.uuid4().hex[:8]}"
    realnode.kubectl("create", "namespace", ns)

    def diagnostics() -> str:
        objs = realnode.kubectl("-n", ns, "get", "pods,scriptruns,workflows", "-o", "wide", check=False).stdout
        events = realnode.kubectl("-n", ns, "get", "events", "--sort-by=.lastTimestamp", check=False).stdout
        return (
            f"--- objects in {ns}:\n{objs}\n--- events:\n{events[-3000:]}\n--- operator log:\n{operator_log(realnode)}"
        )

    yield Kube(realnode, ns, diagnostics)
    realnode.kubectl("delete", "namespace", ns, "--wait=false", check=False)
