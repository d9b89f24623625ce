"""Status merge patches: what changed, and what a model default made look stored when it was not."""

from scriptrun.build.patch import as_stored, merge_patch
from scriptrun.model.scriptrun import ScriptRunStatus


def test_merge_patch_sets_changes_and_nulls_removals() -> None:
    old = {"phase": "Running", "message": "x", "usage": {"a": 1, "b": 2}}
    new = {"phase": "Running", "usage": {"a": 1, "b": 3}, "duration": "1s"}
    assert merge_patch(old, new) == {"message": None, "usage": {"b": 3}, "duration": "1s"}


def test_a_defaulted_phase_is_written_on_the_first_patch() -> None:
    """An empty stored status parses as phase Pending; the first patch must still write Pending,
    or `kubectl get` shows an empty PHASE column while the pod waits."""
    stored: dict[str, object] = {}
    old = as_stored(ScriptRunStatus.model_validate(stored).dump(), stored)
    new = ScriptRunStatus(message="attempt 1 pending").dump()
    patch = merge_patch(old, new)
    assert patch["phase"] == "Pending" and patch["message"] == "attempt 1 pending"
    # once stored, an unchanged phase is not sent again
    assert "phase" not in merge_patch(as_stored(new, new), new)
