"""Any kubeconfig: Kopf's watches and our client's writes log in with one set of credentials, here a
kubeconfig whose user has nothing but an exec plugin (as EKS, GKE and AKS kubeconfigs do)."""

from __future__ import annotations

import re
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.support.controlplane import ControlPlane
from tests.support.kube import Kube, scriptrun
from tests.support.operator import OperatorProcess

EXIT = "test.scriptrun.dev/exit-code"
SKEW = 300  # kubernetes_asyncio counts a token as expired five minutes before its expirationTimestamp
REFUSALS = re.compile(r"Traceback|Unauthorized|Forbidden|(?<![,.\d])40[13]\b")

PLUGIN = """#!{python}
import datetime, json, os
with open(os.environ["COUNTER"], "a") as f:
    f.write("ran\\n")
status = {{"token": os.environ["TOKEN"]}}
if os.environ.get("EXPIRES_IN"):
    at = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=int(os.environ["EXPIRES_IN"]))
    status["expirationTimestamp"] = at.strftime("%Y-%m-%dT%H:%M:%SZ")
print(json.dumps({{"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential", "status": status}}))
"""


def exec_kubeconfig(cluster: ControlPlane, workdir: Path, expires_in: int | None) -> Path:
    """The test cluster's kubeconfig with the client certificate replaced by an exec plugin."""
    plugin = workdir / "token-plugin.py"
    plugin.write_text(PLUGIN.format(python=sys.executable))
    plugin.chmod(0o755)
    env = [{"name": "COUNTER", "value": str(workdir / "plugin-runs")}, {"name": "TOKEN", "value": cluster.token}]
    if expires_in is not None:
        env.append({"name": "EXPIRES_IN", "value": str(expires_in)})
    config = yaml.safe_load(cluster.kubeconfig.read_text())
    config["users"] = [
        {
            "name": "admin",
            "user": {
                "exec": {
                    "apiVersion": "client.authentication.k8s.io/v1",
                    "command": str(plugin),
                    "env": env,
                    "interactiveMode": "Never",
                }
            },
        }
    ]
    path = workdir / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


def plugin_runs(workdir: Path) -> int:
    counter = workdir / "plugin-runs"
    return len(counter.read_text().splitlines()) if counter.exists() else 0


@pytest.fixture
def namespace(cluster: ControlPlane, operator: OperatorProcess) -> Iterator[str]:
    """A namespace no other operator acts on: the session one stops here (`live_operator` restarts it)."""
    operator.stop()
    ns = f"t-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", ns)
    yield ns
    cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)


@pytest.mark.parametrize(
    "expires_in",
    [
        pytest.param(None, id="token-without-expiry"),
        pytest.param(SKEW + 4, id="token-due-after-4s"),
    ],
)
def test_operator_logs_in_through_an_exec_plugin(
    cluster: ControlPlane, namespace: str, tmp_path: Path, expires_in: int | None
) -> None:
    kubeconfig = exec_kubeconfig(cluster, tmp_path, expires_in)
    op = OperatorProcess(cluster, extra_env={"KUBECONFIG": str(kubeconfig)})
    op.log = tmp_path / "operator.log"
    kube = Kube(cluster, namespace, lambda: f"--- operator log:\n{op.tail(60)}")
    try:
        op.start()
        kube.apply(scriptrun("first", {}, {EXIT: "0"}))
        kube.wait_phase("first", "Succeeded")
        if expires_in is None:
            # loaded once, at start-up, for our client and Kopf alike (Kopf's own loader would run it again)
            assert plugin_runs(tmp_path) == 1
        else:
            time.sleep(expires_in - SKEW + 1)  # the first token is due by now
            kube.apply(scriptrun("second", {}, {EXIT: "0"}))
            kube.wait_phase("second", "Succeeded")
            assert plugin_runs(tmp_path) >= 2  # the due token was renewed, not used on
        assert op.alive
    finally:
        op.stop()
    refusals = [line for line in op.log.read_text(errors="replace").splitlines() if REFUSALS.search(line)]
    assert not refusals, "\n".join(refusals)
