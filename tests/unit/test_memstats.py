"""hack/memstats (bench-load's view into the operator's heap): a process started with it records its
allocators' figures on each SIGUSR2, and the live figures follow what the program holds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

PROGRAM = """
import os, signal
mine = os.getpid()
os.kill(mine, signal.SIGUSR2)
held = [[i, str(i)] for i in range(200_000)]  # small objects: pymalloc's (lists: tracked by the gc)
big = [bytearray(4096) for _ in range(5_000)]  # above its 512 bytes: malloc's
os.kill(mine, signal.SIGUSR2)
del held, big
os.kill(mine, signal.SIGUSR2)
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists() or sys.platform != "linux", reason="reads /proc, glibc")
def test_each_sigusr2_records_the_live_heap(tmp_path: Path) -> None:
    out = tmp_path / "memstats.jsonl"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "hack" / "memstats"), "SCRIPTRUN_MEMSTATS": str(out)}
    subprocess.run([sys.executable, "-c", PROGRAM], env=env, check=True, timeout=60)
    start, loaded, freed = (json.loads(line) for line in out.read_text().splitlines())
    assert loaded["pymalloc_live_mib"] - start["pymalloc_live_mib"] > 20  # 200,000 lists and strings
    assert loaded["malloc_live_mib"] - start["malloc_live_mib"] > 15  # 5,000 x 4 KiB
    assert loaded["gc_objects"] - start["gc_objects"] > 190_000
    assert freed["pymalloc_live_mib"] - start["pymalloc_live_mib"] < 2
    assert freed["malloc_live_mib"] - start["malloc_live_mib"] < 2
    assert freed["pymalloc_arenas"] >= start["pymalloc_arenas"] and freed["rss_mib"] > 0


def test_without_its_variable_it_does_nothing(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "SCRIPTRUN_MEMSTATS"}
    env["PYTHONPATH"] = str(ROOT / "hack" / "memstats")
    proc = subprocess.run(
        [sys.executable, "-c", "import signal; print(signal.getsignal(signal.SIGUSR2) == signal.SIG_DFL)"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.stdout.strip() == "True"
