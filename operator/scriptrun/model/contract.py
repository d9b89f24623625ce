"""Pure, standard library only: the pod/launcher contract, the one place its names are spelled.

What the main container, the launcher (`scriptrun.monitor.launch`), the monitor sidecar and the
local backend agree on: the directories, the handshake files in the run directory, and the
environment variables. The pod builder (`scriptrun.build.pod`) and the local backend
(`scriptrun.local.process`) both take them from here; `scriptrun monitor` defaults to them.

No pydantic and no other scriptrun package: the monitor sidecar imports this, and
`scriptrun.model` resolves its exports lazily, so importing this module loads nothing else.
The launcher itself runs standalone (copied into the pod, maybe with no scriptrun installed), so it
repeats PID_FILE and EXIT_FILE; tests/unit/test_contract.py keeps the two in step.
"""

from __future__ import annotations

from collections.abc import Mapping

# -- where things are in a run pod ---------------------------------------------------------------
SCRIPT_DIR = "/scriptrun/script"
"""The script's ConfigMap, mounted read-only in the main container."""
SCRIPT_KEY = "main.py"
"""The inline script's ConfigMap key, and its file name in SCRIPT_DIR (locally: in the work dir)."""
RUN_DIR = "/scriptrun/run"
"""The run directory shared by the main container and the monitor (the launcher handshake)."""
OUTPUTS_SUBDIR = "outputs"
"""Task outputs, one file per output parameter, under the run directory (pod and local alike)."""
OUTPUTS_DIR = f"{RUN_DIR}/{OUTPUTS_SUBDIR}"
TERMINATION_LOG = "/dev/termination-log"
"""Where the monitor writes its summary (its container's terminationMessagePath)."""

# -- the handshake files in the run directory ------------------------------------------------------
LAUNCHER_FILE = "launch.py"
"""The launcher, installed into the run directory by the monitor before it serves /metrics."""
PID_FILE = "main.pid"
"""{"pid": <the script's pid>, "started": <unix time>}, written by the launcher (or the shell wrapper)."""
EXIT_FILE = "exit.json"
"""{"exitCode": N, "finished": <unix time>, "rusage": {...}}, written by the launcher."""

# -- environment of the main container (and of a local attempt) --------------------------------------
ENV_OUTPUTS = "SCRIPTRUN_OUTPUTS"
"""The directory the script writes its output parameters into."""
ENV_ATTEMPT = "SCRIPTRUN_ATTEMPT"
"""The attempt number, from 1."""
ENV_TRACEPARENT = "TRACEPARENT"
"""With tracing on: the W3C traceparent of the attempt's span, in both containers (the script's and
the monitor's spans join the run's trace)."""

# -- environment of the monitor sidecar: who it measures (its metric labels) ---------------------------
ENV_NAMESPACE = "SCRIPTRUN_NAMESPACE"
ENV_NAME = "SCRIPTRUN_NAME"
ENV_WORKFLOW = "SCRIPTRUN_WORKFLOW"
ENV_TASK = "SCRIPTRUN_TASK"
MONITOR_LABEL_ENV = {
    "namespace": ENV_NAMESPACE,
    "scriptrun": ENV_NAME,
    "workflow": ENV_WORKFLOW,
    "task": ENV_TASK,
}
"""The monitor's metric label -> the environment variable the pod builder sets it from."""

# -- the gate init container (spec.gates.before) ---------------------------------------------------
GATE_CONTAINER = "gates"
"""The init container that runs the before-gates (`scriptrun gate`), ahead of the monitor and the script."""
ENV_GATES = "SCRIPTRUN_GATES"
"""Its configuration, JSON: {"name", "before" (spec.gates.before), "inputs" ([where, text] pairs)}."""
OSV_DIR = "/scriptrun/osv"
"""The dependency scan's OSV records (its database ConfigMap), mounted read-only in the gate container."""
GATE_REPORT_MARK = "scriptrun-gate-report "
"""The gate container's one log line that carries the full report: this mark, then JSON
{"sarif": ..., "sbom": ...}; the operator keeps it in the run's owned ConfigMap."""
GATE_EXIT_BLOCKED = 3
"""The gate container's exit code when a gate blocks the run (its summary says why)."""


def script_env(*, outputs_dir: str, attempt: int) -> dict[str, str]:
    """What the script finds in its environment, in a pod and locally (in this order)."""
    return {ENV_OUTPUTS: outputs_dir, ENV_ATTEMPT: str(attempt)}


def monitor_env(*, namespace: str, name: str, workflow: str, task: str) -> dict[str, str]:
    """The monitor sidecar's environment (the pod builder sets it; `scriptrun monitor` reads it)."""
    values = {"namespace": namespace, "scriptrun": name, "workflow": workflow, "task": task}
    return {MONITOR_LABEL_ENV[label]: value for label, value in values.items()}


def monitor_labels(environ: Mapping[str, str]) -> dict[str, str]:
    """The monitor's metric labels, read back from its environment (pass os.environ)."""
    return {label: environ.get(var, "") for label, var in MONITOR_LABEL_ENV.items()}
