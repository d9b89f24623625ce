"""ScriptRun -> Pod and ConfigMap, as plain dicts. Pure: everything comes in through PodInputs."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from scriptrun import DEFAULT_IMAGE, DEFAULT_MONITOR_IMAGE
from scriptrun.build import names
from scriptrun.engine.gates import before_gates, inputs_of
from scriptrun.engine.observe import MAIN_CONTAINER, MONITOR_CONTAINER
from scriptrun.model.contract import (
    ENV_GATES,
    ENV_TRACEPARENT,
    GATE_CONTAINER,
    LAUNCHER_FILE,
    OSV_DIR,
    OUTPUTS_DIR,
    PID_FILE,
    RUN_DIR,
    SCRIPT_DIR,
    SCRIPT_KEY,
    TERMINATION_LOG,
    monitor_env,
    script_env,
)
from scriptrun.model.scriptrun import MonitorSpec, RunTemplate

# Inline scripts up to this size (UTF-8 bytes) travel in the pod itself, as an annotation the kubelet
# writes into the script volume (downward API): no ConfigMap per run, one API write less a task.
# Larger ones (up to the CRD's 256 KiB) still get an owned ConfigMap: annotations share a 256 KiB
# budget, and every watch event of the pod carries them.
IN_POD_SCRIPT_LIMIT = 32 * 1024
RUN_VOLUME = "scriptrun-run"
OUTPUTS_VOLUME = "scriptrun-outputs"
MONITOR_RESOURCES = {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "64Mi"}}
GATE_RESOURCES = {"requests": {"cpu": "100m", "memory": "96Mi"}, "limits": {"memory": "512Mi"}}
OSV_VOLUME = "scriptrun-osv"


class RunRef(names.OwnerRef):
    """The owning ScriptRun."""

    KIND = "ScriptRun"


@dataclass(frozen=True)
class PodInputs:
    run: RunRef
    spec: RunTemplate
    attempt: int
    default_image: str = DEFAULT_IMAGE
    monitor_image: str = DEFAULT_MONITOR_IMAGE  # an operator setting: the run's image may lack scriptrun
    monitor_pull_policy: str | None = None
    extra_labels: tuple[tuple[str, str], ...] = ()
    traceparent: str | None = None  # tracing on: the attempt span's, for both containers (TRACEPARENT)
    gate_image: str = DEFAULT_IMAGE  # spec.gates.before runs in scriptrun's runner image, whatever the run's


def script_path(spec: RunTemplate) -> str:
    key = spec.script.config_map_ref.key if spec.script.config_map_ref else SCRIPT_KEY
    return f"{SCRIPT_DIR}/{key}"


def base_labels(run: RunRef) -> dict[str, str]:
    return {names.LABEL_MANAGED_BY: names.MANAGED_BY, names.LABEL_SCRIPTRUN: names.label_value(run.name)}


def script_in_pod(spec: RunTemplate) -> bool:
    """An inline script small enough to travel in the pod's annotations."""
    source = spec.script.source
    return source is not None and len(source.encode()) <= IN_POD_SCRIPT_LIMIT


def build_script_configmap(run: RunRef, spec: RunTemplate) -> dict[str, Any] | None:
    """The owned ConfigMap that delivers a large inline script; None when the script is not inline
    or travels in the pod."""
    if spec.script.source is None or script_in_pod(spec):
        return None
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": names.script_configmap_name(run.name),
            "namespace": run.namespace,
            "labels": base_labels(run),
            "ownerReferences": [run.owner_reference()],
        },
        "data": {SCRIPT_KEY: spec.script.source},
    }


LAUNCHER = f"{RUN_DIR}/{LAUNCHER_FILE}"


def shell_launch(run_dir: str = RUN_DIR) -> str:
    """For `command:` runs no Python is assumed: a POSIX shell publishes its PID, then execs."""
    tmp, final = f"{run_dir}/{PID_FILE}.tmp", f"{run_dir}/{PID_FILE}"
    return f'printf \'{{"pid": %d}}\' $$ > {tmp} && mv {tmp} {final} && exec "$@"'


def main_command(spec: RunTemplate, monitored: bool) -> list[str]:
    """The main container's command; with the monitor, wrapped so it can find the script's PID."""
    if spec.script.command:
        command = list(spec.script.command)
        return ["sh", "-c", shell_launch(), "scriptrun-launch", *command] if monitored else command
    # python3, not python: a plain Debian image has only python3 (the python:3.x images have both)
    command = ["python3", script_path(spec)]
    return ["python3", LAUNCHER, RUN_DIR, "--", *command] if monitored else command


def _trace_env(inputs: PodInputs) -> list[dict[str, Any]]:
    return [{"name": ENV_TRACEPARENT, "value": inputs.traceparent}] if inputs.traceparent else []


def _main_container(inputs: PodInputs, image: str, monitored: bool) -> dict[str, Any]:
    spec = inputs.spec
    command = main_command(spec, monitored)
    env: list[dict[str, Any]] = _env_list(script_env(outputs_dir=OUTPUTS_DIR, attempt=inputs.attempt))
    env += _trace_env(inputs)
    env += [e.dump() for e in spec.env or []]
    container: dict[str, Any] = {
        "name": MAIN_CONTAINER,
        "image": image,
        "command": command,
        "args": list(spec.args or []),
        "env": env,
        "volumeMounts": _run_mounts(),
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if not spec.script.command:
        container["volumeMounts"].append({"name": "script", "mountPath": SCRIPT_DIR, "readOnly": True})
    if spec.env_from:
        container["envFrom"] = list(spec.env_from)
    if spec.resources:
        container["resources"] = spec.resources.dump()
    if spec.image_pull_policy:
        container["imagePullPolicy"] = spec.image_pull_policy
    container["securityContext"] = dict(spec.container_security_context or SCRIPT_SECURITY)
    return container


# The script container's default securityContext: what the Pod Security Standards' "restricted"
# level asks of every container (runAsNonRoot is the run's choice: spec.securityContext)
SCRIPT_SECURITY: dict[str, Any] = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
MONITOR_USER = 10001  # the monitor image's user (runner-image/Dockerfile.monitor)


def _own_security() -> dict[str, Any]:
    """The securityContext of our own containers (monitor, gates): "restricted", read-only, our user."""
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
        "runAsNonRoot": True,
        "runAsUser": MONITOR_USER,
    }


def _env_list(env: dict[str, str]) -> list[dict[str, Any]]:
    return [{"name": name, "value": value} for name, value in env.items()]


def _run_mounts() -> list[dict[str, Any]]:
    """The run directory (launcher handshake) and, inside it, its own world-writable emptyDir for
    outputs: $SCRIPTRUN_OUTPUTS exists before the script starts, whatever user either container runs as."""
    return [
        {"name": RUN_VOLUME, "mountPath": RUN_DIR},
        {"name": OUTPUTS_VOLUME, "mountPath": OUTPUTS_DIR},
    ]


def _monitor_container(inputs: PodInputs, monitor: MonitorSpec, labels: dict[str, str]) -> dict[str, Any]:
    """The usage monitor as a native sidecar (init container with restartPolicy Always), in its own image."""
    run = inputs.run
    container = {
        "name": MONITOR_CONTAINER,
        "image": inputs.monitor_image,
        "restartPolicy": "Always",
        "command": ["scriptrun", "monitor"],
        "args": [f"--interval={monitor.interval_seconds:g}", f"--port={monitor.port}", f"--run-dir={RUN_DIR}"],
        "env": _env_list(
            monitor_env(
                namespace=run.namespace,
                name=run.name,
                workflow=labels.get(names.LABEL_WORKFLOW, ""),
                task=labels.get(names.LABEL_TASK, ""),
            )
        )
        + _trace_env(inputs),
        "ports": [{"name": "metrics", "containerPort": monitor.port, "protocol": "TCP"}],
        # the monitor installs the launcher before it serves: the main container waits for this
        "startupProbe": {
            "httpGet": {"path": "/metrics", "port": "metrics"},
            "periodSeconds": 1,
            "failureThreshold": 60,
        },
        "volumeMounts": _run_mounts(),
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "File",
        "resources": {k: dict(v) for k, v in MONITOR_RESOURCES.items()},
        "securityContext": _own_security(),
    }
    if inputs.monitor_pull_policy:
        container["imagePullPolicy"] = inputs.monitor_pull_policy
    return container


def _gate_container(inputs: PodInputs, volumes: list[dict[str, Any]]) -> dict[str, Any] | None:
    """spec.gates.before as the first init container (`scriptrun gate`, in the runner image): the
    script volume and the OSV database ConfigMap read-only, the run directory for scratch. It
    exits non-zero when a gate blocks, so neither the monitor nor the script starts."""
    spec = inputs.spec
    before = before_gates(spec)
    if before is None:
        return None
    config = {
        "name": inputs.run.name,
        "before": before.dump(),
        "inputs": [list(pair) for pair in inputs_of(spec)],
    }
    args = [f"--work-dir={RUN_DIR}"]
    mounts: list[dict[str, Any]] = [{"name": RUN_VOLUME, "mountPath": RUN_DIR}]
    if not spec.script.command:
        args.append(f"--script={script_path(spec)}")
        mounts.append({"name": "script", "mountPath": SCRIPT_DIR, "readOnly": True})
    if before.dependency_scan is not None:
        name = before.dependency_scan.database.config_map_name
        volumes.append({"name": OSV_VOLUME, "configMap": {"name": name}})
        mounts.append({"name": OSV_VOLUME, "mountPath": OSV_DIR, "readOnly": True})
    container: dict[str, Any] = {
        "name": GATE_CONTAINER,
        "image": inputs.gate_image,
        "command": ["scriptrun", "gate"],
        "args": args,
        "env": [{"name": ENV_GATES, "value": json.dumps(config, separators=(",", ":"), sort_keys=True)}],
        "volumeMounts": mounts,
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "File",
        "resources": {k: dict(v) for k, v in GATE_RESOURCES.items()},
        "securityContext": _own_security(),
    }
    if inputs.monitor_pull_policy:
        container["imagePullPolicy"] = inputs.monitor_pull_policy
    return container


def build_pod(inputs: PodInputs) -> dict[str, Any]:
    """One attempt's Pod."""
    spec, run = inputs.spec, inputs.run
    image = spec.image or inputs.default_image
    monitor = spec.monitor or MonitorSpec()
    labels = dict((spec.pod_metadata.labels if spec.pod_metadata else None) or {})
    labels.update(dict(inputs.extra_labels))
    labels.update(base_labels(run))
    labels[names.LABEL_ATTEMPT] = str(inputs.attempt)
    annotations = dict((spec.pod_metadata.annotations if spec.pod_metadata else None) or {})

    volumes: list[dict[str, Any]] = [{"name": RUN_VOLUME, "emptyDir": {}}, {"name": OUTPUTS_VOLUME, "emptyDir": {}}]
    if script_in_pod(spec):
        annotations[names.ANNOTATION_SCRIPT] = str(spec.script.source)
        field = f"metadata.annotations['{names.ANNOTATION_SCRIPT}']"
        item = {"path": SCRIPT_KEY, "fieldRef": {"fieldPath": field}}
        volumes.append({"name": "script", "downwardAPI": {"items": [item]}})
    elif spec.script.source is not None:
        volumes.append({"name": "script", "configMap": {"name": names.script_configmap_name(run.name)}})
    elif spec.script.config_map_ref is not None:
        volumes.append({"name": "script", "configMap": {"name": spec.script.config_map_ref.name}})

    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": bool(spec.automount_service_account_token),
        "enableServiceLinks": False,
        "containers": [_main_container(inputs, image, monitor.enabled)],
        "volumes": volumes,
    }
    gate = _gate_container(inputs, volumes)
    if gate is not None:
        pod_spec["initContainers"] = [gate]
    if monitor.enabled:
        pod_spec["shareProcessNamespace"] = True
        pod_spec.setdefault("initContainers", []).append(_monitor_container(inputs, monitor, labels))
    if spec.timeout_seconds:
        pod_spec["activeDeadlineSeconds"] = spec.timeout_seconds
    optional = {
        "nodeSelector": spec.node_selector,
        "tolerations": spec.tolerations,
        "affinity": spec.affinity,
        "serviceAccountName": spec.service_account_name,
        "securityContext": spec.security_context,
        "priorityClassName": spec.priority_class_name,
    }
    pod_spec.update({k: v for k, v in optional.items() if v})
    metadata: dict[str, Any] = {
        "name": names.pod_name(run.name, inputs.attempt),
        "namespace": run.namespace,
        "labels": labels,
        "ownerReferences": [run.owner_reference()],
    }
    if annotations:
        metadata["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": pod_spec}
