"""Runs last in the tier: the real node comes down and leaves nothing on the machine (processes,
mounts, cgroups, the network namespace, /run/containerd, global sysctls, host iptables chains)."""

from __future__ import annotations

import time

from tests.e2e.conftest import REALNODE_INFO, TIER_STARTED
from tests.support.realnode import RealCluster


def test_no_image_was_ever_pulled(realnode: RealCluster) -> None:
    """Every image came from `make image` through `ctr images import`: the kubelet pulled nothing."""
    out = realnode.kubectl("get", "events", "-A", "--field-selector=reason=Pulling", "-o", "name").stdout
    assert out.strip() == "", out


def test_teardown_leaves_nothing_behind(realnode: RealCluster) -> None:
    started = time.monotonic()
    realnode.stop()
    took = time.monotonic() - started
    assert realnode.leftovers() == []
    tier = time.monotonic() - TIER_STARTED[0] if TIER_STARTED else 0.0
    REALNODE_INFO.append(
        f"real node torn down in {took:.1f}s, nothing left behind (checked); the tier took {tier:.0f}s in all"
    )
