"""The pods' own watch (controllers/pods.py) against a scripted API: the index it keeps, `synced`
only after a full list, resuming from the last version, a 410 answered by a new list whose missing
pods are told as DELETED, the watch-list's initial events, errors backed off; and the line reader
every watch uses (k8s/errors.py)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import aiohttp
import pytest

from scriptrun.controllers.bodies import unpack
from scriptrun.controllers.pods import PodIndex, PodWatch
from scriptrun.k8s import errors
from scriptrun.k8s.errors import Gone, Unavailable


def pod(name: str, run: str, phase: str = "Pending", rv: int = 1, ns: str = "ns") -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": ns,
            "resourceVersion": str(rv),
            "labels": {"scriptrun.dev/attempt": "1"},
            "ownerReferences": [{"kind": "ScriptRun", "name": run, "uid": f"uid-{run}", "controller": True}],
            "managedFields": [{"manager": "kubelet"}],
        },
        "spec": {"nodeName": "n1", "containers": [{"name": "main"}]},
        "status": {"phase": phase, "podIP": "10.0.0.1"},
    }


class FakeKube:
    """Answers list pages and watches from scripts; a script entry that is an exception is raised."""

    def __init__(self, pages: list[Any], watches: list[Any]) -> None:
        self.pages, self.watches = pages, watches
        self.watch_calls: list[dict[str, Any]] = []
        self.list_calls = 0
        self.closed = 0

    async def list_pods_page(self, namespace: str | None, selector: str, token: str | None) -> Any:
        self.list_calls += 1
        page = self.pages.pop(0)
        if isinstance(page, BaseException):
            raise page
        return page

    async def watch_pods(self, namespace: str | None, selector: str, **options: Any) -> AsyncGenerator[dict[str, Any]]:
        self.watch_calls.append({"namespace": namespace, "selector": selector, **options})
        if not self.watches:
            await asyncio.Event().wait()  # nothing more scripted: a quiet, open watch
        script = self.watches.pop(0)
        try:
            if isinstance(script, BaseException):
                raise script
            for event in script:
                if isinstance(event, BaseException):
                    raise event
                yield event
                await asyncio.sleep(0)
            await asyncio.sleep(1.1)  # a watch that lasted: resumed at once
        finally:
            self.closed += 1


def run_watch(kube: FakeKube, *, initial_events: bool = False, settle: float = 0.2) -> tuple[PodIndex, list[Any]]:
    seen: list[Any] = []
    index = PodIndex()

    async def main() -> None:
        watch = PodWatch(
            kube,  # type: ignore[arg-type]
            index,
            lambda kind, body: seen.append((kind, body["metadata"]["name"])),
            namespaces=[],
            selector="app.kubernetes.io/managed-by=scriptrun",
            initial_events=initial_events,
        )
        watch.start()
        for _ in range(int(settle * 100)):
            await asyncio.sleep(0.01)
            if not kube.pages and not kube.watches:
                break
        await asyncio.sleep(settle)
        await watch.close()

    asyncio.run(main())
    return index, seen


def test_list_then_watch_keeps_small_snapshots_and_resumes_from_the_last_version() -> None:
    kube = FakeKube(
        pages=[([pod("r1-a1", "r1")], "10", "next"), ([pod("r2-a1", "r2")], "11", None)],
        watches=[
            [
                {"type": "MODIFIED", "object": pod("r1-a1", "r1", "Running", 12)},
                {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "15"}}},
            ]
        ],
    )
    index, seen = run_watch(kube, settle=1.5)
    assert seen == [(None, "r1-a1"), (None, "r2-a1"), ("MODIFIED", "r1-a1")]
    assert [call["resource_version"] for call in kube.watch_calls] == ["11", "15"]  # resumed after the bookmark
    assert index.synced.is_set()
    (snapshot,) = [unpack(v) for v in index[("ns", "r1")]]
    assert snapshot["status"] == {"phase": "Running"}  # the rest of the pod is not kept
    assert "managedFields" not in snapshot["metadata"] and snapshot["metadata"]["ownerUid"] == "uid-r1"
    assert kube.closed == len(kube.watch_calls) - 1  # every watch that ended was closed


def test_not_synced_until_the_last_page_and_a_deleted_pod_leaves_the_index() -> None:
    kube = FakeKube(
        pages=[Unavailable(503, "ServiceUnavailable", "starting"), ([pod("r1-a1", "r1")], "10", None)],
        watches=[[{"type": "DELETED", "object": pod("r1-a1", "r1", "Succeeded", 11)}]],
    )
    index, seen = run_watch(kube, settle=1.5)  # the first list failed: backed off ~1 s, listed again
    assert kube.list_calls == 2 and index.synced.is_set()
    assert seen == [(None, "r1-a1"), ("DELETED", "r1-a1")]
    assert ("ns", "r1") not in index and len(index) == 0


def test_an_expired_version_lists_again_and_tells_what_went_meanwhile() -> None:
    kube = FakeKube(
        pages=[
            ([pod("r1-a1", "r1"), pod("r2-a1", "r2")], "10", None),
            ([pod("r2-a1", "r2", "Running", 20)], "21", None),
        ],
        watches=[
            [{"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old"}}],
        ],
    )
    index, seen = run_watch(kube)
    assert seen == [(None, "r1-a1"), (None, "r2-a1"), (None, "r2-a1"), ("DELETED", "r1-a1")]
    assert ("ns", "r1") not in index and [unpack(v)["status"]["phase"] for v in index[("ns", "r2")]] == ["Running"]
    assert [call["resource_version"] for call in kube.watch_calls] == ["10", "21"]


def test_a_watch_gone_at_its_start_lists_again() -> None:
    kube = FakeKube(
        pages=[([pod("r1-a1", "r1")], "10", None), ([], "30", None)],
        watches=[Gone(410, "Expired", "too old")],
    )
    index, seen = run_watch(kube)
    assert seen == [(None, "r1-a1"), ("DELETED", "r1-a1")] and len(index) == 0


def test_the_watch_list_streams_the_initial_pods_up_to_its_bookmark() -> None:
    end = {
        "type": "BOOKMARK",
        "object": {"metadata": {"resourceVersion": "40", "annotations": {"k8s.io/initial-events-end": "true"}}},
    }
    kube = FakeKube(pages=[], watches=[[{"type": "ADDED", "object": pod("r1-a1", "r1")}, end]])
    index, seen = run_watch(kube, initial_events=True)
    assert seen == [(None, "r1-a1")] and index.synced.is_set() and kube.list_calls == 0
    first, second = kube.watch_calls
    assert first["initial_events"] is True and first["resource_version"] == ""
    assert second["resource_version"] == "40" and not second.get("initial_events")
    assert kube.closed == 1  # the watch-list was closed once its initial events were in


def test_a_watch_list_cut_before_its_bookmark_is_not_synced() -> None:
    kube = FakeKube(pages=[], watches=[[{"type": "ADDED", "object": pod("r1-a1", "r1")}]])
    index, _ = run_watch(kube, initial_events=True)
    assert not index.synced.is_set()


def test_pods_not_of_a_run_are_ignored() -> None:
    stray = pod("x", "r")
    stray["metadata"]["ownerReferences"] = []
    kube = FakeKube(pages=[([stray], "1", None)], watches=[])
    index, seen = run_watch(kube)
    assert seen == [] and len(index) == 0 and index.synced.is_set()


class Chunks:
    """What aiohttp's StreamReader gives: arbitrary chunks, then maybe a broken connection."""

    def __init__(self, chunks: list[bytes], error: BaseException | None = None) -> None:
        self.chunks, self.error = chunks, error

    async def iter_any(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk
        if self.error is not None:
            raise self.error


async def _collect(content: Chunks) -> list[bytes]:
    return [line async for line in errors.lines(content)]  # type: ignore[arg-type]


def test_lines_are_joined_across_chunks_and_may_be_long() -> None:
    big = json.dumps({"object": {"x": "y" * 300_000}}).encode()  # over aiohttp's readline limit
    data = b'{"a":1}\n' + big + b"\n\n" + b'{"b":2}'
    chunks = [data[i : i + 7000] for i in range(0, len(data), 7000)]
    assert asyncio.run(_collect(Chunks(chunks))) == [b'{"a":1}', big, b'{"b":2}']


@pytest.mark.parametrize("error", [aiohttp.ClientPayloadError("cut"), TimeoutError()])
def test_a_broken_stream_is_unavailable(error: BaseException) -> None:
    with pytest.raises(Unavailable, match="the watch stream broke"):
        asyncio.run(_collect(Chunks([b'{"a":1}\n'], error)))


@pytest.mark.parametrize("bad", ["team-*", "Team", "a_b", ""])
def test_the_operator_takes_namespace_names_not_globs(bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    """The pods' watch asks for each watched namespace by name: a Kopf-style glob is refused at once."""
    from scriptrun.cli import main

    assert main(["operator", "-n", bad]) == 2
    assert "not a namespace name" in capsys.readouterr().err
