"""Workflow progress for `scriptrun run`: a live rich table on a terminal, plain lines otherwise;
a final table with each task's monitor summary."""

from __future__ import annotations

import time
from typing import TextIO

from rich.console import Console
from rich.live import Live
from rich.measure import Measurement
from rich.table import Table

from scriptrun.cost.run import PLACES
from scriptrun.engine.dag import Plan
from scriptrun.engine.workflow import WorkflowEvent
from scriptrun.local.cost import amounts, money, total_line
from scriptrun.model.scriptrun import RunCost
from scriptrun.model.workflow import TaskSummary, Workflow

STYLE = {
    "Succeeded": "green",
    "Failed": "red",
    "Running": "cyan",
    "Pending": "dim",
    "Skipped": "yellow",
    "Omitted": "yellow",
}


def task_table(wf: Workflow, plan: Plan, costs: dict[str, RunCost] | None = None) -> Table:
    """The tasks' table; with `costs` (the local estimates by node id) an "est. cost" column."""
    status = wf.status
    table = Table(title=f"Workflow {wf.metadata.name}: {status.phase} {status.progress or ''}", title_justify="left")
    for col in ("task", "phase", "attempts", "duration", "exit", "cpu avg %", "mem max MiB"):
        table.add_column(col)
    currencies = {c for cost in (costs or {}).values() for c in amounts(cost)}
    one = next(iter(currencies)) if len(currencies) == 1 else None
    if costs is not None:  # narrow: the amount alone under "est. USD" when the currency is one
        table.add_column(f"est. {one}" if one else "est. cost", no_wrap=True)
    table.add_column("message")
    for node_id, node in plan.nodes.items():
        s = status.tasks.get(node_id) or TaskSummary(phase="Pending")
        usage = s.usage or {}
        cells = [
            node.display,
            f"[{STYLE.get(s.phase, '')}]{s.phase}[/]",
            str(s.attempts or ""),
            s.duration or "",
            "" if s.exit_code is None else str(s.exit_code),
            str(usage.get("cpuAvgPercent", "")),
            str(usage.get("memoryMaxMb", "")),
        ]
        if costs is not None:
            cost = costs.get(node_id)
            shown = amounts(cost) if cost is not None else {}
            cells.append(f"{shown[one].quantize(PLACES)}" if one and one in shown else money(shown))
        table.add_row(*cells, (s.message or "")[:60])
    return table


class WorkflowProgress:
    def __init__(self, *, stream: TextIO) -> None:
        self.console = Console(file=stream, highlight=False)
        self.began = time.monotonic()
        self.seen: dict[str, str] = {}
        self.live: Live | None = None

    def __enter__(self) -> WorkflowProgress:
        if self.console.is_terminal:
            self.live = Live(console=self.console, refresh_per_second=4, transient=True)
            self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.__exit__(None, None, None)

    def change(self, wf: Workflow, plan: Plan) -> None:
        if self.live is not None:
            self.live.update(task_table(wf, plan))
            return
        elapsed = time.monotonic() - self.began
        for node_id, summary in wf.status.tasks.items():
            if self.seen.get(node_id) != summary.phase:
                self.seen[node_id] = summary.phase
                extra = f" ({summary.message})" if summary.message and summary.phase != "Succeeded" else ""
                self.console.print(
                    f"{elapsed:6.1f}s {plan.nodes[node_id].display} {summary.phase}{extra}", markup=False
                )

    def event(self, event: WorkflowEvent) -> None:
        if self.live is None:
            elapsed = time.monotonic() - self.began
            self.console.print(f"{elapsed:6.1f}s {event.reason}: {event.message}", markup=False)

    def summary(
        self, wf: Workflow, plan: Plan, costs: dict[str, RunCost] | None = None, cost_label: str | None = None
    ) -> None:
        """The final table (with each task's estimate when it fits), the phase and (with `cost_label`)
        the estimate: the sum of the tasks' `costs`."""
        priced = costs if cost_label is not None else None
        out = Console(highlight=False)
        table = task_table(wf, plan, priced)
        natural = Measurement.get(out, out.options.update_width(10_000), table).maximum
        if priced is not None and natural > out.width:  # no room to spare: the total line only
            table = task_table(wf, plan)
        out.print(table)
        out.print(
            f"phase: {wf.status.phase}  progress: {wf.status.progress}  duration: {wf.status.duration}  "
            f"message: {wf.status.message}"
        )
        if priced is not None and cost_label is not None:
            out.print(total_line(priced, cost_label), markup=False, soft_wrap=True)
