"""Phase enums: one place says which phases are terminal; on the wire a phase is a plain string."""

import json
import warnings

import pytest
import yaml

from scriptrun import model
from scriptrun.model.crd import all_crds
from scriptrun.model.scriptrun import RunPhase
from scriptrun.model.workflow import NodePhase, TaskSummary, WorkflowPhase, WorkflowStatus

TERMINAL = {
    WorkflowPhase: {"Succeeded", "Failed", "Error"},
    NodePhase: {"Succeeded", "Failed", "Skipped", "Omitted"},
    RunPhase: {"Succeeded", "Failed"},
}


@pytest.mark.parametrize("enum", list(TERMINAL), ids=lambda e: e.__name__)
def test_terminal(enum: type[WorkflowPhase | NodePhase | RunPhase]) -> None:
    assert {p.value for p in enum if p.terminal} == TERMINAL[enum]
    assert all(p == p.value for p in enum)  # compares equal to its string: `phase == "Failed"` keeps working


def test_exported_lazily_from_the_model_package() -> None:
    assert model.WorkflowPhase is WorkflowPhase and model.NodePhase is NodePhase


def test_status_parses_into_enums_and_dumps_plain_strings() -> None:
    status = WorkflowStatus.model_validate({"phase": "Running", "tasks": {"a": {"phase": "Skipped"}}})
    assert status.phase is WorkflowPhase.RUNNING and not status.phase.terminal
    assert status.tasks["a"].phase is NodePhase.SKIPPED and status.tasks["a"].phase.terminal
    for dumped in (status.dump(), status.model_dump(mode="json"), status.model_dump()):
        assert type(dumped["phase"]) is str and dumped["phase"] == "Running"
        assert type(dumped["tasks"]["a"]["phase"]) is str and dumped["tasks"]["a"]["phase"] == "Skipped"
    assert json.loads(status.model_dump_json())["phase"] == "Running"
    yaml.safe_dump(status.model_dump())  # the safe dumper refuses str subclasses


def test_a_plain_string_assigned_still_dumps_cleanly() -> None:
    """Assignment is not validated: code that assigns "Failed" must not get a serializer warning."""
    status = WorkflowStatus()
    status.phase = "Failed"  # type: ignore[assignment]
    status.tasks["a"] = TaskSummary(phase=NodePhase.PENDING).model_copy(update={"phase": "Omitted"})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert status.dump()["phase"] == "Failed" and status.dump()["tasks"]["a"]["phase"] == "Omitted"


def test_unknown_phases_are_rejected() -> None:
    with pytest.raises(ValueError):
        WorkflowStatus.model_validate({"phase": "Skipped"})
    with pytest.raises(ValueError):
        TaskSummary.model_validate({"phase": "Error"})


def test_the_crd_keeps_its_phase_schemas() -> None:
    """The workflow phase enum is the enum's values; a task's phase stays a plain string in the CRD."""
    schema = all_crds()["scriptrun.dev_workflows.yaml"]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    status = schema["properties"]["status"]["properties"]
    assert status["phase"] == {"enum": [p.value for p in WorkflowPhase], "type": "string"}
    assert status["tasks"]["additionalProperties"]["properties"]["phase"] == {"type": "string"}
