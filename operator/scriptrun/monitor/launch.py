"""The launcher: runs the script as its child, publishes the child's PID, waits for it with
wait4() and records its exit code and resource usage (rusage covers every descendant it waited for).

Standard library only, on purpose: the monitor sidecar copies this very file into the pod's shared
run directory, so any image with a Python interpreter can run it, scriptrun installed or not.

    python launch.py RUN_DIR -- COMMAND [ARGS...]

Files in RUN_DIR (the handshake with the monitor, written atomically):
    main.pid    {"pid": <child pid>, "started": <unix time>}
    exit.json   {"exitCode": N, "finished": <unix time>, "rusage": {...}}
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import subprocess
import sys
import time
from typing import Any

# The contract's names (scriptrun.model.contract), repeated: this file runs standalone, where
# scriptrun may not be installed. tests/unit/test_contract.py fails if the two drift apart.
PID_FILE = "main.pid"
EXIT_FILE = "exit.json"


def write_json(path: str, data: dict[str, Any]) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as handle:
        json.dump(data, handle)
    os.replace(tmp, path)


def rusage_dict(ru: resource.struct_rusage) -> dict[str, float]:
    return {
        "userTimeSeconds": ru.ru_utime,
        "systemTimeSeconds": ru.ru_stime,
        "maxRssBytes": ru.ru_maxrss * 1024.0,  # Linux reports KiB
        "minorFaults": ru.ru_minflt,
        "majorFaults": ru.ru_majflt,
        "voluntarySwitches": ru.ru_nvcsw,
        "involuntarySwitches": ru.ru_nivcsw,
        "inBlocks": ru.ru_inblock,
        "outBlocks": ru.ru_oublock,
    }


def exit_code_of(status: int) -> int:
    """Shell convention: 128+N for a child killed by signal N."""
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def wait_rusage(pid: int, *, block: bool = True) -> tuple[int, resource.struct_rusage] | None:
    """wait4() the child; None if it is still running (block=False)."""
    waited, status, ru = os.wait4(pid, 0 if block else os.WNOHANG)
    if waited == 0:
        return None
    return exit_code_of(status), ru


def main(argv: list[str]) -> int:
    if len(argv) < 4 or argv[2] != "--":
        print("usage: launch.py RUN_DIR -- COMMAND [ARGS...]", file=sys.stderr)
        return 2
    run_dir, command = argv[1], argv[3:]
    os.makedirs(run_dir, exist_ok=True)
    try:
        child = subprocess.Popen(command)
    except OSError as err:
        print(f"scriptrun launcher: cannot start {command[0]!r}: {err}", file=sys.stderr)
        write_json(os.path.join(run_dir, EXIT_FILE), {"exitCode": 127, "finished": time.time(), "error": str(err)})
        return 127

    def forward(signum: int, _frame: object) -> None:
        # os.kill, not Popen.send_signal: that polls first, and a poll that reaps the child from
        # inside this handler leaves the wait4() below with "No child processes" (a flaky traceback
        # on Ctrl-C). Unreaped, the child's pid cannot have been reused.
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.pid, signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(sig, forward)
    write_json(os.path.join(run_dir, PID_FILE), {"pid": child.pid, "started": time.time()})
    result = wait_rusage(child.pid)
    assert result is not None
    code, ru = result
    child.returncode = code
    write_json(os.path.join(run_dir, EXIT_FILE), {"exitCode": code, "finished": time.time(), "rusage": rusage_dict(ru)})
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv))
