"""The one error policy (k8s/errors.py), through the real kubernetes_asyncio client and `Kube`, against
a local HTTP server that answers as the API server does: real-shaped Status bodies and headers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from kubernetes_asyncio import client

from scriptrun.k8s.api import ApiError, Kube
from scriptrun.k8s.errors import AlreadyExists, Conflict, Gone, KubeError, NotFound, Retry, Unavailable
from tests.support.http_server import local_server

NS = "team-a"
PODS = f"/api/v1/namespaces/{NS}/pods"
CONFIGMAPS = f"/api/v1/namespaces/{NS}/configmaps"
EVENTS = f"/api/v1/namespaces/{NS}/events"
RUNS = f"/apis/scriptrun.dev/v1alpha1/namespaces/{NS}/scriptruns"
Answer = tuple[int, dict[str, Any], dict[str, str]]


def status(code: int, reason: str, message: str, **details: Any) -> dict[str, Any]:
    """A metav1.Status as the API server writes it."""
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details:
        body["details"] = details
    return body


def failure(code: int, reason: str, message: str, headers: dict[str, str] | None = None, **details: Any) -> Answer:
    return code, status(code, reason, message, **details), headers or {}


def ok(body: dict[str, Any], code: int = 200) -> Answer:
    return code, body, {}


def run(name: str, **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "scriptrun.dev/v1alpha1",
        "kind": "ScriptRun",
        "metadata": {"name": name, "namespace": NS, "resourceVersion": "7", **meta},
        "spec": {"script": {"source": "print(1)"}},
    }


def pod(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NS}, "spec": {"containers": []}}


def configmap(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": NS}, "data": {}}


class FakeApiServer:
    """Answers each (method, path) from a script, in order; the last answer repeats."""

    def __init__(self) -> None:
        self.script: dict[tuple[str, str], list[Answer]] = {}
        self.seen: list[tuple[str, str, dict[str, str]]] = []

    def on(self, method: str, path: str, *answers: Answer) -> None:
        self.script[(method, path)] = list(answers)

    def count(self, method: str, path: str) -> int:
        return sum(1 for m, p, _ in self.seen if (m, p) == (method, path))

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append((request.method, request.path, dict(request.query)))
        answers = self.script.get((request.method, request.path))
        if not answers:
            raise AssertionError(f"unexpected request {request.method} {request.path}")
        code, body, headers = answers.pop(0) if len(answers) > 1 else answers[0]
        if request.path.endswith("/log") and code == 200:
            return web.Response(text=body["text"], status=200, headers=headers)
        return web.json_response(body, status=code, headers=headers)


@contextlib.asynccontextmanager
async def serve() -> AsyncIterator[tuple[FakeApiServer, Kube, list[float]]]:
    """The fake server, a `Kube` pointed at it, and the waits its retries asked for (not slept)."""
    fake = FakeApiServer()
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    async with local_server(("*", "/{tail:.*}", fake.handle)) as url:
        kube = Kube(client.ApiClient(client.Configuration(host=url)), retry=Retry(sleep=sleep))
        try:
            yield fake, kube, waits
        finally:
            await kube.close()


def drive(test: Callable[[FakeApiServer, Kube, list[float]], Awaitable[None]]) -> None:
    async def main() -> None:
        async with serve() as (fake, kube, waits):
            await test(fake, kube, waits)

    asyncio.run(main())


NOT_FOUND = failure(404, "NotFound", 'scriptruns.scriptrun.dev "gone" not found', name="gone", kind="scriptruns")

ABSENT: list[Any] = [
    pytest.param("GET", f"{PODS}/gone", lambda k: k.get_pod(NS, "gone"), id="get_pod"),
    pytest.param("GET", f"{CONFIGMAPS}/gone", lambda k: k.get_configmap(NS, "gone"), id="get_configmap"),
    pytest.param("GET", f"{RUNS}/gone", lambda k: k.get_custom("scriptruns", NS, "gone"), id="get_custom"),
    pytest.param("GET", f"{PODS}/gone/log", lambda k: k.pod_log(NS, "gone"), id="pod_log"),
    pytest.param(
        "PATCH", f"{RUNS}/gone/status", lambda k: k.patch_status("scriptruns", NS, "gone", {}), id="patch_status"
    ),
    pytest.param("PATCH", f"{RUNS}/gone", lambda k: k.patch_custom("scriptruns", NS, "gone", {}), id="patch_custom"),
    pytest.param("DELETE", f"{PODS}/gone", lambda k: k.delete_pod(NS, "gone"), id="delete_pod"),
    pytest.param("DELETE", PODS, lambda k: k.delete_pods(NS, "a=b"), id="delete_pods"),
    pytest.param("DELETE", f"{RUNS}/gone", lambda k: k.delete_custom("scriptruns", NS, "gone"), id="delete_custom"),
]


@pytest.mark.parametrize(("method", "path", "op"), ABSENT)
def test_404_reads_as_absent_and_is_not_retried(method: str, path: str, op: Callable[[Kube], Awaitable[Any]]) -> None:
    async def test(fake: FakeApiServer, kube: Kube, waits: list[float]) -> None:
        fake.on(method, path, NOT_FOUND)
        assert await op(kube) is None
        assert fake.count(method, path) == 1 and waits == []

    drive(test)


def test_found_objects_come_back_as_dicts() -> None:
    async def test(fake: FakeApiServer, kube: Kube, waits: list[float]) -> None:
        fake.on("GET", f"{RUNS}/r", ok(run("r")))
        fake.on("PATCH", f"{RUNS}/r/status", ok(run("r", resourceVersion="8")))
        fake.on("GET", f"{PODS}/p/log", ok({"text": "hello\n"}))
        assert (await kube.get_custom("scriptruns", NS, "r") or {})["metadata"]["resourceVersion"] == "7"
        assert (await kube.patch_status("scriptruns", NS, "r", {"phase": "Running"}) or {})["metadata"][
            "resourceVersion"
        ] == "8"
        assert await kube.pod_log(NS, "p") == "hello\n"

    drive(test)


EXISTS = failure(409, "AlreadyExists", 'scriptruns.scriptrun.dev "r" already exists', name="r", kind="scriptruns")


def test_409_already_exists_on_create_means_already_there() -> None:
    async def test(fake: FakeApiServer, kube: Kube, waits: list[float]) -> None:
        fake.on("POST", PODS, EXISTS)
        fake.on("POST", CONFIGMAPS, EXISTS)
        fake.on("POST", RUNS, EXISTS)
        assert await kube.create_pod(pod("p")) is False
        assert await kube.create_configmap(configmap("c")) is False
        assert await kube.create_custom("scriptruns", run("r")) is None
        assert await kube.create_object(NS, run("r")) is None
        assert await kube.create_object(NS, configmap("c")) is None
        assert waits == []

    drive(test)


def test_created_objects() -> None:
    async def test(fake: FakeApiServer, kube: Kube, waits: list[float]) -> None:
        fake.on("POST", PODS, ok(pod("p"), 201))
        fake.on("POST", RUNS, ok(run("r", uid="u-1"), 201))
        fake.on("POST", CONFIGMAPS, ok(configmap("c"), 201))
        assert await kube.create_pod(pod("p")) is True
        assert (await kube.create_custom("scriptruns", run("r")) or {})["metadata"]["uid"] == "u-1"
        assert (await kube.create_object(NS, configmap("c")) or {})["kind"] == "ConfigMap"

    drive(test)


def test_409_conflict_on_update_is_raised_once_not_retried() -> None:
    message = (
        'Operation cannot be fulfilled on scriptruns.scriptrun.dev "r": the object has been modified; '
        "please apply your changes to the latest version and try again"
    )

    async def test(fake: FakeApiServer, kube: Kube, waits: list[float]) -> None:
        fake.on("PATCH", f"{RUNS}/r", failure(409, "Conflict", message, name="r", kind="scriptruns"))
        with pytest.raises(Conflict) as err:
            await kube.patch_custom("scriptruns", NS, "r", {"metadata": {"resourceVersion": "3"}})
        assert isinstance(err.value, ApiError) and not isinstance(err.value, AlreadyExists)
        assert (err.value.status, err.value.reason, err.value.message) == (409, "Conflict", message)
        assert fake.count("PATCH", f"{RUNS}/r") == 1 and waits == []

    drive(test)


def test_list_follows_continue_tokens_and_410_is_gone() -> None:
    expired = failure(
        410,
        "Expired",
        "The provided continue parameter is too old to display a consistent list result. "
        "You can start a new list without the continue parameter.",
    )

    async def test(fake: FakeApiServer, kube: Kube, waits: list[float]) -> None:
        page1 = {"kind": "ScriptRunList", "metadata": {"continue": "tok-1"}, "items": [run("a")]}
        page2 = {"kind": "ScriptRunList", "metadata": {}, "items": [run("b")]}
        fake.on("GET", RUNS, ok(page1), ok(page2))
        got = await kube.list_custom("scriptruns", NS, "scriptrun.dev/workflow=w")
        assert [r["metadata"]["name"] for r in got] == ["a", "b"]
        queries = [q for _, _, q in fake.seen]
        assert queries[0] == {"labelSelector": "scriptrun.dev/workflow=w", "limit": "500"}
        assert queries[1]["continue"] == "tok-1"

        fake.on("GET", RUNS, ok(page1), expired)
        with pytest.raises(Gone) as err:
            await kube.list_custom("scriptruns", NS, "scriptrun.dev/workflow=w")
        assert err.value.status == 410 and "continue parameter is too old" in err.value.message
        assert waits == []

    drive(test)


def test_429_waits_as_told_then_succeeds() -> None:
    throttled = failure(
        429, "TooManyRequests", "Too many requests, please try again later.", {"Retry-After": "2"}, retryAfterSeconds=2
    )
    throttled_1s = failure(429, "TooManyRequests", "Too many requests, please try again later.", {"Retry-After": "1"})

    async def test(fake: FakeApiServer, kube: Kube, waits: list[float]) -> None:
        fake.on("GET", f"{RUNS}/r", throttled, throttled_1s, ok(run("r")))
        assert (await kube.get_custom("scriptruns", NS, "r") or {})["metadata"]["name"] == "r"
        assert fake.count("GET", f"{RUNS}/r") == 3
        assert waits == [2.0, 1.0]

    drive(test)


def test_429_for_good_is_raised_after_bounded_waits() -> None:
    hour = failure(429, "TooManyRequests", "Too many requests, please try again later.", {"Retry-After": "3600"})

    async def test(fake: FakeApiServer, kube: Kube, waits: list[float]) -> None:
        fake.on("POST", EVENTS, hour)  # a generateName create: 429 is repeated all the same
        fake.on("POST", RUNS, hour)
        with pytest.raises(Unavailable) as err:
            await kube.create_custom("scriptruns", run("r"))
        assert (err.value.status, err.value.reason, err.value.retry_after) == (429, "TooManyRequests", 3600.0)
        assert fake.count("POST", RUNS) == Retry().attempts == 4
        assert waits == [Retry().max_delay] * 3

    drive(test)


def test_5xx_is_retried_only_where_a_repeat_is_safe(caplog: pytest.LogCaptureFixture) -> None:
    unavailable = failure(503, "ServiceUnavailable", "the server is currently unable to handle the request")
    internal = failure(500, "InternalError", "Internal error occurred: etcdserver: request timed out")

    async def test(fake: FakeApiServer, kube: Kube, waits: list[float]) -> None:
        fake.on("GET", f"{PODS}/p", unavailable, ok(pod("p")))
        assert (await kube.get_pod(NS, "p") or {})["metadata"]["name"] == "p"
        assert waits == [0.5]

        fake.on("POST", PODS, internal, ok(pod("p"), 201))  # a fixed name: a repeat reads as AlreadyExists
        assert await kube.create_pod(pod("p")) is True
        assert waits == [0.5, 0.5]

        fake.on("POST", EVENTS, internal)  # generateName: a repeat could post the Event twice
        with caplog.at_level(logging.WARNING, logger="scriptrun.k8s.api"):
            await kube.post_event(run("r"), "Normal", "Started", "pod p")
        assert fake.count("POST", EVENTS) == 1 and waits == [0.5, 0.5]
        assert "could not post event Started on r: 500 InternalError: Internal error occurred" in caplog.text

        fake.on("POST", EVENTS, failure(503, "ServiceUnavailable", "busy", {"Retry-After": "1"}), ok({}, 201))
        await kube.post_event(run("r"), "Normal", "Started", "pod p")  # Retry-After: not processed, repeat
        assert fake.count("POST", EVENTS) == 3 and waits == [0.5, 0.5, 1.0]

    drive(test)


def test_refusals_carry_the_status_message() -> None:
    invalid = failure(
        422,
        "Invalid",
        'ScriptRun.scriptrun.dev "r" is invalid: spec.retryStrategy.limit: Invalid value: -2: '
        "spec.retryStrategy.limit in body should be greater than or equal to -1",
        name="r",
        group="scriptrun.dev",
        kind="ScriptRun",
        causes=[{"reason": "FieldValueInvalid", "field": "spec.retryStrategy.limit"}],
    )
    forbidden = failure(
        403,
        "Forbidden",
        f'pods "p" is forbidden: error looking up service account {NS}/default: serviceaccount "default" not found',
        name="p",
        kind="pods",
    )

    async def test(fake: FakeApiServer, kube: Kube, waits: list[float]) -> None:
        fake.on("POST", RUNS, invalid)
        with pytest.raises(ApiError) as err:
            await kube.create_custom("scriptruns", run("r"))
        assert (err.value.status, err.value.reason) == (422, "Invalid")
        assert "spec.retryStrategy.limit: Invalid value: -2" in err.value.message
        assert str(err.value).startswith('422 Invalid: ScriptRun.scriptrun.dev "r" is invalid')

        fake.on("POST", PODS, forbidden)  # the raw (undeserialised) create path: the same error
        with pytest.raises(ApiError) as refused:
            await kube.create_pod(pod("p"))
        assert refused.value.status == 403 and "error looking up service account" in refused.value.message
        assert not isinstance(refused.value, (NotFound, Unavailable))
        assert fake.count("POST", RUNS) == 1 and fake.count("POST", PODS) == 1 and waits == []

    drive(test)


def test_an_answer_that_is_not_a_status_keeps_its_text() -> None:
    async def test(fake: FakeApiServer, kube: Kube, waits: list[float]) -> None:
        fake.on("GET", f"{RUNS}/r", (502, {"error": "upstream connect error"}, {}))
        with pytest.raises(Unavailable) as err:
            await kube.get_custom("scriptruns", NS, "r")
        assert err.value.status == 502 and "upstream connect error" in err.value.message
        assert waits == [0.5, 1.0, 2.0]

    drive(test)


def test_no_answer_at_all_is_unavailable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    async def main() -> None:
        api = client.ApiClient(client.Configuration(host=f"http://127.0.0.1:{port}"))
        kube = Kube(api, retry=Retry(attempts=2, sleep=sleep))
        try:
            with pytest.raises(Unavailable) as err:
                await kube.get_pod(NS, "p")
        finally:
            await kube.close()
        assert err.value.status == 0 and err.value.message.startswith("cannot reach the API server:")
        assert isinstance(err.value, KubeError) and not isinstance(err.value, ApiError)

    asyncio.run(main())
    assert waits == [0.5]


def test_a_starting_api_server_s_403s_are_waited_out_a_refusal_of_the_object_is_not() -> None:
    """Right after a restart the API server answers 403 until its caches have synced: admission's
    "not yet ready", and the RBAC authorizer's denial before it has read the bindings (the chaos
    test's audit log: 44 such 403s within 200 ms of "Serving securely", none after). Both are
    retried; a 403 that names the object (PodSecurity, quota, a webhook) is a refusal of it."""
    starting = failure(403, "Forbidden", 'pods "p-a1" is forbidden: not yet ready to handle request')
    rbac = failure(
        403,
        "Forbidden",
        'pods is forbidden: User "system:serviceaccount:x:y" cannot create resource "pods" in API group "" '
        'in the namespace "ns"',
    )
    policy = failure(403, "Forbidden", 'pods "p-a1" is forbidden: violates PodSecurity "restricted:latest"')
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p-a1", "namespace": NS}}

    async def test(fake: FakeApiServer, kube: Kube, waits: list[float]) -> None:
        fake.on("POST", PODS, starting, rbac, ok(pod, 201))
        assert await kube.create_pod(pod) is True  # created, once the API server had synced
        assert fake.count("POST", PODS) == 3 and len(waits) == 2
        fake.on("POST", PODS, rbac, rbac, rbac, rbac)
        with pytest.raises(Unavailable):  # still denied after the retries: the reconcile backs off
            await kube.create_pod(pod)
        assert fake.count("POST", PODS) == 7
        fake.on("POST", PODS, policy)
        with pytest.raises(ApiError) as err:
            await kube.create_pod(pod)
        assert not isinstance(err.value, Unavailable) and err.value.status == 403
        assert fake.count("POST", PODS) == 8  # one more: a refusal is not repeated

    drive(test)


def test_pods_are_listed_in_raw_pages_and_an_expired_token_is_gone() -> None:
    """The pods' own watch lists in pages when the initial state is not streamed (controllers/pods.py):
    plain dicts, the list's resourceVersion and the next token; a 410 on a token is Gone."""
    page1 = {"metadata": {"resourceVersion": "7", "continue": "t1"}, "items": [{"metadata": {"name": "a"}}]}
    page2 = {"metadata": {"resourceVersion": "7"}, "items": [{"metadata": {"name": "b"}}]}
    expired = failure(410, "Expired", "The provided continue parameter is too old")

    async def test(fake: FakeApiServer, kube: Kube, waits: list[float]) -> None:
        fake.on("GET", PODS, ok(page1), ok(page2), expired)
        assert await kube.list_pods_page(NS, "app=x", None) == ([{"metadata": {"name": "a"}}], "7", "t1")
        assert await kube.list_pods_page(NS, "app=x", "t1") == ([{"metadata": {"name": "b"}}], "7", None)
        asked = [query for method, path, query in fake.seen if path == PODS]
        assert asked[0] == {"labelSelector": "app=x", "limit": "500"}
        assert asked[1]["continue"] == "t1"
        with pytest.raises(Gone):
            await kube.list_pods_page(NS, "app=x", "t0")
        assert waits == []

    drive(test)
