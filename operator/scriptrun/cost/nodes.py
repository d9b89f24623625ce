"""What a Node says about its price: provider, region, zone, instance type, capacity type (spot or
on-demand) and capacity, from `spec.providerID` and the well-known labels. Pure: the caller parses
the capacity quantities (the Kubernetes client has the parser) and caches the facts per node.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from scriptrun.cost.allocation import GIB

Provider = Literal["aws", "azure", "gcp", "unknown"]
Capacity = Literal["on-demand", "spot"]

PROVIDER_PREFIXES: dict[str, Provider] = {"aws://": "aws", "azure://": "azure", "gce://": "gcp"}
REGION_LABELS = ("topology.kubernetes.io/region", "failure-domain.beta.kubernetes.io/region")
ZONE_LABELS = ("topology.kubernetes.io/zone", "failure-domain.beta.kubernetes.io/zone")
TYPE_LABELS = ("node.kubernetes.io/instance-type", "beta.kubernetes.io/instance-type")
# label -> the values that mean spot/preemptible (compared case-insensitively)
SPOT_LABELS: dict[str, tuple[str, ...]] = {
    "eks.amazonaws.com/capacityType": ("spot",),
    "karpenter.sh/capacity-type": ("spot",),
    "lifecycle": ("ec2spot",),
    "node.kubernetes.io/lifecycle": ("spot",),
    "kubernetes.azure.com/scalesetpriority": ("spot",),
    "cloud.google.com/gke-preemptible": ("true",),
    "cloud.google.com/gke-spot": ("true",),
}
GPU_RESOURCES = ("nvidia.com/gpu", "amd.com/gpu")


@dataclass(frozen=True)
class NodeFacts:
    name: str
    provider: Provider
    region: str | None
    zone: str | None
    instance_type: str | None
    capacity_type: Capacity
    vcpus: Decimal
    memory_gib: Decimal
    gpus: Decimal


def _first(labels: Mapping[str, str], keys: tuple[str, ...]) -> str | None:
    return next((labels[k] for k in keys if labels.get(k)), None)


def provider_of(provider_id: str | None) -> Provider:
    text = (provider_id or "").lower()
    return next((p for prefix, p in PROVIDER_PREFIXES.items() if text.startswith(prefix)), "unknown")


def is_spot(labels: Mapping[str, str]) -> bool:
    return any(str(labels.get(k, "")).lower() in values for k, values in SPOT_LABELS.items())


def node_facts(
    name: str, provider_id: str | None, labels: Mapping[str, str], capacity: Mapping[str, Decimal]
) -> NodeFacts:
    """`capacity`: the node's `status.capacity` with quantities parsed (cpu in cores, memory in bytes)."""
    return NodeFacts(
        name=name,
        provider=provider_of(provider_id),
        region=_first(labels, REGION_LABELS),
        zone=_first(labels, ZONE_LABELS),
        instance_type=_first(labels, TYPE_LABELS),
        capacity_type="spot" if is_spot(labels) else "on-demand",
        vcpus=capacity.get("cpu", Decimal(0)),
        memory_gib=capacity.get("memory", Decimal(0)) / GIB,
        gpus=sum((capacity.get(r, Decimal(0)) for r in GPU_RESOURCES), Decimal(0)),
    )
