"""Keep the logs of a failed test run: the control plane's work dir (and the real node's) is removed at
teardown, so when a test fails its *.log files are copied to a directory that survives the run.

    $SCRIPTRUN_TEST_LOGS/<tier>/                                      if SCRIPTRUN_TEST_LOGS is set
    ${SCRIPTRUN_CACHE:-~/.cache/scriptrun}/test-logs/<UTC time>-<tier>/  else (the newest KEEP are kept)

What is kept: the work dir's top-level *.log (etcd, kube-apiserver, kube-controller-manager,
kube-scheduler, kwok, operator*.log; on the real node also kubelet, kube-proxy, containerd, forwarder)
and the real node's container logs (pod-logs/<ns>_<pod>_<uid>/<container>/N.log, the operator's among
them), plus failures.txt naming the failed tests. Each later failure in the same run copies again (the
logs only grow), into the same directory.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

from tests.support.controlplane import ControlPlane

KEEP = 5
POD_LOGS = "pod-logs"  # the real node's kubelet podLogsDir (tests/support/realnode.py)
STAMPED = re.compile(r"^\d{8}T\d{6}Z-")


def logs_root() -> Path:
    cache = Path(os.environ.get("SCRIPTRUN_CACHE", Path.home() / ".cache" / "scriptrun"))
    return cache / "test-logs"


def log_files(workdir: Path) -> list[Path]:
    """The logs worth keeping under `workdir`, as paths relative to it."""
    if not workdir.is_dir():
        return []
    found = [p.relative_to(workdir) for p in workdir.glob("*.log") if p.is_file()]
    pods = workdir / POD_LOGS
    if pods.is_dir():  # not a recursive search of the whole work dir: it holds image root filesystems
        found += [p.relative_to(workdir) for p in pods.rglob("*.log*") if p.is_file() and not p.is_symlink()]
    return sorted(found)


def copy_logs(workdir: Path, dest: Path) -> list[Path]:
    """Copy `workdir`'s logs into `dest`, keeping their relative paths; returns the copies."""
    copied = []
    for rel in log_files(workdir):
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):  # a log removed or unreadable meanwhile: keep the others
            shutil.copyfile(workdir / rel, target)
            copied.append(target)
    return copied


def new_log_dir(tier: str, root: Path, keep: int = KEEP, now: datetime | None = None) -> Path:
    """root/<UTC time>-<tier>, created; older such directories beyond the newest `keep` are removed."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    root.mkdir(parents=True, exist_ok=True)
    dest = root / f"{stamp}-{tier}"
    try:
        dest.mkdir()
    except FileExistsError:  # another run, the same second
        dest = root / f"{stamp}-{tier}-{os.getpid()}"
        dest.mkdir(exist_ok=True)
    prune(root, keep)
    return dest


def prune(root: Path, keep: int = KEEP) -> None:
    """Remove all but the newest `keep` <UTC time>-<tier> directories in root (nothing else there)."""
    stamped = sorted(p for p in root.iterdir() if p.is_dir() and STAMPED.match(p.name))
    for old in stamped[: max(0, len(stamped) - keep)]:
        shutil.rmtree(old, ignore_errors=True)


class FailureLogs:
    """One tier's kept logs for this test run: the directory is made at the first failure."""

    def __init__(self, tier: str) -> None:
        self.tier = tier
        self.dir: Path | None = None

    def destination(self) -> Path:
        if self.dir is None:
            chosen = os.environ.get("SCRIPTRUN_TEST_LOGS")
            if chosen:
                self.dir = Path(chosen) / self.tier
                self.dir.mkdir(parents=True, exist_ok=True)
            else:
                self.dir = new_log_dir(self.tier, logs_root())
        return self.dir

    def on_failure(self, funcargs: dict[str, object], nodeid: str, when: str) -> str | None:
        """Keep the logs of the clusters among a failed test's fixtures; the line for the terminal summary
        the first time (naming the directory), else None. Never raises: a failed copy must not hide the
        failure itself."""
        first = self.dir is None
        try:
            kept = self.keep(workdirs_of(funcargs.values()), nodeid, when)
        except OSError as err:
            return f"{self.tier} logs of the failed tests NOT kept: {err}" if first else None
        return f"{self.tier} logs of the failed tests kept in {kept}" if kept is not None and first else None

    def keep(self, workdirs: Iterable[Path], nodeid: str, when: str) -> Path | None:
        """Copy the logs of every existing work dir (several: a subdirectory each, by work dir name);
        None if there is none left to copy from."""
        existing = sorted({w for w in workdirs if w.is_dir()})
        if not existing:
            return None
        dest = self.destination()
        for workdir in existing:
            copy_logs(workdir, dest if len(existing) == 1 else dest / workdir.name)
        with (dest / "failures.txt").open("a") as out:
            out.write(f"{nodeid} ({when}) logs from {', '.join(map(str, existing))}\n")
        return dest


def workdirs_of(values: Iterable[object]) -> list[Path]:
    """The work dirs of the clusters among a test's fixture values (a ControlPlane or RealCluster, or
    anything holding one as `.cluster`, like OperatorProcess)."""
    found = []
    for value in values:
        cluster = value if isinstance(value, ControlPlane) else getattr(value, "cluster", None)
        if isinstance(cluster, ControlPlane):
            found.append(cluster.workdir)
    return sorted(set(found))
