"""No secret value ever reaches what the operator writes: a planted Secret, used by a run through
`env[].valueFrom.secretKeyRef` and `envFrom[].secretRef` (a retry and a failure on the way), does not
appear in the run's status, its Events, its pods' specs or the operator's log. The operator never
reads Secrets (its ClusterRole has no rule for them): the pods reference them by name."""

from __future__ import annotations

import base64
import json

from tests.support.kube import Kube, scriptrun
from tests.support.operator import OperatorProcess

EXIT = "test.scriptrun.dev/exit-code"
PLANTED = "s3cr3t-planted-7f2c9d"


def test_a_planted_secret_never_appears_in_what_the_operator_writes(kube: Kube, live_operator: OperatorProcess) -> None:
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "creds"},
        "data": {"token": base64.b64encode(PLANTED.encode()).decode()},
    }
    kube.apply(secret)
    spec = {
        "env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}}],
        "envFrom": [{"secretRef": {"name": "creds"}}],
        "retryStrategy": {"limit": 1, "backoff": {"durationSeconds": 0}},
    }
    kube.apply(scriptrun("uses-secret", spec, {EXIT: "3"}))
    status = kube.wait_phase("uses-secret", "Failed")
    assert len(status["attempts"]) == 2
    written = {
        "status": json.dumps(status),
        "events": json.dumps(kube.events("uses-secret")),
        "pods": json.dumps([kube.get("pod", f"uses-secret-a{n}") for n in (1, 2)]),
        "operator log": live_operator.tail(100_000),
    }
    leaked = [where for where, text in written.items() if PLANTED in text]
    assert leaked == [], leaked
    pod = kube.get("pod", "uses-secret-a1")
    assert pod is not None
    (main,) = pod["spec"]["containers"]
    assert {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}} in main["env"]
