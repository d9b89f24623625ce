"""The `scriptrun` command: operator, crds, run (local backend)."""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scriptrun import __version__
from scriptrun.model import contract

if TYPE_CHECKING:
    from scriptrun.local.cost import LocalPricing
    from scriptrun.local.gates import BeforeReport
    from scriptrun.model.gates import GateResult
    from scriptrun.model.scriptrun import RunCost

NAMESPACE_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")  # a DNS-1123 label


def _cmd_crds(args: argparse.Namespace) -> int:
    from scriptrun.model.crd import all_crds, render

    crds = all_crds()
    if args.write:
        for directory in args.write:
            out = Path(directory)
            out.mkdir(parents=True, exist_ok=True)
            for filename, crd in crds.items():
                (out / filename).write_text(render(crd))
                print(f"wrote {out / filename}", file=sys.stderr)
    else:
        sys.stdout.write("---\n".join(render(c) for c in crds.values()))
    return 0


def _cmd_operator(args: argparse.Namespace) -> int:
    import asyncio
    import logging
    import os

    from scriptrun import deferred_import
    from scriptrun.controllers import malloc
    from scriptrun.k8s import lazy_client

    malloc.tune()  # before the imports and everything after them allocate (controllers/malloc.py)
    lazy_client.install()  # before Kopf imports kubernetes_asyncio (k8s/lazy_client.py)
    for name in deferred_import.OPERATOR_DEFERRED:  # the CEL library's command line (deferred_import.py)
        deferred_import.defer(name)

    import kopf

    import scriptrun.handlers  # noqa: F401 - registers the handlers
    from scriptrun.controllers.peering import PeeringConfig

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("kopf").setLevel(logging.INFO if args.verbose else logging.WARNING)
    logging.getLogger("aiohttp").setLevel(logging.WARNING)
    if os.environ.get("SCRIPTRUN_LOG_LEVEL"):
        logging.getLogger("scriptrun").setLevel(os.environ["SCRIPTRUN_LOG_LEVEL"])
    namespaces = args.namespace or []
    for namespace in namespaces:  # names, not Kopf's globs: the pods' own watch asks for each by name
        if not NAMESPACE_NAME.fullmatch(namespace):
            print(f"error: -n {namespace!r}: not a namespace name (lowercase letters, digits, '-')", file=sys.stderr)
            return 2
    heartbeat_ns = os.environ.get("SCRIPTRUN_HEARTBEAT_NAMESPACE") or os.environ.get("POD_NAMESPACE")
    if namespaces and heartbeat_ns and heartbeat_ns not in namespaces:
        # the heartbeat Lease must be where the operator watches, or it is never seen come back
        os.environ["SCRIPTRUN_HEARTBEAT_NAMESPACE"] = namespaces[0]
    profile_path = os.environ.get("SCRIPTRUN_PROFILE")  # for benchmarks: cProfile the whole operator
    if profile_path:
        import atexit
        import cProfile
        import signal

        profiler = cProfile.Profile()
        profiler.enable()
        atexit.register(lambda: profiler.dump_stats(profile_path))

        def dump_and_exit(*_: object) -> None:
            profiler.dump_stats(profile_path)
            os._exit(0)

        signal.signal(signal.SIGTERM, dump_and_exit)
    os.environ["SCRIPTRUN_WATCH_NAMESPACES"] = ",".join(namespaces)
    try:
        peers = PeeringConfig.from_env(os.environ, namespaces)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if peers is not None:
        os.environ.update(peers.exported())  # the start-up handler's config reads the same identity and priority
    asyncio.run(
        kopf.operator(
            standalone=peers is None,
            peering_name=peers.name if peers else None,
            priority=peers.priority if peers else None,
            identity=peers.identity if peers else None,  # type: ignore[arg-type]  # Kopf's Identity is a NewType of str
            clusterwide=not namespaces,
            namespaces=namespaces,
            liveness_endpoint=args.liveness,
        )
    )
    return 0


class _UsageError(ValueError):
    pass


def _parameters(items: list[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items or []:
        if "=" not in item:
            raise _UsageError(f"-p expects NAME=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        out[key] = value
    return out


def _print_object(obj: dict[str, Any], fmt: str) -> None:
    if fmt == "json":
        print(json.dumps(obj, indent=2))
    else:
        import yaml

        print(yaml.safe_dump(obj, sort_keys=False))


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def caused_by_interrupt(err: BaseException) -> bool:
    """Whether `err` wraps an interrupt: one that lands inside a library which turns the exceptions
    of Python code it calls into its own (pydantic-core's serializer does) comes back as that
    library's error, with the KeyboardInterrupt as its cause."""
    seen: set[int] = set()
    cause: BaseException | None = err
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, KeyboardInterrupt):
            return True
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return False


def _cmd_run(args: argparse.Namespace) -> int:
    """Exit 2 with one `error: FILE: ...` line for a manifest (or option) that cannot run, before
    anything runs; a warning line for each field that is ignored locally; on Ctrl-C or SIGTERM the
    running attempts are stopped, the work directory removed, and the exit code is 130."""
    from scriptrun.local.cost import PriceError, pricing
    from scriptrun.local.manifest import ManifestError, load
    from scriptrun.model.scriptrun import ScriptRun

    try:
        overrides = _parameters(args.parameter)
        manifest = load(Path(args.file), overrides)
        prices = None if args.no_cost else pricing(args.price)  # an unusable price is an error, not a default
    except ManifestError as err:
        print("\n".join(err.lines(args.file)), file=sys.stderr)
        return 2
    except (PriceError, _UsageError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # a check that broke on strange input: still one line, still nothing run
        what = " ".join(str(err).split())[:200]
        print(
            f"error: {args.file}: cannot be checked ({type(err).__name__}: {what}); please report it", file=sys.stderr
        )
        return 2
    for line in manifest.warnings:
        print(f"warning: {line}", file=sys.stderr)
    import signal
    import threading

    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if main_thread else None
    try:
        if isinstance(manifest.obj, ScriptRun):
            return _run_scriptrun(manifest.obj, manifest.configmaps, args, prices)
        return _run_workflow(manifest.obj, manifest.configmaps, overrides, args, prices)
    except (KeyboardInterrupt, Exception) as err:
        if not caused_by_interrupt(err):
            raise
        print("scriptrun: interrupted; the running attempts were stopped", file=sys.stderr)
        return 130
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


def _write_gate_reports(args: argparse.Namespace, reports: dict[str, BeforeReport]) -> None:
    """--sarif and --sbom: the before-gates' findings (a workflow's tasks in one log) and SBOMs."""
    from scriptrun.local.gates import merged_sarif

    if args.sarif:
        Path(args.sarif).write_text(json.dumps(merged_sarif(reports) or {"version": "2.1.0", "runs": []}, indent=2))
    if args.sbom:
        boms = {task: r.sbom for task, r in reports.items() if r.sbom is not None}
        document = boms.get("") if set(boms) <= {""} else boms
        Path(args.sbom).write_text(json.dumps(document or {}, indent=2))


def _run_scriptrun(run: Any, configmaps: dict[str, Any], args: argparse.Namespace, prices: LocalPricing | None) -> int:
    from scriptrun.local.output import Progress
    from scriptrun.local.runner import run_local

    progress = Progress(run.metadata.name or Path(args.file).stem, stream=sys.stderr)
    reports: dict[str, BeforeReport] = {}
    final = run_local(run, configmaps=configmaps, report=progress.event, pricing=prices, gate_reports=reports)
    if args.junit:
        from scriptrun.local.junit import scriptrun_report

        scriptrun_report(final, Path(args.junit))
    _write_gate_reports(args, reports)
    if args.output in ("json", "yaml"):
        _print_object(final.dump(), args.output)
    else:
        progress.summary(final, prices.label if prices else None)
    return 0 if final.status.phase.value == "Succeeded" else 1


def _run_workflow(
    wf: Any,
    configmaps: dict[str, Any],
    overrides: dict[str, str],
    args: argparse.Namespace,
    prices: LocalPricing | None,
) -> int:
    from scriptrun.local.junit import workflow_report
    from scriptrun.local.validate import plan as build_plan
    from scriptrun.local.wf_output import WorkflowProgress
    from scriptrun.local.workflow import run_workflow_local

    plan = build_plan(wf.spec, overrides=overrides)  # checked when the manifest was loaded
    costs: dict[str, RunCost] = {}
    gates: dict[str, list[GateResult]] = {}
    reports: dict[str, BeforeReport] = {}
    with WorkflowProgress(stream=sys.stderr) as progress:
        final = run_workflow_local(
            wf,
            overrides=overrides,
            on_change=progress.change,
            on_event=progress.event,
            pricing=prices,
            costs=costs,
            configmaps=configmaps,
            gates=gates,
            gate_reports=reports,
        )
    if args.junit:
        workflow_report(final, plan, Path(args.junit), gates)
    _write_gate_reports(args, reports)
    if args.output in ("json", "yaml"):
        _print_object(final.dump(), args.output)
    else:
        progress.summary(final, plan, costs, prices.label if prices else None)
    return 0 if final.status.phase == "Succeeded" else 1


def _cmd_prometheus_rule(args: argparse.Namespace) -> int:
    """The manifest's spec.alerts as a PrometheusRule on stdout; what does not translate on stderr."""
    import yaml

    from scriptrun.local.manifest import ManifestError, load
    from scriptrun.telemetry.alert_rules import prometheus_rule

    try:
        manifest = load(Path(args.file))
    except ManifestError as err:
        print("\n".join(err.lines(args.file)), file=sys.stderr)
        return 2
    rule, skipped = prometheus_rule(manifest.obj.kind, manifest.obj)
    for why in skipped:
        print(f"not translated: {why}", file=sys.stderr)
    if rule is None:
        print(f"error: {args.file}: no alert translates to PromQL", file=sys.stderr)
        return 1
    print(yaml.safe_dump(rule, sort_keys=False), end="")
    return 0


def _cmd_gate(args: argparse.Namespace) -> int:
    from scriptrun.scan.command import main as gate_main

    return gate_main(
        script=args.script, osv_dir=args.osv_dir, work=args.work_dir, termination_path=args.termination_path
    )


def _cmd_monitor(args: argparse.Namespace) -> int:
    import logging
    import os

    from scriptrun.monitor.sidecar import MonitorConfig, run_monitor

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    labels = contract.monitor_labels(os.environ)
    config = MonitorConfig(
        run_dir=Path(args.run_dir),
        interval=args.interval,
        port=args.port,
        termination_path=Path(args.termination_path),
        labels=labels,
        memory_detail=args.memory_detail,
        exit_when_done=args.exit_when_done,
        start_timeout=args.start_timeout,
    )
    return run_monitor(config)


def _interval(text: str) -> float:
    value = float(text)
    if not 0.1 <= value <= 60:
        raise argparse.ArgumentTypeError("the interval must be between 0.1 and 60 seconds")
    return value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="scriptrun", description="Run Python scripts and workflows as pods.")
    p.add_argument("--version", action="version", version=f"scriptrun {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    op = sub.add_parser("operator", help="run the operator against the current cluster")
    op.add_argument("-n", "--namespace", action="append", help="watch this namespace (repeatable); default all")
    op.add_argument("--liveness", default=None, help="liveness endpoint, e.g. http://0.0.0.0:8080/healthz")
    op.add_argument("-v", "--verbose", action="store_true")
    op.set_defaults(func=_cmd_operator)

    crds = sub.add_parser("crds", help="print the CustomResourceDefinitions (or write them to a directory)")
    crds.add_argument("--write", metavar="DIR", action="append", help="write one file per CRD into DIR (repeatable)")
    crds.set_defaults(func=_cmd_crds)

    mon = sub.add_parser("monitor", help="the usage monitor sidecar (runs inside a run pod)")
    mon.add_argument("--interval", type=_interval, default=1.0, help="sampling interval in seconds (0.1-60)")
    mon.add_argument("--port", type=int, default=9090, help="Prometheus metrics port")
    mon.add_argument("--run-dir", default=contract.RUN_DIR, help="the directory shared with the main container")
    mon.add_argument("--termination-path", default=contract.TERMINATION_LOG)
    mon.add_argument("--memory-detail", action="store_true", help="also sample USS/PSS (reads smaps_rollup)")
    mon.add_argument("--exit-when-done", action="store_true", help="exit after the summary (default: on SIGTERM)")
    mon.add_argument("--start-timeout", type=float, default=None, help="give up waiting for the script after N s")
    mon.set_defaults(func=_cmd_monitor)

    rule = sub.add_parser("prometheus-rule", help="print a manifest's spec.alerts as a PrometheusRule (PromQL)")
    rule.add_argument("file")
    rule.set_defaults(func=_cmd_prometheus_rule)

    gate = sub.add_parser("gate", help="the before-gates (runs inside a run pod, configured by $SCRIPTRUN_GATES)")
    gate.add_argument("--script", default=None, help="the script file (none for script.command)")
    gate.add_argument("--osv-dir", default=contract.OSV_DIR, help="the OSV records of the dependency scan")
    gate.add_argument("--work-dir", default=contract.RUN_DIR, help="a writable scratch directory")
    gate.add_argument("--termination-path", default=contract.TERMINATION_LOG)
    gate.set_defaults(func=_cmd_gate)

    run = sub.add_parser("run", help="run a ScriptRun or Workflow manifest on this machine (no cluster)")
    run.add_argument("file")
    run.add_argument("-o", "--output", choices=["text", "json", "yaml"], default="text")
    run.add_argument("-p", "--parameter", action="append", metavar="NAME=VALUE", help="workflow parameter")
    run.add_argument("--junit", metavar="FILE", help="write a JUnit XML report: a test case per task and per gate")
    run.add_argument("--sarif", metavar="FILE", help="write the before-gates' findings as SARIF 2.1.0")
    run.add_argument(
        "--sbom", metavar="FILE", help="write the dependency scan's CycloneDX SBOM (a workflow: one per task, by task)"
    )
    run.add_argument(
        "--price",
        metavar="FILE|RATES",
        help="price this machine for the cost estimate: a price table (the operator's SCRIPTRUN_PRICES format; "
        "entry `local`, else `default`) or hourly rates cpu=0.031611,memory=0.004237[,gpu=0.95][,currency=USD] "
        "per core, GiB and GPU; default: the table $SCRIPTRUN_PRICES names, else OpenCost's default rates (USD)",
    )
    run.add_argument("--no-cost", action="store_true", help="no cost estimate")
    run.set_defaults(func=_cmd_run)
    from scriptrun.cli_cluster import add_commands

    add_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
