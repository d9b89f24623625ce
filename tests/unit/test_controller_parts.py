"""Pieces of the controllers that need no cluster: the status dump that reuses unchanged task
summaries, and which watch events count as news."""

from __future__ import annotations

from scriptrun.controllers.bodies import Bodies
from scriptrun.controllers.workflow import dump_status
from scriptrun.model.workflow import TaskSummary, WorkflowStatus


def status(**tasks: str) -> WorkflowStatus:
    return WorkflowStatus(phase="Running", progress="0/3", tasks={n: TaskSummary(phase=p) for n, p in tasks.items()})


def test_dump_status_equals_a_full_dump_whatever_changed() -> None:
    old = status(a="Succeeded", b="Running")
    written = (old, old.dump())
    assert dump_status(old, written) == old.dump()
    changed = old.model_copy(update={"tasks": {**old.tasks, "b": TaskSummary(phase="Failed", message="x")}})
    assert dump_status(changed, written) == changed.dump()
    grown = old.model_copy(update={"tasks": {**old.tasks, "c": TaskSummary(phase="Pending")}, "progress": "1/3"})
    assert dump_status(grown, written) == grown.dump()
    shrunk = old.model_copy(update={"tasks": {"a": old.tasks["a"]}, "message": "retry 1"})
    assert dump_status(shrunk, written) == shrunk.dump()
    assert dump_status(old, (None, {})) == old.dump()


def test_stale_and_echoed_events_are_not_news() -> None:
    bodies = Bodies()
    key = ("ns", "r")
    assert bodies.store(key, {"metadata": {"resourceVersion": "5"}}) is False  # first sight
    assert bodies.store(key, {"metadata": {"resourceVersion": "5"}}) is True  # our own write's echo
    assert bodies.store(key, {"metadata": {"resourceVersion": "4"}}) is True  # a late event
    assert bodies.get(key) == {"metadata": {"resourceVersion": "5"}}
    assert bodies.store(key, {"metadata": {"resourceVersion": "6"}}) is False
    assert bodies.get(key) == {"metadata": {"resourceVersion": "6"}}
