"""Progress for `scriptrun run`: rich on a terminal, plain lines otherwise."""

from __future__ import annotations

import time
from typing import TextIO

from rich.console import Console
from rich.table import Table

from scriptrun.engine.run import RunEvent
from scriptrun.local.cost import cost_line
from scriptrun.model.scriptrun import ScriptRun

STYLE = {"Normal": "cyan", "Warning": "yellow"}


class Progress:
    def __init__(self, name: str, *, stream: TextIO) -> None:
        self.name = name
        self.console = Console(file=stream, highlight=False)
        self.began = time.monotonic()

    def event(self, event: RunEvent) -> None:
        elapsed = time.monotonic() - self.began
        if self.console.is_terminal:
            self.console.print(
                f"[dim]{elapsed:6.1f}s[/] [bold]{self.name}[/] [{STYLE[event.type]}]{event.reason}[/]: {event.message}"
            )
        else:
            self.console.print(f"{elapsed:6.1f}s {self.name} {event.reason}: {event.message}", markup=False)

    def summary(self, run: ScriptRun, cost_label: str | None = None) -> None:
        """The attempts' table, the phase, the usage and (with `cost_label`, when priced) the estimate."""
        status = run.status
        table = Table(title=f"ScriptRun {self.name}: {status.phase.value}", title_justify="left")
        for col in ("attempt", "phase", "exit code", "reason", "started", "finished"):
            table.add_column(col)
        for att in status.attempts:
            table.add_row(
                str(att.attempt),
                att.phase.value,
                "" if att.exit_code is None else str(att.exit_code),
                f"{att.reason}: {att.message}" if att.reason and att.message else att.reason or "",
                (att.start_time or "")[11:23],
                (att.finish_time or "")[11:23],
            )
        out = Console(highlight=False)
        out.print(table)
        out.print(f"phase: {status.phase.value}  duration: {status.duration}  message: {status.message}")
        usage = status.usage or {}
        if usage.get("available"):
            out.print(
                "usage: cpu avg {cpuAvgPercent}% max {cpuMaxPercent}% ({userTimeSeconds}s user, "
                "{systemTimeSeconds}s sys)  memory max {memoryMaxMb} MiB avg {memoryAvgMb} MiB  "
                "processes {processes}  samples {samples}".format_map(_Missing(usage))
            )
        for gate in status.gates or []:
            detail = f": {gate.message}" if gate.message else ""
            out.print(f"gate {gate.name} ({gate.stage}): {gate.result}{detail}", markup=False, soft_wrap=True)
        if cost_label is not None and status.cost is not None:
            out.print(cost_line(status.cost, cost_label), markup=False, soft_wrap=True)


class _Missing(dict[str, object]):
    def __missing__(self, key: str) -> str:
        return "?"
