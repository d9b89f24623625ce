"""`scriptrun monitor`: the native sidecar that measures the main container's script.

Handshake over the pod's shared run directory (an emptyDir mounted in both containers):
1. The monitor copies the launcher (launch.py, standard library only) into RUN_DIR, then starts
   serving /metrics. Its startupProbe hits that port, so the kubelet starts the main container only
   after the launcher is in place (native sidecars start first).
2. The main container runs `python RUN_DIR/launch.py RUN_DIR -- python script.py ARGS`; the launcher
   writes RUN_DIR/main.pid (the script's PID, the same in every container because the pod shares
   one PID namespace) and, once the script is gone, RUN_DIR/exit.json (exit code and wait4 rusage).
   A `command:` run (no Python assumed) is wrapped in `sh -c` that writes main.pid and execs.
3. The monitor samples exactly the tree rooted at that PID (never itself, never pause), serves the
   figures as Prometheus metrics, and when the script exits (exit.json, or the PID is gone) writes
   the JSON summary to its termination-message path. On SIGTERM (the kubelet stops native
   sidecars after the main container ends) it writes the summary if not yet written and exits 0.
The monitor never talks to the Kubernetes API and needs no token.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import shutil
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scriptrun.model.contract import EXIT_FILE, LAUNCHER_FILE, OUTPUTS_SUBDIR, PID_FILE, TERMINATION_LOG
from scriptrun.monitor import launch
from scriptrun.monitor.outputs import collect_outputs
from scriptrun.monitor.sampler import TreeSampler, own_pids
from scriptrun.monitor.summary import fit

log = logging.getLogger("scriptrun.monitor")


@dataclass
class MonitorConfig:
    run_dir: Path
    interval: float = 1.0
    port: int = 9090
    termination_path: Path = Path(TERMINATION_LOG)
    labels: dict[str, str] = field(default_factory=dict)
    memory_detail: bool = False
    exit_when_done: bool = False
    start_timeout: float | None = None


def install_launcher(run_dir: Path) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    target = run_dir / LAUNCHER_FILE
    tmp = run_dir / f".{LAUNCHER_FILE}.tmp"
    shutil.copyfile(launch.__file__, tmp)
    os.replace(tmp, target)
    return target


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class Monitor:
    def __init__(self, config: MonitorConfig) -> None:
        self.config = config
        self.stop = threading.Event()
        self.sampler: TreeSampler | None = None
        self.summary: dict[str, Any] = {}
        self.live: dict[str, float] = {}
        self.written = False
        self.lock = threading.Lock()
        self.started_wall: float | None = None

    # -- the pieces ----------------------------------------------------------------------------
    def state(self) -> tuple[dict[str, Any], dict[str, float]]:
        """For a scrape: the summary is computed here, on demand, not on every sample."""
        with self.lock:
            if not self.summary and self.sampler is not None and self.started_wall is not None:
                return self.sampler.summary(exit_code=None, elapsed=time.time() - self.started_wall), dict(self.live)
            return dict(self.summary), dict(self.live)

    def serve_metrics(self) -> None:
        from prometheus_client import CollectorRegistry, start_http_server

        from scriptrun.telemetry.usage_metrics import UsageCollector

        registry = CollectorRegistry(auto_describe=False)
        registry.register(UsageCollector(self.config.labels, self.state))
        start_http_server(self.config.port, addr="0.0.0.0", registry=registry)

    def write_summary(self, summary: dict[str, Any]) -> None:
        with self.lock:
            if self.written:
                return
            self.written = True
        payload = fit(summary)
        path = self.config.termination_path
        try:
            path.write_bytes(payload)
        except OSError as err:
            log.error("cannot write the summary to %s: %s", path, err)
        log.info("summary written (%d bytes)", len(payload))

    # -- the loop ------------------------------------------------------------------------------
    def wait_for_main(self) -> dict[str, Any] | None:
        pid_file = self.config.run_dir / PID_FILE
        deadline = None if self.config.start_timeout is None else time.monotonic() + self.config.start_timeout
        while not self.stop.is_set():
            info = _read_json(pid_file)
            if info and isinstance(info.get("pid"), int):
                return info
            if deadline is not None and time.monotonic() > deadline:
                return None
            self.stop.wait(min(self.config.interval, 0.1))
        return None

    def run(self) -> int:
        install_launcher(self.config.run_dir)
        self.serve_metrics()
        info = self.wait_for_main()
        if info is None:
            self.write_summary(
                {
                    "available": False,
                    "reason": "MainNeverStarted",
                    "message": f"the script's process never appeared (no {PID_FILE})",
                }
            )
            return 0
        pid = int(info["pid"])
        started = float(info.get("started") or time.time())
        self.started_wall = started
        # everything imported so far lives as long as the process: keep the cyclic GC off it
        gc.freeze()
        self.sampler = sampler = TreeSampler.for_interval(
            pid, self.config.interval, memory_detail=self.config.memory_detail, exclude=own_pids()
        )
        exit_file = self.config.run_dir / EXIT_FILE
        gone_since: float | None = None
        exit_info: dict[str, Any] | None = None
        while not self.stop.is_set():
            tick_started = time.monotonic()
            with self.lock:  # a scrape reads the sampler: not while it is mid-sample
                snap = sampler.sample()
                prev_cpu = self.live.get("_cpu", 0.0)
                cpu = snap.totals.user + snap.totals.system
                self.live = {
                    "rss": snap.rss,
                    "threads": snap.threads,
                    "processes": snap.processes,
                    "cpu_cores": max(0.0, (cpu - prev_cpu) / self.config.interval),
                    "_cpu": cpu,
                }
            if exit_file.exists():
                exit_info = _read_json(exit_file)
                break
            if not sampler.any_alive:
                gone_since = gone_since or time.monotonic()
                if time.monotonic() - gone_since > 2 * self.config.interval + 0.5:
                    break  # no launcher (command mode) or it was killed: the tree is gone
            wait = sampler.next_wait(self.config.interval)
            self.stop.wait(max(0.0, wait - (time.monotonic() - tick_started)))
        self.finish(started, exit_info)
        if not self.config.exit_when_done:
            self.stop.wait()
        return 0

    def finish(self, started: float, exit_info: dict[str, Any] | None) -> None:
        assert self.sampler is not None
        exit_info = exit_info or _read_json(self.config.run_dir / EXIT_FILE)
        finished = float((exit_info or {}).get("finished") or time.time())
        summary = self.sampler.summary(
            exit_code=(exit_info or {}).get("exitCode"),
            rusage=(exit_info or {}).get("rusage"),
            elapsed=max(0.0, finished - started),
        )
        if exit_info is None:
            summary["note"] = "no exit record from the launcher: figures are from sampling only"
        outputs, error = collect_outputs(self.config.run_dir / OUTPUTS_SUBDIR)
        if outputs is not None:
            summary["outputs"] = outputs
        if error is not None:
            summary["outputsError"] = error
        self.sampler.close()
        with self.lock:
            self.summary = summary
        self.write_summary(summary)

    def terminate(self, *_: Any) -> None:
        self.stop.set()


def run_monitor(config: MonitorConfig) -> int:
    monitor = Monitor(config)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, monitor.terminate)
    try:
        return monitor.run()
    except Exception as err:  # a monitor failure must never fail the user's run
        log.exception("monitor failed")
        monitor.write_summary({"available": False, "reason": "MonitorError", "message": str(err)[:500]})
        return 0
