"""`scriptrun submit|get|logs|retry|stop|suspend|resume`: the cluster side of the CLI."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # rich and the client are imported when a command runs: `scriptrun monitor` stays small
    from rich.console import Console

    from scriptrun.k8s.api import Kube


def _finished(obj: dict[str, Any]) -> bool:
    """A Workflow or ScriptRun in a final phase (the models' phase enums say which are final)."""
    from scriptrun.model.scriptrun import RunPhase
    from scriptrun.model.workflow import WorkflowPhase

    phase = (obj.get("status") or {}).get("phase") or "Pending"
    enum: type[RunPhase] | type[WorkflowPhase] = WorkflowPhase if obj.get("kind") == "Workflow" else RunPhase
    return phase in enum.__members__.values() and enum(phase).terminal


def _render(obj: dict[str, Any], console: Console) -> None:
    from rich.table import Table

    meta, status = obj["metadata"], obj.get("status") or {}
    kind = obj["kind"]
    console.print(
        f"[bold]{kind} {meta['namespace']}/{meta['name']}[/]  phase: {status.get('phase', 'Pending')}  "
        f"{'progress: ' + status['progress'] + '  ' if status.get('progress') else ''}"
        f"duration: {status.get('duration', '-')}"
    )
    if status.get("message"):
        console.print(f"message: {status['message']}")
    table = Table(show_edge=False)
    if kind == "Workflow":
        for col in ("task", "phase", "attempts", "duration", "exit", "cpu avg %", "mem max MiB", "message"):
            table.add_column(col)
        for name, t in (status.get("tasks") or {}).items():
            usage = t.get("usage") or {}
            table.add_row(
                name,
                t.get("phase", ""),
                str(t.get("attempts", "")),
                t.get("duration", ""),
                str(t.get("exitCode", "")),
                str(usage.get("cpuAvgPercent", "")),
                str(usage.get("memoryMaxMb", "")),
                (t.get("message") or "")[:70],
            )
    else:
        for col in ("attempt", "pod", "phase", "exit", "reason", "started", "finished"):
            table.add_column(col)
        for a in status.get("attempts") or []:
            table.add_row(
                str(a.get("attempt")),
                a.get("podName", ""),
                a.get("phase", ""),
                str(a.get("exitCode", "")),
                a.get("reason", ""),
                a.get("startTime", ""),
                a.get("finishTime", ""),
            )
    console.print(table)
    usage = status.get("usage")
    if kind == "ScriptRun" and usage and usage.get("available"):
        console.print(
            f"usage: cpu avg {usage.get('cpuAvgPercent')}%  memory max {usage.get('memoryMaxMb')} MiB  "
            f"samples {usage.get('samples')}"
        )


def _output(obj: dict[str, Any], fmt: str, console: Console) -> None:
    if fmt == "json":
        print(json.dumps(obj, indent=2))
    elif fmt == "yaml":
        import yaml

        print(yaml.safe_dump(obj, sort_keys=False))
    else:
        _render(obj, console)


class CliError(Exception):
    """What the CLI reports in one line (exit 1), without a traceback."""


async def _main(args: argparse.Namespace, docs: list[dict[str, Any]]) -> int:
    from rich.console import Console

    from scriptrun.build import names
    from scriptrun.k8s.api import Kube, KubeError
    from scriptrun.k8s.credentials import CredentialsError, load_credentials

    console = Console(highlight=False)
    try:
        credentials = await load_credentials("kubeconfig")
    except CredentialsError as err:  # no usable kubeconfig or in-cluster credentials: one line, no traceback
        print(f"error: {err}", file=sys.stderr)
        return 1
    kube = Kube(credentials.api_client())
    ns = args.namespace or credentials.namespace
    try:
        if args.command == "submit":
            return await _submit(kube, ns, docs, args.watch, console)
        obj = await _find(kube, ns, args.name)
        if args.command == "get":
            _output(obj, args.output, console)
        elif args.command == "logs":
            await _logs(kube, ns, obj, args.task, console)
        elif args.command == "retry":
            if obj["kind"] != "Workflow":
                raise CliError("retry works on Workflows (a ScriptRun retries by its retryStrategy)")
            if (obj.get("status") or {}).get("phase") != "Failed":
                raise CliError(f"{args.name} has not failed: nothing to retry")
            round_ = int((obj.get("status") or {}).get("retryRound") or 0) + 1
            await _patch(kube, obj, {"metadata": {"annotations": {names.ANNOTATION_RETRY: str(round_)}}})
            console.print(f"workflow {args.name}: retry {round_} requested (failed tasks run again)")
        elif args.command == "stop":
            if obj["kind"] == "Workflow":
                mode = "Terminate" if args.terminate else "Stop"
                await _patch(kube, obj, {"spec": {"shutdown": mode}})
                console.print(f"workflow {args.name}: shutdown {mode}")
            else:
                await _patch(kube, obj, {"spec": {"terminate": True}})
                console.print(f"scriptrun {args.name}: terminating")
        elif args.command in ("suspend", "resume"):
            if obj["kind"] != "Workflow":
                raise CliError("suspend/resume work on Workflows")
            await _patch(kube, obj, {"spec": {"suspend": args.command == "suspend"}})
            console.print(f"workflow {args.name}: {'suspended' if args.command == 'suspend' else 'resumed'}")
        return 0
    except CliError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KubeError as err:  # the API server's own words (they name the object)
        print(f"error: {err.message}", file=sys.stderr)
        return 1
    finally:
        await kube.close()


async def _find(kube: Kube, ns: str, name: str, kind: str | None = None) -> dict[str, Any]:
    from scriptrun.k8s.api import PLURALS

    kinds = [kind] if kind else ["Workflow", "ScriptRun"]
    for k in kinds:
        obj = await kube.get_custom(PLURALS[k], ns, name)
        if obj is not None:
            return obj
    raise CliError(f"no {' or '.join(kinds)} named {name!r} in namespace {ns!r}")


async def _patch(kube: Kube, obj: dict[str, Any], patch: dict[str, Any]) -> None:
    from scriptrun.k8s.api import PLURALS

    kind, meta = obj["kind"], obj["metadata"]
    if await kube.patch_custom(PLURALS[kind], meta["namespace"], meta["name"], patch) is None:
        raise CliError(f"{kind} {meta['name']!r} was deleted meanwhile")


def _read_manifest(path: str) -> list[dict[str, Any]]:
    """The documents of the manifest at `path`, read as `scriptrun run` reads one (at most 4 MiB of
    UTF-8; YAML bounded in nesting and in what its aliases expand to, JSON data only): Workflows and
    ScriptRuns, checked against the models (what the API server would refuse is refused here), and
    ConfigMaps. Raises ManifestError (one line, then the fields)."""
    from scriptrun.local.manifest import ManifestError as FileError
    from scriptrun.local.manifest import read_text
    from scriptrun.local.yamlsafe import YamlError, load_all
    from scriptrun.model.manifest import ManifestError, parse_object

    try:
        docs = [d for d in load_all(read_text(Path(path))) if d]
    except (FileError, YamlError) as err:
        raise ManifestError(f"{path}: {err}") from err
    for doc in docs:
        if not isinstance(doc, dict):
            raise ManifestError(f"{path}: every document must be a mapping")
        if doc.get("kind") != "ConfigMap":
            parse_object(doc, path)  # a Workflow or ScriptRun, or an error
        elif not isinstance(doc.get("metadata"), dict):
            raise ManifestError(f"{path}: ConfigMap metadata: must be a mapping")
    return docs


async def _submit(kube: Kube, ns: str, docs: list[dict[str, Any]], watch: bool, console: Console) -> int:
    from scriptrun.k8s.api import PLURALS, KubeError

    main: dict[str, Any] | None = None
    for doc in docs:
        meta = doc.get("metadata") or {}
        what = f"{doc['kind'].lower()}/{meta.get('name') or meta.get('generateName', '') + '*'}"
        try:
            created = await kube.create_object(ns, doc)
        except KubeError as err:
            raise CliError(f"cannot create {what}: {err.message}") from None
        if created is None:
            raise CliError(f"{what} already exists in namespace {ns!r}")
        console.print(f"{doc['kind'].lower()}/{created['metadata']['name']} created")
        if doc.get("kind") in PLURALS:
            main = created
    if not watch or main is None:
        return 0
    seen: dict[str, str] = {}
    while True:
        obj = await _find(kube, ns, main["metadata"]["name"], main["kind"])
        status = obj.get("status") or {}
        for name, t in (status.get("tasks") or {}).items():
            if seen.get(name) != t.get("phase"):
                seen[name] = t.get("phase")
                console.print(f"  {name}: {t.get('phase')}")
        if _finished(obj):
            _render(obj, console)
            return 0 if status["phase"] == "Succeeded" else 1
        await asyncio.sleep(1)


async def _logs(kube: Kube, ns: str, obj: dict[str, Any], task: str | None, console: Console) -> None:
    from scriptrun.build import names
    from scriptrun.k8s.api import KubeError

    runs = [obj]
    if obj["kind"] == "Workflow":
        workflow = obj["metadata"]["name"]
        selector = f"{names.LABEL_WORKFLOW}={names.label_value(workflow)}"
        children = await kube.list_custom("scriptruns", ns, selector)
        if task:
            value = names.label_value(task)
            children = [
                c
                for c in children
                if value in ((c["metadata"].get("labels") or {}).get(k) for k in (names.LABEL_TASK, names.LABEL_NODE))
            ]
            if not children:
                raise CliError(f"no task {task!r} has run in workflow {workflow}")
        runs = sorted(children, key=lambda c: c["metadata"]["name"])
    for run in runs:
        attempts = (run.get("status") or {}).get("attempts") or []
        if not attempts:
            continue
        pod = attempts[-1]["podName"]
        console.print(f"[bold]==> {run['metadata']['name']} ({pod})[/]")
        try:
            text = await kube.pod_log(ns, pod)
        except KubeError as err:  # the API server proxies to the kubelet; that hop can fail too
            raise CliError(f"cannot read the logs of pod {pod}: {err.message}") from None
        if text is None:
            raise CliError(f"cannot read the logs of pod {pod}: the pod is gone")
        print(text, end="")


def add_commands(sub: Any) -> None:
    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("-n", "--namespace", help="namespace (default: the current context's)")
        p.set_defaults(func=run_cluster_command)

    p = sub.add_parser("submit", help="create a Workflow or ScriptRun in the cluster")
    p.add_argument("-f", "--file", required=True)
    p.add_argument("--watch", action="store_true", help="follow it until it finishes (exit 0 if it succeeded)")
    common(p)
    p = sub.add_parser("get", help="show a Workflow or ScriptRun")
    p.add_argument("name")
    p.add_argument("-o", "--output", choices=["text", "json", "yaml"], default="text")
    common(p)
    p = sub.add_parser("logs", help="print the script's log (every task's, or one with --task)")
    p.add_argument("name")
    p.add_argument("--task")
    common(p)
    p = sub.add_parser("retry", help="run a failed Workflow's failed tasks again (successful ones are kept)")
    p.add_argument("name")
    common(p)
    p = sub.add_parser("stop", help="stop a Workflow (running tasks finish, exit handlers run) or a ScriptRun")
    p.add_argument("name")
    p.add_argument("--terminate", action="store_true", help="stop now: running tasks are killed, no exit handlers")
    common(p)
    for verb in ("suspend", "resume"):
        p = sub.add_parser(verb, help=f"{verb} a Workflow (no new task starts while suspended)")
        p.add_argument("name")
        common(p)


def run_cluster_command(args: argparse.Namespace) -> int:
    docs: list[dict[str, Any]] = []
    if args.command == "submit":  # the file first: bad input needs neither the client nor a cluster
        from scriptrun.model.manifest import ManifestError

        try:
            docs = _read_manifest(args.file)
        except ManifestError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    return asyncio.run(_main(args, docs))
