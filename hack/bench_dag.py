"""DAG benchmark (`make bench-dag`): the real operator against the real control plane, kwok pods that
complete at once. Makespan and per-task operator overhead for (a) 200 independent tasks, (b) a
1000-task layered DAG (10 layers x 100), (c) a 100-task chain; the operator's CPU seconds and peak
RSS over each; and the API requests each task costs, by verb and resource, from the API server's own
`apiserver_request_total` (every client: the operator, kwok, the scheduler, KCM; the bench's own
status polls are taken out). Targets (controllers issue): (a) <= 4 s; (b) <= 40 s; (c) <= 50 ms
a step above the cluster floor; operator CPU <= 10 ms a task; operator RSS < 250 MiB. Each scenario
starts once the previous one's pods are gone (podGC), so it does not pay for them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.controlplane import KWOK_STAGES, ControlPlane  # noqa: E402
from tests.support.operator import OperatorProcess  # noqa: E402


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100.0


def rss_mib(pid: int) -> tuple[float, float]:
    now = peak = 0.0
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                now = int(line.split()[1]) / 1024
            elif line.startswith("VmHWM:"):
                peak = int(line.split()[1]) / 1024
    return now, peak


CLUSTER_PROCESSES = ("etcd", "kube-apiserver", "kube-controller", "kube-scheduler", "kwok")


def process_cpu() -> dict[str, float]:
    """CPU seconds used so far by the cluster's processes, by name (the operator is measured apart)."""
    used: dict[str, float] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        comm = text[text.index("(") + 1 : text.rindex(")")]
        if comm.startswith(CLUSTER_PROCESSES):
            fields = text.rsplit(")", 1)[1].split()
            used[comm] = used.get(comm, 0.0) + (int(fields[11]) + int(fields[12])) / 100.0
    return used


def busy_cores() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    return (sum(values) - idle) / 100.0, sum(values) / 100.0


WRITE_VERBS = frozenset({"POST", "PUT", "PATCH", "APPLY", "DELETE", "DELETECOLLECTION"})


def request_counts(cp: ControlPlane) -> Counter[tuple[str, str]]:
    """Requests the API server has served so far, by (verb, resource[/subresource])."""
    counts: Counter[tuple[str, str]] = Counter()
    for family in text_string_to_metric_families(cp.request("GET", "/metrics")):
        for sample in family.samples:
            if sample.name != "apiserver_request_total":
                continue
            labels = sample.labels
            resource = labels.get("resource", "") + (f"/{labels['subresource']}" if labels.get("subresource") else "")
            counts[(labels.get("verb", ""), resource)] += int(sample.value)
    return counts


def operator_series(op: OperatorProcess) -> int:
    """How many series the operator's own metrics endpoint exposes now (-1: not served)."""
    try:
        text = op.scrape()
    except OSError:
        return -1
    return sum(len(family.samples) for family in text_string_to_metric_families(text))


def task(name: str, deps: list[str] | None = None) -> dict[str, Any]:
    t: dict[str, Any] = {"name": name, "script": {"source": "print(1)"}}
    if deps:
        t["dependencies"] = deps
    return t


def scenarios() -> dict[str, list[dict[str, Any]]]:
    layered = []
    for layer in range(10):
        for i in range(100):
            deps = [f"l{layer - 1}-t{j}" for j in (i, (i + 1) % 100)] if layer else None
            layered.append(task(f"l{layer}-t{i}", deps))
    return {
        "a: 200 independent": [task(f"t{i}") for i in range(200)],
        "b: 1000 layered (10x100)": layered,
        "c: 100-task chain": [task("c0")] + [task(f"c{i}", [f"c{i - 1}"]) for i in range(1, 100)],
    }


def run(
    cp: ControlPlane, op: OperatorProcess, label: str, tasks: list[dict[str, Any]], ns: str, timeout: float
) -> dict[str, Any]:
    name = "bench-" + label.split(":")[0]
    assert op.popen is not None
    pid = op.popen.pid
    cpu0 = cpu_seconds(pid)
    wf = {
        "apiVersion": "scriptrun.dev/v1alpha1",
        "kind": "Workflow",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"tasks": tasks, "podGC": {"strategy": "OnWorkflowCompletion"}},
    }
    before = request_counts(cp)
    cluster0, (busy0, total0) = process_cpu(), busy_cores()
    polls = 0
    start = time.monotonic()
    # strict: a misspelt field fails here instead of being pruned silently
    cp.request("POST", f"/apis/scriptrun.dev/v1alpha1/namespaces/{ns}/workflows?fieldValidation=Strict", wf)
    peak = 0.0
    status: dict[str, Any] = {}
    while time.monotonic() - start < timeout:
        status = cp.request("GET", f"/apis/scriptrun.dev/v1alpha1/namespaces/{ns}/workflows/{name}").get("status") or {}
        polls += 1
        peak = max(peak, rss_mib(pid)[0])
        if status.get("phase") in ("Succeeded", "Failed"):
            break
        time.sleep(0.25)
    makespan = time.monotonic() - start
    cluster = {k: v - cluster0.get(k, 0.0) for k, v in process_cpu().items()}
    busy1, total1 = busy_cores()
    size = len(json.dumps(status))
    requests = request_counts(cp) - before
    requests[("GET", "workflows")] -= polls + 1  # the bench's own polls (and the /metrics read is not counted)
    requests[("POST", "workflows")] -= 1  # the bench's own submission
    per_task = {f"{verb} {res}": n / len(tasks) for (verb, res), n in requests.most_common() if n > 0}
    return {
        "scenario": label,
        "tasks": len(tasks),
        "phase": status.get("phase", "timeout"),
        "makespan_s": makespan,
        "per_task_ms": 1000 * makespan / len(tasks),
        "operator_cpu_s": cpu_seconds(pid) - cpu0,
        "operator_rss_peak_mib": peak,
        "status_kib": size / 1024,
        "requests_per_task": per_task,
        "writes_per_task": sum(v for k, v in per_task.items() if k.split()[0] in WRITE_VERBS),
        "cluster_cpu_s": dict(sorted(cluster.items(), key=lambda kv: -kv[1])),
        "operator_series": operator_series(op),
        "machine_busy": (busy1 - busy0) / max(total1 - total0, 1e-9),
    }


def wait_for_no_pods(cp: ControlPlane, ns: str, timeout: float = 300) -> float:
    """Wait until podGC has removed the scenario's pods: the next scenario must not pay for them."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if not cp.request("GET", f"/api/v1/namespaces/{ns}/pods?limit=1").get("items"):
            break
        time.sleep(0.5)
    return time.monotonic() - start


def bare_pod(name: str, ns: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "containers": [{"name": "main", "image": "x"}],
            "initContainers": [{"name": "monitor", "image": "x", "restartPolicy": "Always"}],
        },
    }


def wide_floor(cp: ControlPlane, ns: str, count: int = 200, concurrency: int = 20) -> tuple[float, float]:
    """Seconds this cluster takes to run `count` bare pods (created `concurrency` at a time, as the
    operator does) until all have Succeeded, and the cluster's CPU seconds meanwhile: what the
    cluster alone needs for scenario (a)."""
    from concurrent.futures import ThreadPoolExecutor

    cpu0 = sum(process_cpu().values())
    start = time.monotonic()
    with ThreadPoolExecutor(concurrency) as pool:
        list(
            pool.map(
                lambda i: cp.request("POST", f"/api/v1/namespaces/{ns}/pods", bare_pod(f"w-{i}", ns)), range(count)
            )
        )
    while True:
        items = cp.request("GET", f"/api/v1/namespaces/{ns}/pods").get("items") or []
        if sum(1 for p in items if (p.get("status") or {}).get("phase") == "Succeeded") >= count:
            return time.monotonic() - start, sum(process_cpu().values()) - cpu0
        time.sleep(0.05)


def pod_floor(cp: ControlPlane, ns: str, count: int = 30) -> float:
    """Seconds one bare pod (same shape: main + native sidecar) takes from create to Succeeded here,
    created one after another: the cluster's own share of each chain step, not the operator's."""
    times = []
    for i in range(count):
        pod = bare_pod(f"floor-{i}", ns)
        start = time.monotonic()
        cp.request("POST", f"/api/v1/namespaces/{ns}/pods", pod)
        while (cp.request("GET", f"/api/v1/namespaces/{ns}/pods/floor-{i}").get("status") or {}).get("phase") not in (
            "Succeeded",
            "Failed",
        ):
            time.sleep(0.002)
        times.append(time.monotonic() - start)
    times.sort()
    return times[len(times) // 2]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--only", help="substring of a scenario name")
    parser.add_argument("--profile", help="write a cProfile of the operator to this file")
    parser.add_argument("--keep-log", help="copy the operator's log here")
    parser.add_argument(
        "--telemetry",
        action="store_true",
        help="compare the operator's CPU with metrics served and scraped and tracing on (a real Collector) "
        "against both off, alternating off/on twice",
    )
    parser.add_argument(
        "--on",
        choices=("both", "metrics", "tracing"),
        default="both",
        help="with --telemetry: what `on` turns on (to see what costs what)",
    )
    parser.add_argument("--scrape-interval", type=float, default=15.0, help="with --telemetry: seconds")
    parser.add_argument("--pairs", type=int, default=3, help="with --telemetry: off/on turns")
    args = parser.parse_args()
    if args.telemetry:
        return telemetry(args)
    cp = ControlPlane.create(extra_stages=[KWOK_STAGES / "scriptrun-pod-autocomplete.yaml"])
    cp.start(crds=ROOT / "crds")
    env = {"SCRIPTRUN_RESYNC_SECONDS": "60", "SCRIPTRUN_LOG_LEVEL": os.environ.get("SCRIPTRUN_LOG_LEVEL", "INFO")}
    if args.profile:
        env["SCRIPTRUN_PROFILE"] = args.profile
    op = OperatorProcess(cp, extra_env=env).start()
    rows = []
    cp.kubectl("create", "namespace", "bench-floor")
    floor = pod_floor(cp, "bench-floor")
    cp.kubectl("create", "namespace", "bench-wide-floor")
    wide, wide_cpu = wide_floor(cp, "bench-wide-floor")
    try:
        for i, (label, tasks) in enumerate(scenarios().items()):
            if args.only and args.only not in label:
                continue
            ns = f"bench-{i}"
            cp.kubectl("create", "namespace", ns)
            rows.append(run(cp, op, label, tasks, ns, args.timeout))
            print(json.dumps(rows[-1]), flush=True)
            drained = wait_for_no_pods(cp, ns)
            print(f"  ({ns}: pods collected {drained:.1f} s after the workflow finished)", flush=True)
        assert op.popen is not None
        hwm = rss_mib(op.popen.pid)[1]
    finally:
        op.stop()
        if args.keep_log:
            Path(args.keep_log).write_text(op.log.read_text())
        cp.stop()
    print()
    print(
        f"{'scenario':<26} {'tasks':>5} {'phase':>9} {'makespan s':>10} {'per task ms':>11} {'op CPU s':>9} "
        f"{'op RSS MiB':>10} {'status KiB':>10}"
    )
    for r in rows:
        print(
            f"{r['scenario']:<26} {r['tasks']:>5} {r['phase']:>9} {r['makespan_s']:>10.1f} {r['per_task_ms']:>11.1f} "
            f"{r['operator_cpu_s']:>9.1f} {r['operator_rss_peak_mib']:>10.0f} {r['status_kib']:>10.1f}"
        )
    print()
    print("CPU seconds during each scenario (2 cores; the machine's busy share covers every process):")
    for r in rows:
        parts = ", ".join(f"{k} {v:.1f}" for k, v in r["cluster_cpu_s"].items())
        print(
            f"  {r['scenario']:<26} operator {r['operator_cpu_s']:.1f}, {parts}; "
            f"machine busy {100 * r['machine_busy']:.0f}%"
        )
    print()
    print("API requests per task (all clients; watches are long-lived, so they barely show):")
    for r in rows:
        top = ", ".join(f"{k} {v:.2f}" for k, v in list(r["requests_per_task"].items())[:12])
        print(f"  {r['scenario']:<26} writes {r['writes_per_task']:.2f}/task: {top}")
    by = {r["scenario"][0]: r for r in rows}

    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    print(
        f"cluster floor, wide: 200 bare pods, 20 created at a time, until all Succeeded: {wide:.1f} s, "
        f"cluster CPU {1000 * wide_cpu / 200:.0f} ms a pod"
    )
    for r in rows:
        cluster = sum(r["cluster_cpu_s"].values())
        print(
            f"  {r['scenario']:<26} cluster CPU {1000 * cluster / r['tasks']:.0f} ms a task, "
            f"operator {1000 * r['operator_cpu_s'] / r['tasks']:.0f} ms a task: at 2 cores the machine "
            f"needs at least {(cluster + r['operator_cpu_s']) / 2:.1f} s of the {r['makespan_s']:.1f} s"
        )
    for key, limit in (("a", 4.0), ("b", 40.0)):
        if key in by:
            got = by[key]["makespan_s"]
            print(f"target ({key}) <= {limit:g} s: {got:.1f} s ({verdict(got <= limit)})")
    print(f"cluster floor: one bare pod, create -> Succeeded (median of 30, sequential): {1000 * floor:.1f} ms")
    if "c" in by:
        overhead = by["c"]["per_task_ms"] - 1000 * floor
        print(
            f"target (c) <= 50 ms a step above the floor: {by['c']['per_task_ms']:.1f} ms a step - "
            f"{1000 * floor:.1f} ms floor = {overhead:.1f} ms ({verdict(overhead <= 50)})"
        )
    for r in rows:
        cpu_ms = 1000 * r["operator_cpu_s"] / r["tasks"]
        print(f"target operator CPU <= 10 ms a task, {r['scenario']}: {cpu_ms:.1f} ms ({verdict(cpu_ms <= 10)})")
    print(f"target operator RSS < 250 MiB: peak {hwm:.0f} MiB ({verdict(hwm < 250)})")
    finished = 0
    for r in rows:
        finished += r["tasks"]
        print(
            f"operator metrics after {r['scenario']} ({finished} runs finished so far): {r['operator_series']} series"
        )
    return 0


def thread_cpu(pid: int) -> str:
    """The operator's CPU seconds so far, by thread name (the event loop is MainThread's `python`)."""
    used: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            comm = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            used[comm] = used.get(comm, 0.0) + (int(fields[11]) + int(fields[12])) / 100.0
    busiest = sorted(used.items(), key=lambda kv: -kv[1])[:6]
    return ", ".join(f"{name} {seconds:.1f}" for name, seconds in busiest)


class Scraper:
    """Reads the operator's /metrics every `interval` seconds, as Prometheus would (the cost is the
    operator's; 15 s by default, a common setting: each scrape costs about 20 ms of its CPU)."""

    def __init__(self, op: OperatorProcess, interval: float) -> None:
        import threading

        self.op, self.interval, self.stop = op, interval, threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while True:
            with contextlib.suppress(OSError):
                self.op.scrape()
            if self.stop.wait(self.interval):
                return

    def close(self) -> None:
        self.stop.set()
        self.thread.join()


def telemetry(args: argparse.Namespace) -> int:
    """Operator CPU a task with telemetry off (metrics recorded, not served; no tracing) and on
    (metrics served and scraped every --scrape-interval seconds; every span sent over OTLP/gRPC to a
    real Collector, all sampled), in turns: off, on, off, on, each on a fresh control plane with a fresh operator
    (an operator started over earlier turns' thousands of objects would pay for reading them)."""
    import tempfile

    from tests.support.otelcol import Collector

    workdir = Path(tempfile.mkdtemp(prefix="bench-otelcol-"))
    collector = Collector(workdir).start()
    base = {"SCRIPTRUN_RESYNC_SECONDS": "60", "SCRIPTRUN_LOG_LEVEL": "INFO"}
    traced = {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.grpc_endpoint,
    }
    selected = {k: v for k, v in scenarios().items() if not args.only or args.only in k}
    results: dict[tuple[str, str], list[tuple[float, float]]] = {}
    series = 0
    try:
        for turn, mode in enumerate(("off", "on") * args.pairs):
            cp = ControlPlane.create(extra_stages=[KWOK_STAGES / "scriptrun-pod-autocomplete.yaml"])
            cp.start(crds=ROOT / "crds")
            env = {**base, "SCRIPTRUN_METRICS_PORT": "0"}
            if mode == "on":
                env = {**base, **(traced if args.on != "metrics" else {})}
                if args.on == "tracing":
                    env["SCRIPTRUN_METRICS_PORT"] = "0"
            if args.profile:
                env["SCRIPTRUN_PROFILE"] = f"{args.profile}.{turn}-{mode}"
            op = OperatorProcess(cp, extra_env=env).start()  # extra_env wins over its own metrics port
            scraper = Scraper(op, args.scrape_interval) if mode == "on" and args.on != "tracing" else None
            try:
                for i, (label, tasks) in enumerate(selected.items()):
                    ns = f"tel-{i}"
                    cp.kubectl("create", "namespace", ns)
                    row = run(cp, op, label, tasks, ns, args.timeout)
                    cpu_ms = 1000 * row["operator_cpu_s"] / row["tasks"]
                    results.setdefault((label, mode), []).append((cpu_ms, row["makespan_s"]))
                    print(
                        f"{mode:>3} {label:<26} makespan {row['makespan_s']:.1f} s, "
                        f"operator CPU {cpu_ms:.1f} ms a task",
                        flush=True,
                    )
                    wait_for_no_pods(cp, ns)
                if mode == "on" and args.on != "tracing":
                    series = operator_series(op)
                assert op.popen is not None and collector.popen is not None
                print(
                    f"    operator CPU by thread: {thread_cpu(op.popen.pid)}; the Collector's CPU so far "
                    f"(it shares the 2 cores): {cpu_seconds(collector.popen.pid):.1f} s",
                    flush=True,
                )
            finally:
                if scraper is not None:
                    scraper.close()
                op.stop()
                cp.stop()
        spans = len(collector.spans())
    finally:
        collector.stop(check=False)
        shutil.rmtree(workdir, ignore_errors=True)
    print()
    print(f"spans the Collector received: {spans}; operator series after the last turn: {series}")
    totals = {"off": 0.0, "on": 0.0}
    for label, tasks in selected.items():
        off, on = results[(label, "off")], results[(label, "on")]
        ratio = (sum(x for x, _ in on) / len(on)) / (sum(x for x, _ in off) / len(off))
        spread = max(x for x, _ in off) / min(x for x, _ in off)
        for mode, got in (("off", off), ("on", on)):
            totals[mode] += len(tasks) * sum(x for x, _ in got) / len(got)
        print(
            f"{label:<26} operator CPU a task (makespan): "
            f"off {', '.join(f'{x:.1f} ms ({m:.1f} s)' for x, m in off)}; "
            f"on {', '.join(f'{x:.1f} ms ({m:.1f} s)' for x, m in on)}: "
            f"on/off {ratio:.2f} ({100 * (ratio - 1):+.0f}%); "
            f"identical off turns differ by up to {100 * (spread - 1):.0f}%"
        )
    ratio = totals["on"] / totals["off"]
    print(
        f"target: telemetry on costs < 10% more operator CPU, over all {sum(map(len, selected.values()))} tasks "
        f"(mean of each scenario's turns): {100 * (ratio - 1):+.1f}% ({'met' if ratio < 1.10 else 'NOT met'})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
