"""Load benchmark (`make bench-load`): 10,000 ScriptRuns created at once, then 100 Workflows of 100
tasks, against the real control plane (kwok pods that complete at once), the operator as a
ServiceAccount so that the API server's audit log records every request it makes.

Reports, per phase: the makespan; the operator's RSS (peak, and after every run is deleted: memory
released); its API request rate (the most requests in any 1 s and any 10 s window, and the average,
against its --qps/--burst settings: the limit is qps * window + burst); starvation (the run created
last: created -> its pod created -> Succeeded); and the floor, the same count of bare pods created
by the bench itself at the same rate limit (what the cluster alone needs).
Targets (issue 11): RSS < 250 MiB; the request rate within the settings; the last run starts within
a bound measured and reported.

What the memory holds (hack/memstats: the operator runs with it on PYTHONPATH and records its
allocators' figures on SIGUSR2): the live heap at idle, before the delete and after the release,
so that RSS kept by the allocators (fragmentation) is told apart from data still held (a leak).
`--rounds N` runs the Workflow phase N times: memory released is memory the next round reuses.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil
import yaml
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.controlplane import KWOK_STAGES, ControlPlane  # noqa: E402
from tests.support.operator import OperatorProcess  # noqa: E402

API = "/apis/scriptrun.dev/v1alpha1"
MEMSTATS = ROOT / "hack" / "memstats"
LONG_RUNNING = {"watch"}


class RssSampler:
    """The operator's RSS once a second (VmRSS), in a thread."""

    def __init__(self, pid: int) -> None:
        self.pid, self.stop = pid, threading.Event()
        self.samples: list[float] = []
        threading.Thread(target=self._run, daemon=True).start()

    def now(self) -> float:
        with open(f"/proc/{self.pid}/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def _run(self) -> None:
        while not self.stop.wait(1.0):
            try:
                self.samples.append(self.now())
            except OSError:
                return

    def peak(self, since: int = 0) -> float:
        return max(self.samples[since:], default=0.0)

    def curve(self, since: int = 0) -> list[float]:
        """The RSS at each tenth of the samples since `since` (its shape: a plateau early on is
        memory the allocator holds on to, a steady climb is what stays live)."""
        part = self.samples[since:]
        return [round(part[min(len(part) - 1, len(part) * i // 10)], 1) for i in range(1, 11)] if part else []


class Heap:
    """The operator's live heap, asked for with SIGUSR2 (hack/memstats/sitecustomize.py)."""

    def __init__(self, op: OperatorProcess, path: Path) -> None:
        self.op, self.path = op, path

    def now(self) -> dict[str, float]:
        assert self.op.popen is not None
        seen = self.path.read_text().count("\n") if self.path.exists() else 0
        os.kill(self.op.popen.pid, signal.SIGUSR2)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            lines = self.path.read_text().splitlines() if self.path.exists() else []
            if len(lines) > seen:
                record: dict[str, float] = json.loads(lines[-1])
                record.pop("time", None)
                return record
            time.sleep(0.2)
        raise TimeoutError(f"no memory record in {self.path} 30 s after SIGUSR2")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (0 once it is gone)."""
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return 0.0
    return float(times.user + times.system)


class CpuMeter:
    """Each process's share of a core over a phase (1.0 = one core busy all the time): who bounds it."""

    def __init__(self, cp: ControlPlane, op: OperatorProcess) -> None:
        assert op.popen is not None
        self.pids = {"operator": op.popen.pid} | {p.name: p.popen.pid for p in cp.procs}
        self.start, self.at = self._read(), time.monotonic()

    def _read(self) -> dict[str, float]:
        return {name: cpu_seconds(pid) for name, pid in self.pids.items()}

    def shares(self) -> dict[str, float]:
        now, wall = self._read(), time.monotonic() - self.at
        return {name: round((now[name] - self.start[name]) / wall, 2) for name in self.pids if wall > 0}


def scriptrun(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "scriptrun.dev/v1alpha1",
        "kind": "ScriptRun",
        "metadata": {"name": name},
        "spec": {"script": {"source": "print(1)"}},
    }


def workflow(name: str, tasks: int) -> dict[str, Any]:
    """A 100-task workflow: 10 layers of 10, each task on one of the layer before."""
    spec = []
    for i in range(tasks):
        layer, col = divmod(i, 10)
        deps = [f"t{(layer - 1) * 10 + col}"] if layer else []
        spec.append({"name": f"t{i}", "dependencies": deps, "script": {"source": "print(1)"}})
    return {
        "apiVersion": "scriptrun.dev/v1alpha1",
        "kind": "Workflow",
        "metadata": {"name": name},
        "spec": {"tasks": spec},
    }


def objects(op: OperatorProcess) -> Counter[tuple[str, str]]:
    """The operator's own count of what it knows, by (kind, phase)."""
    counts: Counter[tuple[str, str]] = Counter()
    for family in text_string_to_metric_families(op.scrape()):
        for sample in family.samples:
            if sample.name == "scriptrun_objects":
                counts[(sample.labels["kind"], sample.labels["phase"])] += int(sample.value)
    return counts


def post_all(cp: ControlPlane, path: str, bodies: list[dict[str, Any]], threads: int = 16) -> tuple[float, float]:
    start = time.monotonic()
    last = [0.0]

    def post(body: dict[str, Any]) -> None:
        cp.request("POST", path, body)
        if body is bodies[-1]:
            last[0] = time.monotonic()

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(post, bodies))
    return time.monotonic() - start, last[0]


def wait_done(op: OperatorProcess, kind: str, count: int, timeout: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            seen = objects(op)
        except OSError:
            seen = Counter()
        if sum(v for (k, phase), v in seen.items() if k == kind and phase in ("Succeeded", "Failed")) >= count:
            return time.monotonic() - start
        time.sleep(2)
    raise TimeoutError(f"{kind}: not {count} finished after {timeout}s: {dict(objects(op))}")


def rates(cp: ControlPlane, user: str, since: float, until: float) -> dict[str, float]:
    """The operator's requests (watches left out) in [since, until] (wall clock): most in 1 s, in 10 s, mean."""
    stamps: list[float] = []
    verbs: Counter[str] = Counter()
    for event in cp.audit_events():
        if event.get("user", {}).get("username") != user or event.get("verb") in LONG_RUNNING:
            continue
        at = datetime.fromisoformat(event["requestReceivedTimestamp"].replace("Z", "+00:00")).timestamp()
        if since <= at <= until:
            stamps.append(at)
            verbs[f"{event['verb']} {event['objectRef'].get('resource', '')}"] += 1
    stamps.sort()

    def most(window: float) -> int:
        best, j = 0, 0
        for i, t in enumerate(stamps):
            while t - stamps[j] > window:
                j += 1
            best = max(best, i - j + 1)
        return best

    span = max(until - since, 1e-9)
    return {
        "requests": len(stamps),
        "max_1s": most(1.0),
        "max_10s": most(10.0),
        "mean_per_s": round(len(stamps) / span, 1),
        "by_verb": dict(verbs.most_common(6)),  # type: ignore[dict-item]
    }


def service_account_kubeconfig(cp: ControlPlane, name: str) -> Path:
    cp.kubectl("-n", "default", "create", "serviceaccount", name)
    cp.kubectl("create", "clusterrolebinding", name, "--clusterrole=cluster-admin", f"--serviceaccount=default:{name}")
    token = cp.kubectl("-n", "default", "create", "token", name, "--duration=6h").stdout.strip()
    config = yaml.safe_load(cp.kubeconfig.read_text())
    config["users"] = [{"name": config["contexts"][0]["context"]["user"], "user": {"token": token}}]
    path = cp.workdir / f"{name}.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


def phase_runs(cp: ControlPlane, op: OperatorProcess, rss: RssSampler, n: int, timeout: float) -> dict[str, Any]:
    ns = "load-runs"
    cp.kubectl("create", "namespace", ns)
    mark, wall, cpu = len(rss.samples), time.time(), CpuMeter(cp, op)
    created_in, _last_created = post_all(
        cp, f"{API}/namespaces/{ns}/scriptruns", [scriptrun(f"r{i:05d}") for i in range(n)]
    )
    makespan = wait_done(op, "ScriptRun", n, timeout) + created_in
    shares = cpu.shares()
    last = cp.request("GET", f"{API}/namespaces/{ns}/scriptruns/r{n - 1:05d}")
    pod = cp.request("GET", f"/api/v1/namespaces/{ns}/pods/r{n - 1:05d}-a1")
    created = datetime.fromisoformat(last["metadata"]["creationTimestamp"].replace("Z", "+00:00")).timestamp()
    pod_at = datetime.fromisoformat(pod["metadata"]["creationTimestamp"].replace("Z", "+00:00")).timestamp()
    done_at = datetime.fromisoformat(last["status"]["completionTime"].replace("Z", "+00:00")).timestamp()
    return {
        "phase": f"{n} ScriptRuns",
        "created_in_s": round(created_in, 1),
        "makespan_s": round(makespan, 1),
        "rss_peak_mib": round(rss.peak(mark), 1),
        "rss_by_tenth_mib": rss.curve(mark),
        "last_run_pod_after_s": round(pod_at - created, 1),
        "last_run_done_after_s": round(done_at - created, 1),
        "cpu_cores": shares,
        "rates": rates(cp, "system:serviceaccount:default:bench-operator", wall, time.time()),
        "ns": ns,
    }


def phase_workflows(
    cp: ControlPlane, op: OperatorProcess, rss: RssSampler, n: int, tasks: int, timeout: float, ns: str = "load-wfs"
) -> dict[str, Any]:
    cp.kubectl("create", "namespace", ns)
    mark, wall, cpu = len(rss.samples), time.time(), CpuMeter(cp, op)
    created_in, _ = post_all(cp, f"{API}/namespaces/{ns}/workflows", [workflow(f"w{i:03d}", tasks) for i in range(n)])
    makespan = wait_done(op, "Workflow", n, timeout) + created_in
    shares = cpu.shares()
    path = f"{API}/namespaces/{ns}/workflows/w{n - 1:03d}"
    while (last := cp.request("GET", path))["status"].get("phase") not in ("Succeeded", "Failed", "Error"):
        time.sleep(1)  # the operator decided; its status write may lag (one a second per Workflow)
    status = last["status"]
    created = datetime.fromisoformat(last["metadata"]["creationTimestamp"].replace("Z", "+00:00")).timestamp()
    started = datetime.fromisoformat(status["startedAt"].replace("Z", "+00:00")).timestamp()
    return {
        "phase": f"{n} Workflows x {tasks} tasks",
        "created_in_s": round(created_in, 1),
        "makespan_s": round(makespan, 1),
        "rss_peak_mib": round(rss.peak(mark), 1),
        "rss_by_tenth_mib": rss.curve(mark),
        "last_workflow_started_after_s": round(started - created, 1),
        "last_workflow": f"{status['phase']} {status.get('progress')} in {status.get('duration')}",
        "cpu_cores": shares,
        "rates": rates(cp, "system:serviceaccount:default:bench-operator", wall, time.time()),
        "ns": ns,
    }


def release(
    cp: ControlPlane, op: OperatorProcess, rss: RssSampler, heap: Heap, ns: str, kind: str, timeout: float = 600
) -> dict[str, Any]:
    """Delete everything in `ns`; once the operator has forgotten it, its RSS then (memory released)."""
    before, heap_before = rss.now(), heap.now()
    plural = "scriptruns" if kind == "ScriptRun" else "workflows"
    path = f"{API}/namespaces/{ns}/{plural}"
    names = [item["metadata"]["name"] for item in cp.request("GET", path)["items"]]
    with ThreadPoolExecutor(16) as pool:  # one DELETE each: kubectl delete --all timed out at 10,000
        list(pool.map(lambda name: cp.request("DELETE", f"{path}/{name}"), names))
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if not sum(v for (k, _), v in objects(op).items() if k == kind) and not [
            i for i in cp.request("GET", f"{API}/namespaces/{ns}/scriptruns?limit=1")["items"]
        ]:
            break
        time.sleep(2)
    time.sleep(5)
    forgotten, after = round(time.monotonic() - start, 1), round(rss.now(), 1)
    # the pods go later (the garbage collector deletes them after their owners); the operator's pod
    # index and Kopf's records of them go with their delete events: measure again once they are gone
    while time.monotonic() - start < timeout and cp.request("GET", f"/api/v1/namespaces/{ns}/pods?limit=1")["items"]:
        time.sleep(2)
    pods_gone = round(time.monotonic() - start, 1)
    time.sleep(15)  # a few of the operator's malloc_trim periods
    return {
        "rss_before_delete_mib": round(before, 1),
        "rss_after_delete_mib": after,
        "forgotten_after_s": forgotten,
        "pods_gone_after_s": pods_gone,
        "rss_after_pods_gone_mib": round(rss.now(), 1),
        "heap_before_delete": heap_before,
        "heap_after_release": heap.now(),
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10000)
    parser.add_argument("--workflows", type=int, default=100)
    parser.add_argument("--tasks", type=int, default=100)
    parser.add_argument("--qps", type=float, default=200, help="the operator's SCRIPTRUN_API_QPS")
    parser.add_argument("--burst", type=int, default=400, help="the operator's SCRIPTRUN_API_BURST")
    parser.add_argument("--rounds", type=int, default=1, help="run the Workflow phase this many times")
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--json", help="write the results here too")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="more environment for the operator (e.g. PYTHONMALLOC=malloc, SCRIPTRUN_API_CONNECTIONS=48)",
    )
    args = parser.parse_args()
    cp = ControlPlane.create(extra_stages=[KWOK_STAGES / "scriptrun-pod-autocomplete.yaml"], nodes=3, audit=True)
    cp.start(crds=ROOT / "crds")
    env = {
        "KUBECONFIG": str(service_account_kubeconfig(cp, "bench-operator")),
        "SCRIPTRUN_API_QPS": str(args.qps),
        "SCRIPTRUN_API_BURST": str(args.burst),
        "SCRIPTRUN_RESYNC_SECONDS": "60",
        "SCRIPTRUN_LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(MEMSTATS),
        "SCRIPTRUN_MEMSTATS": str(cp.workdir / "memstats.jsonl"),
        **dict(e.split("=", 1) for e in args.env),
    }
    op = OperatorProcess(cp, extra_env=env).start()
    assert op.popen is not None
    rss, heap = RssSampler(op.popen.pid), Heap(op, Path(env["SCRIPTRUN_MEMSTATS"]))
    time.sleep(10)  # idle: after start-up has settled and the first malloc_trim (5 s) has run
    idle: dict[str, Any] = {"rss_idle_mib": round(rss.now(), 1), "heap_idle": heap.now()}
    results: list[dict[str, Any]] = [{"settings": {"qps": args.qps, "burst": args.burst, "env": args.env}, **idle}]
    try:
        if args.runs:
            row = phase_runs(cp, op, rss, args.runs, args.timeout)
            print(json.dumps(row), flush=True)
            row.update(release(cp, op, rss, heap, row["ns"], "ScriptRun"))
            print(json.dumps(row), flush=True)
            results.append(row)
        for round_ in range(args.rounds if args.workflows else 0):
            ns = "load-wfs" if round_ == 0 else f"load-wfs-{round_ + 1}"
            row = phase_workflows(cp, op, rss, args.workflows, args.tasks, args.timeout, ns)
            if args.rounds > 1:
                row["phase"] += f", round {round_ + 1} of {args.rounds}"
            print(json.dumps(row), flush=True)
            row.update(release(cp, op, rss, heap, row["ns"], "Workflow"))
            print(json.dumps(row), flush=True)
            results.append(row)
    finally:
        rss.stop.set()
        op.stop()
        cp.stop()
    print()
    settings = results[0]["settings"]
    print(
        f"operator settings: QPS {settings['qps']:g}, burst {settings['burst']}"
        f"{', ' + ' '.join(settings['env']) if settings['env'] else ''}; idle RSS {results[0]['rss_idle_mib']} MiB"
    )
    print(f"  idle heap: {heap_text(results[0]['heap_idle'])}")
    for r in results[1:]:
        rate = r["rates"]
        bound1, bound10 = settings["qps"] * 1 + settings["burst"], settings["qps"] * 10 + settings["burst"]
        print(f"{r['phase']}: created in {r['created_in_s']} s, all finished after {r['makespan_s']} s")
        print(
            f"  RSS peak {r['rss_peak_mib']} MiB (target < 250), before delete {r['rss_before_delete_mib']}, "
            f"after delete {r['rss_after_delete_mib']} (forgotten {r['forgotten_after_s']} s after the delete), "
            f"{r['rss_after_pods_gone_mib']} once the pods were gone too ({r['pods_gone_after_s']} s)"
        )
        print(f"  RSS at each tenth of the phase (MiB): {r['rss_by_tenth_mib']}")
        print(f"  heap before the delete: {heap_text(r['heap_before_delete'])}")
        print(f"  heap after the release: {heap_text(r['heap_after_release'])}")
        print(
            f"  API requests {rate['requests']}: most in 1 s {rate['max_1s']} (limit {bound1:g}), in 10 s "
            f"{rate['max_10s']} (limit {bound10:g}), mean {rate['mean_per_s']}/s; {rate['by_verb']}"
        )
        busy = ", ".join(f"{name} {share:g}" for name, share in sorted(r["cpu_cores"].items(), key=lambda kv: -kv[1]))
        print(f"  CPU, in cores (the machine's {os.cpu_count()}): {busy}")
        for key in ("last_run_pod_after_s", "last_run_done_after_s", "last_workflow_started_after_s", "last_workflow"):
            if key in r:
                print(f"  {key.replace('_', ' ')}: {r[key]}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


def heap_text(heap: dict[str, float]) -> str:
    return (
        f"RSS {heap['rss_mib']} MiB; live {heap['pymalloc_live_mib']} MiB in pymalloc blocks "
        f"({heap['pymalloc_arenas']:g} arenas of 1 MiB held) + {heap['malloc_live_mib']} MiB from malloc "
        f"({heap['malloc_free_mib']} free in its heap); {heap['gc_objects']:g} objects tracked"
    )


if __name__ == "__main__":
    raise SystemExit(main())
