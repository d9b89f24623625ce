"""Bad input through the real API server: every manifest of the hostile corpus (tests/unit/hostile/
and the large cases of tests/unit/hostile_cases.py) sent with `kubectl create -f -`, as a user
would, into one namespace, the operator running.

EXPECTED holds one line per case (a corpus file without one fails the test):

    refused: TEXT    kubectl exits non-zero and says TEXT: the field the API server's schema refused,
                     or what kubectl's own YAML decoding refused
    condition: R     accepted (the schema cannot say it; only the operator sees it): the object ends
                     Failed, its Failed condition's reason R, and stays so (no hot loop)
    accepted: R      nothing wrong for a cluster (only for the local backend: a file over 4 MiB of
                     comments, a suspended workflow, a tag kubectl resolves): a condition with reason R

A file of several documents can have two ("refused: ... | condition: ..."): kubectl creates what it
can. Each case's objects are renamed after it (`name: hostile` -> the case's name) to share the
namespace. Then, all together: no operator traceback or error, no failed reconcile, and the failed
objects' resourceVersions and the reconcile count stay put for a few seconds.
"""

from __future__ import annotations

import re
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.support.kube import Kube
from tests.support.operator import OperatorProcess
from tests.unit.hostile_cases import GENERATED, corpus_files, many_bad_args

INVALID = "condition: InvalidWorkflow"
RUNS = "accepted: AttemptStarted"  # a valid ScriptRun: its pod started (kwok keeps it running)
EXPECTED = {
    "absurd-backoff-cap": "refused: spec.retryStrategy.backoff.maxDurationSeconds: Invalid value: 1e+300",
    "absurd-matrix-cap": "refused: spec.tasks[0].matrix.maxCombinations: Invalid value: 1000000",
    "absurd-retry-limit": "refused: spec.retryStrategy.limit: Invalid value: 1000000",
    "absurd-timeout": "refused: spec.timeoutSeconds: Invalid value: 100000000000000",
    # kubectl's YAML decoding expands the aliases, 120 deep: the first list lands in a string field
    "alias-nesting": "refused: Go struct field ObjectMeta.metadata.annotations of type string",
    "argo-api-version": 'refused: no matches for kind "Workflow" in version "argoproj.io/v1alpha1"',
    "bad-budget": "refused: spec.budget.amount in body should match",
    "bad-enum": 'refused: spec.retryStrategy.retryPolicy: Unsupported value: "Sometimes"',
    # the pod's own validation is the authority on environment variable names (it changed in
    # Kubernetes 1.32: printable ASCII but '='): the operator fails the run with its words
    "bad-env-name": "condition: PodRejected",
    "bad-expression": INVALID,
    "bad-metadata-name": 'refused: metadata.name: Invalid value: "../../tmp/x"',
    "bad-namespace": 'refused: the namespace from the provided object "Not A Namespace" does not match',
    "bad-parameter-name": "refused: spec.arguments.parameters[0].name in body should match",
    "bad-quantity": "refused: spec.resources.limits.memory in body should match",
    "bad-task-name": "refused: spec.tasks[0].name in body should match",
    "billion-laughs": "refused: yaml: document contains excessive aliasing",
    "binary-tag": RUNS,  # kubectl decodes !!binary into the string it encodes
    "boolean-for-string": 'refused: spec.env[0].value in body must be of type string: "boolean"',
    "complex-key": "refused: yaml: invalid map key",
    "configmap-number-data": (
        'refused: ConfigMap in version "v1" cannot be handled as a ConfigMap: json: cannot unmarshal number'
        " | condition: ConfigMapNotFound"
    ),
    "configmap-twice": 'refused: configmaps "configmap-twice-code" already exists | ' + RUNS,
    "configmap-without-name": "refused: metadata.name: Required value | condition: ConfigMapNotFound",
    "configmap-wrong-api-version": (
        'refused: no matches for kind "ConfigMap" in version "v2" | condition: ConfigMapNotFound'
    ),
    "control-character": "refused: yaml: control characters are not allowed",
    "custom-tag": RUNS,  # kubectl drops an unknown tag: `!secret password` is the string "password"
    "cycle": INVALID,
    "cycle-through-depends": INVALID,
    "deep-block-nesting": "refused: [apiVersion not set, kind not set]",
    "deep-expression": INVALID,
    "deep-nesting": "refused: no objects passed to create",
    "dependencies-and-depends": 'refused: spec.tasks[1]: Invalid value: "object": use either dependencies or depends',
    "depends-names-no-result": INVALID,
    "depends-on-exit-handler": INVALID,
    "duplicate-key": RUNS,  # kubectl's YAML decoding keeps the last of the two timeoutSeconds
    "duplicate-task-names": 'refused: spec.tasks[1]: Duplicate value: {"name":"a"}',
    "empty-env-name": "refused: spec.env[0].name in body should be at least 1 chars long",
    "empty-file": "refused: yaml: did not find expected node content",
    "empty-tasks": "refused: spec.tasks in body should have at least 1 items",
    "exit-code-zero-is-failure": (
        'refused: spec.retryStrategy.onExitCodes[0].values: Invalid value: "object": exit code 0 is success'
    ),
    "exit-handler-name-collision": 'refused: spec.onExit: Invalid value: "object": onExit task names must differ',
    "fractional-integer": "refused: spec.timeoutSeconds in body must be of type integer",
    "huge-configmap": (
        'refused: The ConfigMap "huge-configmap-code" is invalid: []: Too long: may not be more than 1048576 bytes'
        " | condition: ConfigMapNotFound"
    ),
    "huge-source": "refused: spec.script.source: Too long: may not be more than 262144 bytes",
    "infinite-number": "refused: json: unsupported value: +Inf",
    "int64-overflow": "refused: spec.ttlSecondsAfterFinished in body must be of type integer",
    "labels-not-strings": "refused: Go struct field ObjectMeta.metadata.labels of type string",
    "latin1": RUNS,  # the one byte that is not UTF-8 is in a comment
    "list-document": "refused: invalid object to validate",
    "lone-surrogate": "refused: yaml: line 9: found invalid Unicode character escape code",
    "long-cycle": INVALID,
    "long-expression": "refused: spec.tasks[1].when: Too long: may not be more than 4096 bytes",
    "many-bad-args": 'refused: spec.args[0]: Invalid value: "integer": spec.args[0] in body must be of type string',
    "matrix-duplicate-params": "refused: spec.tasks[0].matrix.params[1].values[0] in body must be of type string",
    "matrix-explosion": "refused: spec.tasks[0].matrix.params[0].values[1] in body must be of type string",
    "metadata-null": "refused: metadata.name: Required value: name or generateName is required",
    "missing-api-version": "refused: apiVersion not set",
    "missing-dependency": INVALID,
    "missing-kind": "refused: kind not set",
    "monitor-interval-zero": 'refused: spec.monitor.intervalSeconds: Invalid value: "number": must be at least 0.1',
    "nan": "refused: json: unsupported value: NaN",
    "negative-parallelism": "refused: spec.parallelism: Invalid value: -5",
    "negative-retry-limit": "refused: spec.retryStrategy.limit: Invalid value: -1",
    "node-explosion": INVALID,
    # kubectl's YAML decoding silently replaces the byte 0xff with U+FFFD: a valid string
    "not-utf8": RUNS,
    "nul-character": "refused: spec.args[0] in body should match '^[^\\x00]*$'",
    "output-path-escapes": INVALID,
    "parameter-without-value": INVALID,
    "placeholder-in-depends": INVALID,
    "python-tag": 'refused: spec.script.source in body must be of type string: "array"',
    "recursive-alias": "refused: yaml: anchor 'self' value contains itself",
    "scalar-document": "refused: invalid object to validate",
    "script-empty": 'refused: spec.script: Invalid value: "object": exactly one of script.source',
    "script-null": "refused: spec.script: Required value",
    "secret-document": RUNS,  # a Secret is a fine thing to create in a cluster
    "self-dependency": INVALID,
    "set-tag": 'refused: strict decoding error: unknown field "spec.args.a"',
    "spec-missing": "refused: spec: Required value",
    "spec-null": "refused: spec: Required value",
    "string-for-integer": "refused: spec.retryStrategy.limit in body must be of type integer",
    "suspended-workflow": "accepted: Suspended",  # resumed with `scriptrun resume` (no one does locally)
    "tab-indent": "refused: yaml: line 7: found character that cannot start any token",
    "tasks-null": "refused: spec.tasks: Required value",
    "too-large-file": RUNS,  # its 5 MiB are a comment: the object is small
    "too-many-tasks": "refused: spec.tasks: Too many: 2001: must have at most 2000 items",
    "two-objects": 'refused: scriptruns.scriptrun.dev "two-objects" already exists | ' + RUNS,
    "two-script-sources": 'refused: spec.script: Invalid value: "object": exactly one of script.source',
    "undefined-parameter": INVALID,
    "unknown-field": 'refused: strict decoding error: unknown field "spec.imagee"',
    "unknown-nested-field": 'refused: strict decoding error: unknown field "spec.retryStrategy.backof"',
    "unknown-task-field": 'refused: strict decoding error: unknown field "spec.tasks[0].dependsOn"',
    "unknown-top-level-field": 'refused: strict decoding error: unknown field "specs"',
    "wide-aliases": "refused: yaml: document contains excessive aliasing",
    "wrong-api-version": 'refused: no matches for kind "ScriptRun" in version "scriptrun.dev/v1"',
    "wrong-kind": 'refused: The Pod "wrong-kind" is invalid: spec.containers: Required value',
    "yaml-syntax": "refused: yaml: line 7: did not find expected ',' or ']'",
    "zero-timeout": "refused: spec.timeoutSeconds: Invalid value: 0",
}
# 100,000 mistyped arguments: the API server's schema validation is quadratic in its number of
# errors (measured, v1.34: 1,000 take 0.3 s, 10,000 take 9 s, 30,000 run past its 34 s request
# timeout, the answer a Timeout naming no field); a maxItems bound does not help, every item is
# still checked. Here 1,000 of them, refused as quickly as one.
BUILDERS = {name: build for name, (build, _) in GENERATED.items()} | {"many-bad-args": partial(many_bad_args, 1000)}
QUIET_SECONDS = 3.0


@dataclass(frozen=True)
class Expectation:
    refused: str | None  # what kubectl says
    condition: str | None  # the Failed condition's reason the object ends with
    accepted: str | None  # a reason among the object's conditions


def parse(line: str) -> Expectation:
    parts = dict(part.split(": ", 1) for part in line.split(" | "))
    assert set(parts) <= {"refused", "condition", "accepted"}, line
    return Expectation(parts.get("refused"), parts.get("condition"), parts.get("accepted"))


def cases() -> dict[str, bytes]:
    found = {path.stem: path.read_bytes() for path in corpus_files()}
    return found | {name: build() for name, build in BUILDERS.items()}


def renamed(name: str, data: bytes) -> bytes:
    """The case's objects named after it: `name: hostile` -> NAME, `name: code` -> NAME-code."""
    return re.sub(
        rb"(?<=name: )(hostile|code)\b", lambda m: name.encode() + (b"-code" if m[1] == b"code" else b""), data
    )


def create(kube: Kube, item: tuple[str, bytes]) -> tuple[str, subprocess.CompletedProcess[bytes]]:
    name, data = item
    cluster = kube.cluster
    proc = subprocess.run(
        [
            cluster.binary("kubectl"),
            f"--kubeconfig={cluster.kubeconfig}",
            f"--cache-dir={cluster.workdir / 'kubectl-cache'}",
            "-n",
            kube.ns,
            "create",
            "-f",
            "-",
        ],
        input=renamed(name, data),
        capture_output=True,
        timeout=60,
    )
    return name, proc


def objects(kube: Kube) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for kind in ("scriptruns", "workflows") for o in kube.list(kind)}


def unmet(expect: Expectation, obj: dict[str, Any] | None) -> str | None:
    """Why `obj` is not (yet) what `expect` says it ends as; None once it is."""
    if obj is None:
        return "not created"
    status = obj.get("status") or {}
    reasons = {c["type"]: c["reason"] for c in status.get("conditions") or []}
    if expect.condition is not None and (status.get("phase") != "Failed" or reasons.get("Failed") != expect.condition):
        return f"phase {status.get('phase')}, conditions {reasons}"
    if expect.accepted is not None and expect.accepted not in reasons.values():
        return f"phase {status.get('phase')}, conditions {reasons}"
    return None


def reconciles(op: OperatorProcess) -> dict[str, float]:
    """scriptrun_reconciles_total by outcome (ok, error), over both kinds."""
    total: dict[str, float] = {"ok": 0.0, "error": 0.0}
    for family in text_string_to_metric_families(op.scrape()):
        for sample in family.samples:
            if sample.name == "scriptrun_reconciles_total":
                total[sample.labels["outcome"]] += sample.value
    return total


def test_every_hostile_manifest_through_the_api_server(kube: Kube, live_operator: OperatorProcess) -> None:
    began = time.monotonic()
    sent = cases()
    assert set(EXPECTED) == set(sent), (
        f"no expectation for {sorted(set(sent) - set(EXPECTED))}; no case for {sorted(set(EXPECTED) - set(sent))}"
    )
    expected = {name: parse(line) for name, line in EXPECTED.items()}
    log_start = live_operator.log.stat().st_size
    errors_before = reconciles(live_operator)["error"]

    with ThreadPoolExecutor(4) as pool:
        results = dict(pool.map(partial(create, kube), sent.items()))

    wrong = []
    for name, proc in sorted(results.items()):
        said = proc.stderr.decode(errors="replace")
        refused = expected[name].refused
        if refused is None and proc.returncode != 0:
            wrong.append(f"{name}: refused: {said}")
        elif refused is not None and (proc.returncode == 0 or refused not in said):
            wrong.append(f"{name}: exit {proc.returncode}, expected {refused!r} in: {said or proc.stdout.decode()}")
        elif "panic" in said or "Traceback" in said:
            wrong.append(f"{name}: {said}")
    assert not wrong, "\n".join(wrong)
    sending = time.monotonic() - began

    left = {name: e for name, e in expected.items() if e.condition or e.accepted}
    gone = [name for name, e in expected.items() if name not in left]

    def settled() -> dict[str, dict[str, Any]] | None:
        found = objects(kube)
        return found if all(unmet(e, found.get(name)) is None for name, e in left.items()) else None

    try:
        found = kube.wait("the accepted cases to settle", settled, timeout=60, interval=0.5)
    except AssertionError:
        found = objects(kube)
        raise AssertionError(
            "\n".join(f"{name}: {why}" for name, e in sorted(left.items()) if (why := unmet(e, found.get(name))))
        ) from None
    left_behind = [name for name in gone if name in found]
    assert not left_behind, f"refused, yet an object was created: {left_behind}"

    # then the failed objects stay put: no status rewritten, no reconcile loop, nothing logged
    failed = {name: found[name]["metadata"]["resourceVersion"] for name, e in left.items() if e.condition}
    before, log_size = reconciles(live_operator), live_operator.log.stat().st_size
    time.sleep(QUIET_SECONDS)
    after, now = reconciles(live_operator), objects(kube)
    moved = [name for name, version in failed.items() if now[name]["metadata"]["resourceVersion"] != version]
    assert not moved, f"status rewritten while nothing happened: {moved}"
    quiet = after["ok"] - before["ok"]
    assert quiet <= len(found), f"{quiet} reconciles of {len(found)} settled objects in {QUIET_SECONDS}s"
    assert after["error"] == errors_before, "a reconcile failed"
    with live_operator.log.open("rb") as handle:
        handle.seek(log_start)
        log = handle.read()
    text = log.decode(errors="replace")
    assert "Traceback" not in text and " ERROR " not in text, text[-5000:]
    assert len(log) == log_size - log_start, f"the operator kept logging: {log[log_size - log_start :]!r}"
    assert live_operator.alive

    count = {
        kind: sum(1 for e in expected.values() if getattr(e, kind)) for kind in ("refused", "condition", "accepted")
    }
    partly = sum(1 for e in expected.values() if e.refused and (e.condition or e.accepted))
    print(
        f"\n{len(sent)} hostile cases: {count['refused']} refused ({partly} of them partly: kubectl created the "
        f"rest of the file), {count['condition']} ended Failed with a reason, {count['accepted']} valid in a "
        f"cluster; sent in {sending:.1f}s, all settled in {time.monotonic() - began:.1f}s, then {quiet:.0f} "
        f"reconciles in {QUIET_SECONDS:.0f}s"
    )
