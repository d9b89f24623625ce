"""Runs last in the tier: the operator never restarted (its heartbeat kept its liveness green); the
real node comes down and leaves nothing on the machine (processes, mounts, cgroups, the network
namespace, /run/containerd, global sysctls, host iptables chains)."""

from __future__ import annotations

import json
import time

from scriptrun.engine import clock
from tests.e2e.conftest import OPERATOR_NS, REALNODE_INFO, TIER_STARTED, operator_log
from tests.support.realnode import RealCluster


def test_no_image_was_ever_pulled(realnode: RealCluster) -> None:
    """Every image came from `make image` through `ctr images import`: the kubelet pulled nothing."""
    out = realnode.kubectl("get", "events", "-A", "--field-selector=reason=Pulling", "-o", "name").stdout
    assert out.strip() == "", out


def test_the_operator_stayed_alive_on_its_heartbeat(realnode: RealCluster) -> None:
    """The operator ran the whole tier in its pod without a restart: its liveness probe (the heartbeat
    Lease coming back through its watch, with the chart's RBAC) never failed."""
    pod = json.loads(
        realnode.kubectl("-n", OPERATOR_NS, "get", "pod", "-l", "app.kubernetes.io/name=scriptrun", "-o", "json").stdout
    )["items"][0]
    assert [c["restartCount"] for c in pod["status"]["containerStatuses"]] == [0], operator_log(realnode)
    name = f"scriptrun-heartbeat-{pod['metadata']['name']}"
    lease = json.loads(realnode.kubectl("-n", OPERATOR_NS, "get", "lease", name, "-o", "json").stdout)
    assert lease["spec"]["holderIdentity"] == pod["metadata"]["name"]
    renewed = clock.parse(lease["spec"]["renewTime"])
    assert renewed is not None and (clock.utcnow() - renewed).total_seconds() < 60


def test_teardown_leaves_nothing_behind(realnode: RealCluster) -> None:
    started = time.monotonic()
    realnode.stop()
    took = time.monotonic() - started
    assert realnode.leftovers() == []
    tier = time.monotonic() - TIER_STARTED[0] if TIER_STARTED else 0.0
    REALNODE_INFO.append(
        f"real node torn down in {took:.1f}s, nothing left behind (checked); the tier took {tier:.0f}s in all"
    )
