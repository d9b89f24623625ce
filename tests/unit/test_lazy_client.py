"""k8s/lazy_client.py: kubernetes_asyncio's ~800 models are imported when used, not at start-up,
and everything the operator and Kopf use of the package still works."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.conftest import ROOT


def run(code: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT / "operator"), "PATH": "/usr/bin:/bin"},
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_kopf_and_our_client_load_only_the_models_they_use() -> None:
    out = run(
        """
        import asyncio, json, sys
        from scriptrun.k8s import lazy_client
        assert lazy_client.install()
        assert not lazy_client.install()  # once
        import kopf
        import scriptrun.handlers
        from kubernetes_asyncio import client
        models = [m for m in sys.modules if m.startswith("kubernetes_asyncio.client.models.")]
        print("models at start", len(models))

        class Response:
            owner = {"apiVersion": "scriptrun.dev/v1alpha1", "kind": "ScriptRun", "name": "r", "uid": "u"}
            data = json.dumps({"metadata": {"name": "p", "ownerReferences": [owner]},
                               "spec": {"containers": [{"name": "c", "image": "i"}]}})

        async def main():
            api = client.ApiClient()
            pod = api.deserialize(Response(), "V1Pod")
            assert isinstance(pod, client.V1Pod) and pod.metadata.owner_references[0].kind == "ScriptRun"
            assert pod.spec.containers[0].image == "i"
            assert client.CoreV1Api(api).api_client is api and client.CustomObjectsApi
            assert client.models.V1Pod is client.V1Pod and client.rest.RESTClientObject
            assert client.__version__ and "V1Pod" in client.__all__
            await api.close()

        asyncio.run(main())
        try:
            client.NoSuchThing
        except AttributeError as err:
            print("error", err)
        """
    )
    loaded = int(out.split("models at start ")[1].split()[0])
    assert loaded < 10, out  # the real package loads ~800
    assert "has no attribute 'NoSuchThing'" in out


def test_nothing_changes_once_kubernetes_asyncio_is_imported() -> None:
    out = run(
        """
        import kubernetes_asyncio.client
        from scriptrun.k8s import lazy_client
        print(lazy_client.install())
        """
    )
    assert out.strip() == "False"
