"""Task outputs: files the script writes under $SCRIPTRUN_OUTPUTS, one file per output parameter.

They travel in the monitor's summary (the termination message), so they share its 4096-byte
budget: at most OUTPUTS_BUDGET bytes of JSON; past that, no outputs and a clear error instead.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

OUTPUTS_BUDGET = 3072
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")


def collect_outputs(directory: Path) -> tuple[dict[str, str] | None, str | None]:
    """(outputs, error). A trailing newline is dropped from each value, as `echo x > file` adds one."""
    if not directory.is_dir():
        return None, None
    values: dict[str, str] = {}
    for path in sorted(directory.rglob("*")):
        if not path.is_file():
            continue
        name = path.relative_to(directory).as_posix()
        if not NAME.match(name.replace("/", "_")):
            continue
        if path.stat().st_size > OUTPUTS_BUDGET:
            return None, f"output {name!r} is {path.stat().st_size} bytes; all outputs together get {OUTPUTS_BUDGET}"
        values[name] = path.read_text(errors="replace").removesuffix("\n")
    if not values:
        return None, None
    size = len(json.dumps(values, separators=(",", ":")).encode())
    if size > OUTPUTS_BUDGET:
        return None, f"outputs are {size} bytes as JSON; at most {OUTPUTS_BUDGET} fit in the termination message"
    return values, None
