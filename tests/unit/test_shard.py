"""Sharding (build/shard.py): the selector's keys, what children inherit, a malformed selector
refused with its requirement named; and the watches the operator then asks the API server for."""

from __future__ import annotations

import dataclasses

import kopf
import pytest
from kopf._cogs.structs.references import Resource

from scriptrun.build.shard import SelectorError, inherited, requirements, selector_keys
from scriptrun.controllers.config import OperatorConfig
from scriptrun.controllers.pods import pod_selector
from scriptrun.handlers.setup import select_watches

SCRIPTRUNS = Resource("scriptrun.dev", "v1alpha1", "scriptruns", kind="ScriptRun", namespaced=True)
WORKFLOWS = Resource("scriptrun.dev", "v1alpha1", "workflows", kind="Workflow", namespaced=True)
PODS = Resource("", "v1", "pods", kind="Pod", namespaced=True)
LEASES = Resource("coordination.k8s.io", "v1", "leases", kind="Lease", namespaced=True)
NODES = Resource("", "v1", "nodes", kind="Node", namespaced=False)


@pytest.mark.parametrize(
    ("selector", "keys"),
    [
        ("", ()),
        ("team=ml", ("team",)),
        ("team==ml,tier!=batch", ("team", "tier")),
        ("team in (ml, data),scriptrun.dev/shard", ("team", "scriptrun.dev/shard")),
        (" team notin (ml) , !example.com/opt-out ", ("team", "example.com/opt-out")),
        ("team=ml,team!=data", ("team",)),
        ("team=", ("team",)),
    ],
)
def test_selector_keys(selector: str, keys: tuple[str, ...]) -> None:
    assert selector_keys(selector) == keys


@pytest.mark.parametrize("bad", ["team in ml", "team=(ml)", "=ml", "team in (ml", "-team=ml", "team=ml=x", "a b"])
def test_a_malformed_selector_is_refused_naming_the_requirement(bad: str) -> None:
    with pytest.raises(SelectorError, match="not a label selector requirement"):
        selector_keys(bad)


def test_requirements_keep_commas_inside_sets() -> None:
    assert requirements("a in (x,y),b") == ["a in (x,y)", "b"]


def test_children_inherit_only_the_selector_keys() -> None:
    labels = {"team": "ml", "app": "x", "scriptrun.dev/shard": "b"}
    assert inherited(labels, ("team", "scriptrun.dev/shard", "absent")) == {"team": "ml", "scriptrun.dev/shard": "b"}
    assert inherited(None, ("team",)) == {}


def _selectors(config: OperatorConfig) -> dict[str, list[str]]:
    settings = kopf.OperatorSettings()
    select_watches(settings, config)
    collect = settings.watching.label_selectors.collect
    return {r.plural: list(collect(r)) for r in (SCRIPTRUNS, WORKFLOWS, PODS, LEASES, NODES)}


def test_the_watches_are_selected_server_side() -> None:
    assert _selectors(OperatorConfig()) == {
        "scriptruns": [],
        "workflows": [],
        "pods": [],
        "leases": ["scriptrun.dev/heartbeat=true"],
        "nodes": [],
    }
    sharded = dataclasses.replace(OperatorConfig(), shard_selector="team in (ml,data)", shard_keys=("team",))
    assert _selectors(sharded) == {
        "scriptruns": ["team in (ml,data)"],
        "workflows": ["team in (ml,data)"],
        "pods": [],
        "leases": ["scriptrun.dev/heartbeat=true"],
        "nodes": [],
    }


def test_the_pods_watch_selects_ours_of_this_shard() -> None:
    """Pods are not watched through Kopf (its selectors above say nothing of them) but by
    controllers/pods.py, with this selector."""
    assert pod_selector() == "app.kubernetes.io/managed-by=scriptrun"
    assert pod_selector("team in (ml,data)") == "app.kubernetes.io/managed-by=scriptrun,team in (ml,data)"
