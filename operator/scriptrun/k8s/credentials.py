"""The one loader of cluster credentials: the operator's client, Kopf's login and the CLI share it.

Two sources, everything kubernetes_asyncio understands in them (exec plugins, tokens, client
certificates, the pod's service account): the operator prefers in-cluster, the CLI the kubeconfig
($KUBECONFIG, else ~/.kube/config); the other one is used only when the preferred one is absent.

Fresh tokens (kubernetes_asyncio 36 refreshes an in-cluster token file on its own, through
`Configuration.refresh_api_key_hook`, but never re-runs an exec plugin for a long-lived ApiClient):
an exec plugin runs again when its token passes `expirationTimestamp` (less kubernetes_asyncio's
five-minute skew) or after the API server refused the token (401), like client-go. Every
Configuration copy carries the same hook and so the same token; Kopf gets it through the login handler.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.config.config_exception import ConfigException
from kubernetes_asyncio.config.incluster_config import InClusterConfigLoader
from kubernetes_asyncio.config.kube_config import EXPIRY_SKEW_PREVENTION_DELAY, KubeConfigLoader, load_kube_config

log = logging.getLogger(__name__)
Prefer = Literal["in-cluster", "kubeconfig"]
SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")


class CredentialsError(Exception):
    """No usable credentials: neither source is there, or the one that is there is broken."""


class ExecToken:
    """An exec plugin's token, shared by every Configuration copy (deepcopy returns it, not a copy)."""

    def __init__(self, loader: KubeConfigLoader) -> None:
        self.loader = loader
        self.stale = False
        self._lock = asyncio.Lock()

    def __deepcopy__(self, memo: dict[int, Any]) -> ExecToken:
        return self

    @property
    def header(self) -> str:
        return str(self.loader.token)

    @property
    def expires(self) -> dt.datetime | None:
        """When kubernetes_asyncio counts the token as expired; None if the plugin gave no expiry."""
        expiry: dt.datetime | None = getattr(self.loader, "exec_plugin_expiry", None)
        return None if expiry is None else expiry - EXPIRY_SKEW_PREVENTION_DELAY

    def due(self) -> bool:
        expires = self.expires
        return self.stale or (expires is not None and expires <= dt.datetime.now(dt.UTC))

    async def hook(self, configuration: client.Configuration) -> None:
        """`refresh_api_key_hook`: runs before every request's auth header is computed."""
        if self.due():
            async with self._lock:
                if self.due():  # not refreshed meanwhile by a concurrent request
                    log.info("running the exec plugin again: its token %s", "was refused" if self.stale else "expired")
                    if hasattr(self.loader, "exec_plugin_expiry"):
                        del self.loader.exec_plugin_expiry  # else the loader returns its cached token
                    await self.loader.load_from_exec_plugin()
                    self.stale = False
        configuration.api_key["BearerToken"] = self.header


@dataclass
class Credentials:
    configuration: client.Configuration
    namespace: str  # the context's namespace (CLI default); the pod's namespace in a cluster
    source: str  # for log lines: "in-cluster" or "kubeconfig <paths>"
    exec_token: ExecToken | None = None
    _in_cluster: InClusterConfigLoader | None = field(default=None, repr=False)

    def api_client(self) -> ApiClient:
        return ApiClient(self)

    async def header(self) -> str | None:
        """The current Authorization header value ("Bearer ..."), refreshed first if it is due."""
        value = await self.configuration.get_api_key_with_prefix("BearerToken")
        return str(value) if value else None

    @property
    def expires(self) -> dt.datetime | None:
        return self.exec_token.expires if self.exec_token else None

    def refused(self, header: str | None = None) -> None:
        """The API server answered 401 to `header` (None: to whatever was current): fetch a new token
        before the next request. A refusal of an older header than the current one changes nothing."""
        if header is not None and header != self.configuration.api_key.get("BearerToken"):
            return
        if self.exec_token is not None:
            self.exec_token.stale = True
        if self._in_cluster is not None:  # re-read the (rotated) service-account token file
            self._in_cluster.token_expires_at = dt.datetime.min


class ApiClient(client.ApiClient):
    """kubernetes_asyncio's ApiClient that tells its credentials about a 401, so the next request
    carries a new token (the refused request itself fails; the caller retries as for any error)."""

    def __init__(self, credentials: Credentials) -> None:
        super().__init__(credentials.configuration)
        self.credentials = credentials

    async def request(  # the base's signature (it returns the REST call's awaitable)
        self,
        method: Any,
        url: Any,
        query_params: Any | None = None,
        headers: dict[Any, Any] | None = None,
        post_params: dict[Any, Any] | None = None,
        body: Any | None = None,
        _preload_content: bool = True,
        _request_timeout: Any = None,
    ) -> Any:
        sent = (headers or {}).get("authorization")
        try:
            response = await super().request(
                method, url, query_params, headers, post_params, body, _preload_content, _request_timeout
            )
        except ApiException as err:
            if err.status == 401:
                self.credentials.refused(sent)
            raise
        if getattr(response, "status", None) == 401:  # _preload_content=False: no exception
            self.credentials.refused(sent)
        return response


async def load_credentials(
    prefer: Prefer,
    *,
    kubeconfig: str | None = None,
    environ: Mapping[str, str] | None = None,
    service_account: Path = SERVICE_ACCOUNT,
) -> Credentials:
    """Load once, from the preferred source if it is there, else from the other one; also installed
    as kubernetes_asyncio's default Configuration (a bare `client.ApiClient()` gets it too)."""
    env = os.environ if environ is None else environ
    paths = kubeconfig or env.get("KUBECONFIG") or "~/.kube/config"
    present = {"in-cluster": _in_cluster_present(env, service_account), "kubeconfig": _kubeconfig_present(paths)}
    order: list[Prefer] = [prefer, "kubeconfig" if prefer == "in-cluster" else "in-cluster"]
    chosen = next((source for source in order if present[source]), None)
    if chosen is None:
        raise CredentialsError(
            f"no cluster credentials: no kubeconfig at {paths} and not in a pod "
            f"(KUBERNETES_SERVICE_HOST/PORT and {service_account / 'token'})"
        )
    try:
        if chosen == "in-cluster":
            creds = _load_in_cluster(env, service_account)
        else:
            creds = await _load_kubeconfig(paths)
    except (ConfigException, OSError, KeyError, TypeError, ValueError, yaml.YAMLError) as err:
        where = "in-cluster service account" if chosen == "in-cluster" else f"kubeconfig {paths}"
        raise CredentialsError(f"cannot load the {where}: {err or type(err).__name__}") from err
    client.Configuration.set_default(creds.configuration)
    return creds


def _in_cluster_present(env: Mapping[str, str], service_account: Path) -> bool:
    has_env = bool(env.get("KUBERNETES_SERVICE_HOST") and env.get("KUBERNETES_SERVICE_PORT"))
    return has_env and (service_account / "token").is_file()


def _kubeconfig_present(paths: str) -> bool:
    return any(Path(p).expanduser().is_file() for p in paths.split(os.pathsep) if p)


def _load_in_cluster(env: Mapping[str, str], service_account: Path) -> Credentials:
    configuration = client.Configuration()
    loader = InClusterConfigLoader(
        token_filename=str(service_account / "token"),
        cert_filename=str(service_account / "ca.crt"),
        environ=dict(env),
    )
    loader.load_and_set(configuration)  # installs its own hook: re-reads the token file every minute
    ns_file = service_account / "namespace"
    namespace = ns_file.read_text().strip() if ns_file.is_file() else ""
    return Credentials(configuration, namespace or "default", "in-cluster", _in_cluster=loader)


async def _load_kubeconfig(paths: str) -> Credentials:
    configuration = client.Configuration()
    loader = await load_kube_config(config_file=paths, client_configuration=configuration)
    context = (loader.current_context or {}).get("context") or {}
    exec_token = None
    user = getattr(loader, "_user", None)
    if user is not None and "exec" in user and hasattr(loader, "token"):  # a token, not a certificate
        exec_token = ExecToken(loader)
        configuration.refresh_api_key_hook = exec_token.hook
    return Credentials(configuration, context.get("namespace") or "default", f"kubeconfig {paths}", exec_token)
