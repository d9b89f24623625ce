"""Session fixtures: one real control plane, the CRDs installed, the operator as a subprocess."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from tests.support.controlplane import ControlPlane, binaries_dir
from tests.support.kube import Kube
from tests.support.operator import OperatorProcess
from tests.support.testlogs import FailureLogs

ROOT = Path(__file__).resolve().parents[2]
CONTROL_PLANE_INFO: list[str] = []
FAILURE_LOGS = FailureLogs("controlplane")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for line in CONTROL_PLANE_INFO:
        terminalreporter.write_line(line)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failed test (setup, call or teardown): keep the control plane's logs past the run (testlogs.py)."""
    report = yield
    if report.failed and (line := FAILURE_LOGS.on_failure(getattr(item, "funcargs", {}), report.nodeid, report.when)):
        CONTROL_PLANE_INFO.append(line)
    return report


@pytest.fixture(scope="session")
def cluster() -> Iterator[ControlPlane]:
    if not (binaries_dir() / "versions.env").exists():
        message = "Kubernetes binaries not built: run `make bins` (make test does)"
        if os.environ.get("SCRIPTRUN_REQUIRE_CONTROLPLANE"):
            pytest.fail(message)
        pytest.skip(message)
    started = time.monotonic()
    cp = ControlPlane.create()
    try:
        cp.start(crds=ROOT / "crds")
        version = cp.version()
        CONTROL_PLANE_INFO.append(
            f"control-plane tests ran against a real kube-apiserver {version['gitVersion']} "
            f"(etcd {cp.versions['ETCD_VERSION']}, kwok {cp.versions['KWOK_VERSION']}, "
            f"kube-controller-manager + kube-scheduler), started in {time.monotonic() - started:.1f}s"
        )
        print(
            f"\ncontrol plane: kube-apiserver {version['gitVersion']} (etcd {cp.versions['ETCD_VERSION']}, "
            f"kwok {cp.versions['KWOK_VERSION']}) up in {time.monotonic() - started:.1f}s on :{cp.port}"
        )
        yield cp
    finally:
        cp.stop()


@pytest.fixture(scope="session")
def operator(cluster: ControlPlane) -> Iterator[OperatorProcess]:
    op = OperatorProcess(cluster).start()
    yield op
    op.stop()


@pytest.fixture
def live_operator(operator: OperatorProcess) -> OperatorProcess:
    """The session operator, restarted if an earlier test killed it."""
    if not operator.alive:
        operator.start()
    return operator


@pytest.fixture
def kube(cluster: ControlPlane, live_operator: OperatorProcess) -> Iterator[Kube]:
    ns = f"t-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", ns)

    def diagnostics() -> str:
        pods = cluster.kubectl("-n", ns, "get", "pods,scriptruns", "-o", "wide", check=False).stdout
        return f"--- objects in {ns}:\n{pods}\n--- operator log:\n{live_operator.tail(40)}"

    yield Kube(cluster, ns, diagnostics)
    cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)
