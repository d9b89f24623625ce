"""A finished Workflow's memory is let go (issue 11, "finished runs' memory is released"): its parsed
spec and plan, its decided and written status, and its body kept compressed. The controller runs
for real here, against an in-memory API server that answers creates and status patches as the real
one does (resourceVersions, merge patches)."""

from __future__ import annotations

import asyncio
import copy
import itertools
from typing import Any

from scriptrun.controllers.bodies import ChildChanged, Key
from scriptrun.controllers.config import OperatorConfig
from scriptrun.controllers.pods import PodIndex
from scriptrun.controllers.workflow import ChildRecord, WorkflowController, child_record
from scriptrun.telemetry.operator_metrics import OperatorMetrics

NS, NAME = "team-a", "nightly"
KEY: Key = (NS, NAME)


def merge(target: Any, patch: Any) -> Any:
    """RFC 7386, as the API server applies a merge patch."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge(result.get(key), value)
    return result


class ApiServer:
    """Creates and status patches of custom objects, kept in memory."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.status_patches = 0
        self._versions = itertools.count(100)
        self._uids = itertools.count(1)

    def put(self, plural: str, body: dict[str, Any]) -> dict[str, Any]:
        body = copy.deepcopy(body)
        meta = body["metadata"]
        meta.setdefault("uid", f"uid-{next(self._uids)}")
        meta["resourceVersion"] = str(next(self._versions))
        self.objects[plural, meta["namespace"], meta["name"]] = body
        return copy.deepcopy(body)

    async def create_custom(self, plural: str, body: dict[str, Any]) -> dict[str, Any] | None:
        if (plural, body["metadata"]["namespace"], body["metadata"]["name"]) in self.objects:
            return None
        return self.put(plural, body)

    async def patch_status(self, plural: str, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        self.status_patches += 1
        body = self.objects[plural, namespace, name]
        body["status"] = merge(body.get("status") or {}, patch)  # the status itself, as Kube.patch_status takes it
        return self.put(plural, body)

    def event(self, obj: dict[str, Any], type_: str, reason: str, message: str) -> None:
        pass


def workflow_body() -> dict[str, Any]:
    tasks = [{"name": f"t{i}", "script": {"source": "print(1)"}} for i in range(3)]
    meta = {"namespace": NS, "name": NAME, "generation": 1}
    return {"apiVersion": "scriptrun.dev/v1alpha1", "kind": "Workflow", "metadata": meta, "spec": {"tasks": tasks}}


async def eventually(check: Any, what: str, seconds: float = 10) -> None:
    for _ in range(int(seconds / 0.02)):
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"not within {seconds} s: {what}")


def test_a_finished_workflow_keeps_no_parsed_spec_nor_status_models() -> None:
    asyncio.run(finish_one_workflow())


async def finish_one_workflow() -> None:
    api = ApiServer()
    pods = PodIndex()
    pods.synced.set()
    children: dict[Key, list[ChildRecord]] = {}
    controller = WorkflowController(
        api,  # type: ignore[arg-type]
        OperatorConfig(workflow_status_interval_seconds=0.05),
        OperatorMetrics(),
        child_created=lambda key, body: None,
        pods=pods,
    )
    try:
        wf = api.put("workflows", workflow_body())
        controller.workflow_event("ADDED", wf, children)
        await eventually(lambda: len([k for k in api.objects if k[0] == "scriptruns"]) == 3, "3 children created")
        assert controller._parsed, "a running workflow's plan is cached"

        def phase() -> str | None:
            return (api.objects["workflows", NS, NAME].get("status") or {}).get("phase")

        await eventually(lambda: phase() == "Running", "Running stored")
        assert isinstance(controller.bodies.get(KEY), dict) and controller.bodies.kept_bytes() == 0

        records = []
        for (plural, _, _), child in list(api.objects.items()):
            if plural == "scriptruns":
                child["status"] = {"phase": "Succeeded", "attempts": [{"exitCode": 0}]}
                found = child_record(child)
                assert found is not None
                records.append(found[1])
        children[KEY] = records
        controller.child_changed(ChildChanged(NS, NAME))

        await eventually(lambda: phase() == "Succeeded", "Succeeded stored")
        await eventually(lambda: not controller._desired, "the decided status dropped once stored")
        assert not controller._written
        assert not controller._parsed
        kept = controller.bodies.get(KEY)
        assert kept is not None and kept["status"]["phase"] == "Succeeded"
        assert controller.bodies.kept_bytes() > 0, "the finished body is kept compressed"

        # looked at again (a child's late change): parsed anew, decided the same, nothing written
        patches = api.status_patches
        controller.child_changed(ChildChanged(NS, NAME))
        await asyncio.sleep(0.3)
        assert api.status_patches == patches
        assert phase() == "Succeeded"
        await eventually(lambda: not controller._desired and not controller._parsed, "released again")
    finally:
        await controller.close()


def test_a_child_summary_is_cached_only_while_its_observation_lives() -> None:
    """engine/workflow.py builds each child's task summary once per observation object; the cache
    must not keep summaries (and observations) of children that are gone."""
    import gc

    from scriptrun.engine import workflow as engine
    from scriptrun.engine.observe import observe_child

    gc.collect()  # what earlier tests left
    before = len(engine._SUMMARIES)
    observations = [observe_child({"phase": "Succeeded", "attempts": [{"exitCode": 0}]}) for _ in range(50)]
    summaries = [engine._summary_of(o) for o in observations]
    assert all(engine._summary_of(o) is s for o, s in zip(observations, summaries, strict=True)), "built once each"
    assert len(engine._SUMMARIES) == before + 50
    del observations
    gc.collect()
    assert len(engine._SUMMARIES) == before
