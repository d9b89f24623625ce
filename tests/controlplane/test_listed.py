"""The initial state listed (`SCRIPTRUN_WATCH_STREAMING=false`, as on API servers before 1.34) rather than
streamed: Kopf's watches and the pods' own watch start from a paged list. The session operator streams
(the API server here is 1.34), so this module runs its own operator with streaming off."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.controlplane import ControlPlane
from tests.support.kube import Kube, scriptrun
from tests.support.operator import OperatorProcess, finish_pod_while_down, namespace, own_operator

EXIT = "test.scriptrun.dev/exit-code"


@pytest.fixture(scope="module")
def listing(cluster: ControlPlane, operator: OperatorProcess) -> Iterator[OperatorProcess]:
    op = own_operator(cluster, operator, {"SCRIPTRUN_WATCH_STREAMING": "false"}, "operator-listed.log")
    yield op
    op.stop()
    assert not [e for e in op.errors() if "Traceback" in e], op.tail()


@pytest.fixture
def ns(cluster: ControlPlane, listing: OperatorProcess) -> Iterator[Kube]:
    yield from namespace(cluster, listing)


def test_listed_operator_runs_and_restarts_without_a_second_pod(ns: Kube, listing: OperatorProcess) -> None:
    assert "initial state of each watch: listed" in listing.log.read_text()
    ns.apply(scriptrun("quick", {}, {EXIT: "0"}))
    ns.apply(scriptrun("held", {}))
    ns.wait_phase("quick", "Succeeded")
    ns.wait("held running", lambda: ns.run_status("held").get("phase") == "Running")
    finish_pod_while_down(ns, listing, "held-a1")
    status = ns.wait_phase("held", "Succeeded")
    assert [a["attempt"] for a in status["attempts"]] == [1]
    assert sorted(p["metadata"]["name"] for p in ns.list("pods")) == ["held-a1", "quick-a1"]
    restarted = listing.log.read_text().rsplit("===== start", 1)[1]
    assert "pods listed:" in restarted, "the restarted operator read its pods from a list"
