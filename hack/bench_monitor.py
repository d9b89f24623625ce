"""Overhead of the monitor sidecar (`make bench-monitor`).

Runs the real `scriptrun monitor` process against a tree of 1 and of 20 processes (each mostly
idle, as real scripts are between bursts), at 1 s and 0.1 s intervals, and reports the monitor's
own CPU per second of run (as % of one core) and its peak RSS. Targets (monitor issue): under 1% of
one core at 0.1 s for 20 processes, RSS under 40 MiB.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from scriptrun.model.contract import LAUNCHER_FILE, PID_FILE

TREE = """
import subprocess, sys, time
kids = [subprocess.Popen([sys.executable, '-c', 'import time; time.sleep({dur})']) for _ in range({n} - 1)]
time.sleep({dur})
for k in kids: k.wait()
"""


def cpu_seconds(pid: int) -> float:
    """CPU time of a process in nanosecond resolution (/proc/PID/schedstat), not 10 ms clock ticks."""
    try:
        with open(f"/proc/{pid}/schedstat") as handle:
            return int(handle.read().split()[0]) / 1e9
    except OSError:
        return sum(psutil.Process(pid).cpu_times()[:2])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def measure(processes: int, interval: float, duration: float) -> dict[str, float]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-monitor-"))
    run_dir = tmp / "run"
    monitor = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "scriptrun",
            "monitor",
            f"--run-dir={run_dir}",
            f"--port={free_port()}",
            f"--termination-path={tmp / 'term'}",
            f"--interval={interval}",
            "--exit-when-done",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    while not (run_dir / LAUNCHER_FILE).exists():
        time.sleep(0.05)
    time.sleep(0.5)  # let the interpreter settle: measure the steady state, not the start-up
    mon = psutil.Process(monitor.pid)
    main = subprocess.Popen(
        [
            sys.executable,
            str(run_dir / LAUNCHER_FILE),
            str(run_dir),
            "--",
            sys.executable,
            "-c",
            TREE.format(n=processes, dur=duration),
        ]
    )
    while not (run_dir / PID_FILE).exists():
        time.sleep(0.01)
    time.sleep(1.0)  # all children started
    cpu0 = cpu_seconds(monitor.pid)
    t0 = time.monotonic()
    rss_peak = 0
    while main.poll() is None and time.monotonic() - t0 < duration - 2:
        rss_peak = max(rss_peak, mon.memory_info().rss)
        time.sleep(0.2)
    cpu1 = cpu_seconds(monitor.pid)
    elapsed = time.monotonic() - t0
    main.wait()
    monitor.wait(30)
    summary = json.loads((tmp / "term").read_text())
    return {
        "processes": processes,
        "interval": interval,
        "cpu_percent_of_core": 100.0 * (cpu1 - cpu0) / elapsed,
        "rss_mib": rss_peak / 2**20,
        "seen": summary.get("processes", 0),
        "samples": summary.get("samples", 0),
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of run per case")
    args = parser.parse_args()
    rows = [measure(n, i, args.duration) for n in (1, 20) for i in (1.0, 0.1)]
    print(
        f"{'processes':>9} {'interval':>8} {'monitor CPU % of a core':>24} {'monitor RSS MiB':>16} "
        f"{'seen':>5} {'samples':>7}"
    )
    for r in rows:
        print(
            f"{r['processes']:>9} {r['interval']:>8} {r['cpu_percent_of_core']:>24.3f} {r['rss_mib']:>16.1f} "
            f"{r['seen']:>5} {r['samples']:>7}"
        )
    worst = next(r for r in rows if r["processes"] == 20 and r["interval"] == 0.1)
    rss = max(r["rss_mib"] for r in rows)
    print(
        f"target: CPU < 1% of a core at 0.1 s for 20 processes -> {worst['cpu_percent_of_core']:.2f}% "
        f"({'met' if worst['cpu_percent_of_core'] < 1 else 'NOT met'}); "
        f"RSS < 40 MiB -> {rss:.1f} MiB ({'met' if rss < 40 else 'NOT met'}); "
        f"ratio CPU(0.1 s)/CPU(1 s) for 20 processes: "
        f"{worst['cpu_percent_of_core'] / max(0.001, rows[2]['cpu_percent_of_core']):.1f}x"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
