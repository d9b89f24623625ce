"""The one credential loader (k8s/credentials.py): which source wins, and exec-plugin tokens kept fresh."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from scriptrun.k8s.credentials import CredentialsError, load_credentials
from tests.support.http_server import local_server

PLUGIN = """#!{python}
import datetime, json, os, sys
counter = os.environ["COUNTER"]
with open(counter, "a") as f:
    f.write("run\\n")
n = len(open(counter).read().splitlines())
status = {{"token": f"tok-{{n}}"}}
if os.environ.get("EXPIRES_IN"):
    at = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=int(os.environ["EXPIRES_IN"]))
    status["expirationTimestamp"] = at.strftime("%Y-%m-%dT%H:%M:%SZ")
print(json.dumps({{"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential", "status": status}}))
"""


@pytest.fixture(autouse=True)
def default_configuration() -> Iterator[None]:
    saved = client.Configuration._default
    yield
    client.Configuration._default = saved


def kubeconfig(tmp_path: Path, user: dict[str, Any], server: str = "https://127.0.0.1:6443") -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "ctx",
        "clusters": [{"name": "c", "cluster": {"server": server, "insecure-skip-tls-verify": True}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u", "namespace": "team-a"}}],
    }
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


def exec_user(tmp_path: Path, expires_in: int | None) -> dict[str, Any]:
    plugin = tmp_path / "plugin.py"
    plugin.write_text(PLUGIN.format(python=sys.executable))
    plugin.chmod(0o755)
    env = [{"name": "COUNTER", "value": str(tmp_path / "runs")}]
    if expires_in is not None:
        env.append({"name": "EXPIRES_IN", "value": str(expires_in)})
    return {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1",
            "command": str(plugin),
            "env": env,
            "interactiveMode": "Never",
        }
    }


def runs(tmp_path: Path) -> int:
    return len((tmp_path / "runs").read_text().splitlines())


def service_account(tmp_path: Path) -> Path:
    sa = tmp_path / "sa"
    sa.mkdir()
    (sa / "token").write_text("sa-token")
    (sa / "ca.crt").write_text("not checked until a connection is made")
    (sa / "namespace").write_text("scriptrun-system")
    return sa


POD_ENV = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443"}


@pytest.mark.parametrize(
    ("prefer", "env", "source", "namespace", "header"),
    [
        pytest.param("in-cluster", POD_ENV, "in-cluster", "scriptrun-system", "Bearer sa-token", id="operator-in-pod"),
        pytest.param("in-cluster", {}, "kubeconfig", "team-a", "Bearer static", id="operator-outside-pod"),
        pytest.param("kubeconfig", POD_ENV, "kubeconfig", "team-a", "Bearer static", id="cli-in-pod"),
    ],
)
def test_source_preference(
    tmp_path: Path, prefer: Any, env: dict[str, str], source: str, namespace: str, header: str
) -> None:
    path = kubeconfig(tmp_path, {"token": "static"})

    async def main() -> None:
        creds = await load_credentials(
            prefer, kubeconfig=str(path), environ=env, service_account=service_account(tmp_path)
        )
        assert creds.source.startswith(source)
        assert creds.namespace == namespace
        assert await creds.header() == header
        if source == "in-cluster":
            assert creds.configuration.host == "https://10.0.0.1:443"

    asyncio.run(main())


def test_cli_falls_back_to_in_cluster_without_a_kubeconfig(tmp_path: Path) -> None:
    async def main() -> None:
        creds = await load_credentials(
            "kubeconfig",
            kubeconfig=str(tmp_path / "absent"),
            environ=POD_ENV,
            service_account=service_account(tmp_path),
        )
        assert (creds.source, creds.namespace) == ("in-cluster", "scriptrun-system")

    asyncio.run(main())


def test_no_source_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CredentialsError, match="no cluster credentials"):
        asyncio.run(load_credentials("in-cluster", kubeconfig=str(tmp_path / "absent"), environ={}))


def test_a_broken_exec_plugin_is_reported_not_skipped(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path, {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": "false"}})
    with pytest.raises(CredentialsError, match="exec: process returned 1"):
        asyncio.run(load_credentials("kubeconfig", kubeconfig=str(path), environ={}))


def test_exec_token_is_renewed_when_it_expires(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path, exec_user(tmp_path, expires_in=0))  # inside the 5-minute skew: due at once

    async def main() -> None:
        creds = await load_credentials("kubeconfig", kubeconfig=str(path), environ={})
        assert runs(tmp_path) == 1
        copy = client.Configuration.get_default_copy()  # what a bare client.ApiClient() gets
        assert await copy.get_api_key_with_prefix("BearerToken") == "Bearer tok-2"
        assert await creds.header() == "Bearer tok-3"
        assert creds.expires is not None

    asyncio.run(main())


def test_exec_token_is_kept_until_expiry_or_refusal(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path, exec_user(tmp_path, expires_in=3600))

    async def main() -> None:
        creds = await load_credentials("kubeconfig", kubeconfig=str(path), environ={})
        assert [await creds.header() for _ in range(3)] == ["Bearer tok-1"] * 3
        creds.refused("Bearer some-older-token")  # a late 401 for a token already replaced
        assert await creds.header() == "Bearer tok-1"
        creds.refused("Bearer tok-1")
        assert await creds.header() == "Bearer tok-2"
        assert runs(tmp_path) == 2

    asyncio.run(main())


def test_a_401_makes_the_client_fetch_a_new_token(tmp_path: Path) -> None:
    """Without an expiry (some plugins give none) the token is kept until the server refuses it;
    both ways a 401 reaches the caller count: an exception, and a raw response (watches, raw creates)."""
    seen: list[str] = []
    info = {
        "major": "1",
        "minor": "34",
        "gitVersion": "v1.34.0",
        "gitCommit": "x",
        "gitTreeState": "clean",
        "buildDate": "2025-01-01T00:00:00Z",
        "goVersion": "go1.24",
        "compiler": "gc",
        "platform": "linux/amd64",
    }

    async def version(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization", ""))
        if request.headers.get("Authorization") != "Bearer tok-3":
            return web.json_response({"kind": "Status", "code": 401, "reason": "Unauthorized"}, status=401)
        return web.json_response(info)

    async def main() -> None:
        async with local_server(("GET", "/version/", version)) as url:
            path = kubeconfig(tmp_path, exec_user(tmp_path, expires_in=None), server=url)
            creds = await load_credentials("kubeconfig", kubeconfig=str(path), environ={})
            api = creds.api_client()
            try:
                with pytest.raises(ApiException) as err:
                    await client.VersionApi(api).get_code()
                assert err.value.status == 401
                raw = await client.VersionApi(api).get_code(_preload_content=False)
                assert raw.status == 401
                raw.release()
                got = await client.VersionApi(api).get_code()
                assert got.git_version == "v1.34.0"
            finally:
                await api.close()
        assert seen == ["Bearer tok-1", "Bearer tok-2", "Bearer tok-3"]
        assert runs(tmp_path) == 3

    asyncio.run(main())


def test_kopf_logs_in_with_the_same_token_and_renews_it_on_re_login(tmp_path: Path) -> None:
    import kopf

    from scriptrun.handlers.setup import login

    path = kubeconfig(tmp_path, exec_user(tmp_path, expires_in=3600))

    async def main() -> None:
        creds = await load_credentials("kubeconfig", kubeconfig=str(path), environ={})
        memo, settings = kopf.Memo(credentials=creds), kopf.OperatorSettings()
        first = await login(memo=memo, settings=settings)
        assert (first.server, first.scheme, first.token, first.insecure) == (
            "https://127.0.0.1:6443",
            "Bearer",
            "tok-1",
            True,
        )
        assert first.expiration == creds.expires and first.expiration is not None
        again = await login(memo=memo, settings=settings)  # Kopf logs in again after a 401 (or at expiry)
        assert again.token == "tok-2"
        assert await creds.header() == "Bearer tok-2"  # our client follows
        creds.refused("Bearer tok-2")  # our client's own 401 renews first ...
        assert await creds.header() == "Bearer tok-3"
        third = await login(memo=memo, settings=settings)  # ... and Kopf's re-login takes that token
        assert third.token == "tok-3"
        assert runs(tmp_path) == 3

    asyncio.run(main())
