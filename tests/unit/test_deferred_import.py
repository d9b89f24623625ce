"""The operator defers the CEL library's command line (scriptrun/deferred_import.py): typer, rich and
prompt_toolkit stay out of its memory, CEL still evaluates, and the deferred module still works if used."""

from __future__ import annotations

import subprocess
import sys
import textwrap

CHECK = """
import sys
from scriptrun import deferred_import
from scriptrun.k8s import lazy_client
lazy_client.install()
for name in deferred_import.OPERATOR_DEFERRED:
    assert deferred_import.defer(name)
import kopf
import scriptrun.handlers
from scriptrun.engine import expressions
loaded = sorted({m.split(".")[0] for m in sys.modules} & {"typer", "rich", "prompt_toolkit", "wcwidth"})
assert loaded == [], loaded
import cel
assert cel.evaluate("1 + 2", {}) == 3
assert expressions.evaluate_bool("x > 1 && y", {"x": 2, "y": True}) is True
# used after all: the real module is imported then, and takes the stand-in's place
app = cel.cli.app
assert "typer" in sys.modules and type(sys.modules["cel.cli"]).__name__ == "module"
assert sys.modules["cel.cli"] is cel.cli and cel.cli.app is app
assert not deferred_import.defer("cel.cli"), "already imported: left alone"
print("ok")
"""


def test_the_cel_command_line_stays_out_until_used() -> None:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(CHECK)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
