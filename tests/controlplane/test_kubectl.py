"""The names users type: `kubectl get scriptrun NAME`, `kubectl get workflow NAME` and the category."""

from __future__ import annotations

from typing import Any

from scriptrun.model.crd import CATEGORY, all_crds
from tests.support.kube import Kube, scriptrun

EXIT = "test.scriptrun.dev/exit-code"


def workflow(name: str) -> dict[str, Any]:
    task = {"name": "a", "script": {"source": "print('a')"}, "podMetadata": {"annotations": {EXIT: "0"}}}
    return {
        "apiVersion": "scriptrun.dev/v1alpha1",
        "kind": "Workflow",
        "metadata": {"name": name},
        "spec": {"tasks": [task]},
    }


def table(kube: Kube, *args: str) -> list[list[str]]:
    out = kube.cluster.kubectl("-n", kube.ns, "get", *args).stdout
    return [line.split() for line in out.splitlines() if line.strip()]


def test_the_category_shadows_no_resource_name() -> None:
    """kubectl expands a category before it looks up a resource: a category named like a kind's
    singular made `kubectl get scriptrun NAME` fail with "you must specify only one resource"."""
    names = set()
    for crd in all_crds().values():
        spec_names = crd["spec"]["names"]
        assert spec_names["categories"] == [CATEGORY]
        names |= {spec_names["singular"], spec_names["plural"], *spec_names["shortNames"]}
    assert CATEGORY not in names


def test_get_by_singular_name_prints_the_columns_and_the_category_lists_both_kinds(kube: Kube) -> None:
    kube.apply([scriptrun("hello", {}, {EXIT: "0"}), workflow("flow")])
    kube.wait_phase("hello", "Succeeded")
    kube.wait(
        "workflow flow Succeeded",
        lambda: ((kube.get("workflow", "flow") or {}).get("status") or {}).get("phase") == "Succeeded",
    )

    run = table(kube, "scriptrun", "hello")
    assert run[0] == ["NAME", "PHASE", "ATTEMPTS", "DURATION", "COST", "AGE"], run
    assert run[1][:3] == ["hello", "Succeeded", "1"], run
    assert run[1][5] == "USD", run  # the COST column reads e.g. "0.0000 USD" (docs/cost.md)
    wide = table(kube, "scriptrun", "hello", "-o", "wide")
    assert wide[0][-1] == "MESSAGE" and "succeeded on attempt 1" in " ".join(wide[1]), wide

    flow = table(kube, "workflow", "flow")
    assert flow[0] == ["NAME", "PHASE", "PROGRESS", "DURATION", "COST", "AGE"], flow
    assert flow[1][:3] == ["flow", "Succeeded", "1/1"], flow
    assert flow[1][5] == "USD", flow  # its tasks' costs added up

    listed = {row[0] for row in table(kube, CATEGORY) if row[0] != "NAME"}
    assert {
        "scriptrun.scriptrun.dev/hello",
        "scriptrun.scriptrun.dev/flow-a",
        "workflow.scriptrun.dev/flow",
    } <= listed, listed
