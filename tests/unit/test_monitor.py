"""The monitor against known workloads run as real processes: the sidecar (a real `scriptrun
monitor` process), the launcher handshake, and the sampler on its own (no rusage to lean on)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from scriptrun.build.pod import shell_launch
from scriptrun.monitor.sampler import TreeSampler, own_pids
from scriptrun.monitor.summary import fit

PY = sys.executable
BUSY = "import time\nt=time.process_time()\nwhile time.process_time()-t < {s}: pass\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Sidecar:
    def __init__(self, tmp: Path, interval: float = 0.1, *extra: str) -> None:
        self.run_dir = tmp / "run"
        self.term = tmp / "termination-log"
        self.port = free_port()
        self.proc = subprocess.Popen(
            [
                PY,
                "-m",
                "scriptrun",
                "monitor",
                f"--run-dir={self.run_dir}",
                f"--port={self.port}",
                f"--termination-path={self.term}",
                f"--interval={interval}",
                "--exit-when-done",
                "--start-timeout=60",
                *extra,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while not self.metrics_up():
            assert time.monotonic() < deadline, "monitor did not start"
            assert self.proc.poll() is None, self.proc.communicate()[0]
            time.sleep(0.05)
        assert (self.run_dir / "launch.py").exists(), "the launcher is installed before /metrics answers"

    def metrics_up(self) -> bool:
        try:
            self.metrics()
            return True
        except OSError:
            return False

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=2) as resp:
            return str(resp.read().decode())

    def launch(self, code: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen([PY, str(self.run_dir / "launch.py"), str(self.run_dir), "--", PY, "-c", code])

    def summary(self, timeout: float = 60) -> dict[str, Any]:
        self.proc.wait(timeout)
        raw = self.term.read_bytes()
        assert len(raw) <= 4096
        data = json.loads(raw)
        assert isinstance(data, dict)
        return data


def run(tmp: Path, code: str, interval: float = 0.1) -> tuple[dict[str, Any], int]:
    sidecar = Sidecar(tmp, interval)
    main = sidecar.launch(code)
    code_ = main.wait(120)
    return sidecar.summary(), code_


HOLD_CHILD = (
    "import subprocess, sys\n"
    "child = 'import time\\nx = b\"\\\\x01\" * ({mib} * 1024 * 1024)\\ntime.sleep(1.5)'\n"
    "subprocess.run([sys.executable, '-c', child], check=True)\n"
)


def test_memory_of_a_child_holding_256_mib(tmp_path: Path) -> None:
    idle, _ = run(tmp_path / "idle", HOLD_CHILD.format(mib=0))
    held, code = run(tmp_path / "held", HOLD_CHILD.format(mib=256))
    assert code == 0
    delta = held["memoryMaxMb"] - idle["memoryMaxMb"]  # the same tree shape, minus the allocation
    assert abs(delta - 256) <= 25.6, (held, idle)
    assert held["processes"] == 2 and held["samples"] >= 10


def test_cpu_of_a_two_second_busy_loop(tmp_path: Path) -> None:
    summary, code = run(tmp_path, BUSY.format(s=2))
    assert code == 0
    cpu = summary["userTimeSeconds"] + summary["systemTimeSeconds"]
    assert abs(cpu - 2.0) <= 0.3, summary
    # a busy loop has a whole core on a quiet machine; sharing 2 cores with a loaded test run, less
    assert 50 <= summary["cpuAvgPercent"] <= 115 and summary["cpuMaxPercent"] >= 60


def test_sampler_alone_measures_cpu_without_rusage() -> None:
    """Sampling only (as for a `command:` run): the figures come from /proc, not from wait4."""
    proc = subprocess.Popen([PY, "-c", BUSY.format(s=2)])
    sampler = TreeSampler(proc.pid, exclude=own_pids())
    while proc.poll() is None:
        sampler.sample()
        time.sleep(0.1)
    summary = sampler.summary(exit_code=None)
    cpu = summary["userTimeSeconds"] + summary["systemTimeSeconds"]
    assert abs(cpu - 2.0) <= 0.3, summary


FOUR_CHILDREN = (
    "import subprocess, sys\nfor i in range(4):\n    subprocess.run([sys.executable, '-c', {busy!r}], check=True)\n"
)


def test_four_short_lived_children_are_all_counted(tmp_path: Path) -> None:
    summary, code = run(tmp_path, FOUR_CHILDREN.format(busy=BUSY.format(s=0.3)))
    assert code == 0
    assert summary["processes"] == 5, summary  # the parent and its four children
    cpu = summary["userTimeSeconds"] + summary["systemTimeSeconds"]
    assert abs(cpu - 1.2) <= 0.18 + 0.2, summary  # 4 x 0.3 s busy, plus four interpreter start-ups


def test_children_between_samples_are_not_lost_by_the_sampler() -> None:
    """Children that start and end between two samples: their CPU arrives via the parent's cutime."""
    code = FOUR_CHILDREN.format(busy=BUSY.format(s=0.15))
    proc = subprocess.Popen([PY, "-c", code + "import time\ntime.sleep(0.6)\n"])
    sampler = TreeSampler(proc.pid, exclude=own_pids())
    while proc.poll() is None:
        sampler.sample()
        time.sleep(1.0)  # longer than each child lives
    sampler.sample()
    cpu = sampler.summary(exit_code=None)
    total = cpu["userTimeSeconds"] + cpu["systemTimeSeconds"]
    assert total >= 0.6 * 0.85, cpu


def test_exit_before_the_first_sample_gives_a_valid_summary(tmp_path: Path) -> None:
    summary, code = run(tmp_path, "pass", interval=5)
    assert code == 0
    assert summary["available"] is True and summary["exitCode"] == 0 and summary["success"] is True
    assert summary["samples"] <= 1
    if summary["samples"] == 0:
        assert "note" in summary


def test_rusage_stands_in_when_sampling_saw_no_memory() -> None:
    """A sample can catch the script while the kernel tears its memory down (alive, RSS 0): the
    launcher's ru_maxrss is then the peak, marked as such; a sampled peak is never replaced by it."""
    rusage = {"userTimeSeconds": 0.01, "systemTimeSeconds": 0.0, "maxRssBytes": 9 * 1024 * 1024}
    sampler = TreeSampler(os.getpid())
    sampler.samples = 1  # one sample, of a process that held no memory
    summary = sampler.summary(exit_code=0, rusage=rusage, elapsed=0.1)
    assert summary["memoryMaxMb"] == 9.0 and summary["memorySource"] == "rusage", summary
    sampler.rss_max = 5 * 1024 * 1024
    summary = sampler.summary(exit_code=0, rusage=rusage, elapsed=0.1)
    assert summary["memoryMaxMb"] == 5.0 and "memorySource" not in summary, summary
    sampler.close()


def test_exit_code_and_signal_are_reported(tmp_path: Path) -> None:
    summary, code = run(tmp_path / "a", "import sys; sys.exit(7)")
    assert code == 7 and summary["exitCode"] == 7 and summary["success"] is False
    summary, code = run(tmp_path / "b", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)")
    assert code == 137 and summary["exitCode"] == 137


def test_metrics_are_served_while_the_run_lives(tmp_path: Path) -> None:
    sidecar = Sidecar(tmp_path, 0.1)
    main = sidecar.launch("import time\nx = b'1' * (64 * 1024 * 1024)\ntime.sleep(4)")
    deadline = time.monotonic() + 30
    text, rss = "", []
    while time.monotonic() < deadline:  # until the 64 MiB allocation shows
        text = sidecar.metrics()
        rss = [line for line in text.splitlines() if line.startswith("scriptrun_run_memory_rss_bytes{")]
        if rss and float(rss[0].rsplit(" ", 1)[1]) > 60 * 1024 * 1024:
            break
        time.sleep(0.1)
    assert rss and float(rss[0].rsplit(" ", 1)[1]) > 60 * 1024 * 1024, text
    assert 'namespace=""' in rss[0] and 'task=""' in rss[0]
    assert "# TYPE scriptrun_run_cpu_user_seconds_total counter" in text
    main.wait(30)
    sidecar.summary()


def test_command_mode_via_the_shell_launcher(tmp_path: Path) -> None:
    sidecar = Sidecar(tmp_path, 0.1)
    main = subprocess.Popen(
        ["sh", "-c", shell_launch(str(sidecar.run_dir)), "scriptrun-launch", PY, "-c", BUSY.format(s=1)]
    )
    assert main.wait(60) == 0
    summary = sidecar.summary()
    assert "exitCode" not in summary and "note" in summary  # no launcher: no exit record
    cpu = summary["userTimeSeconds"] + summary["systemTimeSeconds"]
    assert abs(cpu - 1.0) <= 0.2, summary


def test_sigterm_before_the_script_starts(tmp_path: Path) -> None:
    sidecar = Sidecar(tmp_path, 0.1)
    sidecar.proc.send_signal(signal.SIGTERM)
    summary = sidecar.summary()
    assert summary == {
        "available": False,
        "reason": "MainNeverStarted",
        "message": "the script's process never appeared (no main.pid)",
    }


def test_interval_is_checked_by_the_cli(tmp_path: Path) -> None:
    proc = subprocess.run([PY, "-m", "scriptrun", "monitor", "--interval=0"], capture_output=True, text=True)
    assert proc.returncode == 2 and "between 0.1 and 60" in proc.stderr


@pytest.mark.parametrize("size", [10, 3000, 10_000, 100_000])
def test_summary_is_truncated_by_rule_and_stays_json(size: int) -> None:
    summary = {
        "executionTimeSeconds": 1.0,
        "memoryMaxMb": 5.0,
        "exitCode": 0,
        "note": "n" * size,
        "outputs": {"rows": "x" * size},
        "extra": "e" * size,
    }
    raw = fit(summary)
    assert len(raw) <= 4096
    data = json.loads(raw)
    assert data["executionTimeSeconds"] == 1.0 and data["exitCode"] == 0
    if size >= 3000:
        assert "outputs" not in data and "did not fit" in data["outputsError"]
        assert data["truncated"][0] == "note"


def test_summary_that_cannot_fit_says_so() -> None:
    data = json.loads(fit({"memoryMaxMb": "m" * 10_000}))
    assert data == {
        "available": False,
        "reason": "SummaryTooLarge",
        "message": "the usage summary did not fit in 4096 bytes",
    }


def test_monitor_never_samples_itself(tmp_path: Path) -> None:
    assert os.getpid() in own_pids()
