"""The test harness itself: ports handed to child processes without a race (tests/support/ports.py), and
the logs of a failed control-plane / real-node run kept past the run (tests/support/testlogs.py)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.support import ports
from tests.support.controlplane import ControlPlane, free_port
from tests.support.ports import PortAllocator, default_range
from tests.support.testlogs import FailureLogs, copy_logs, new_log_dir, workdirs_of

ROOT = Path(__file__).resolve().parents[2]
HOLDER = """
import sys
from pathlib import Path
from tests.support.ports import PortAllocator
allocator = PortAllocator({low}, {high}, Path({lock_dir!r}))
print(" ".join(str(allocator.allocate()) for _ in range({count})), flush=True)
sys.stdin.read()  # hold the ports until the test closes stdin
"""


def ephemeral() -> tuple[int, int]:
    low, high = (int(p) for p in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    return low, high


@pytest.fixture
def free_block() -> Iterator[Callable[[int], int]]:
    """free_block(size): the first of `size` consecutive free ports, reserved machine-wide for this test
    (the harness's own locks, from the top of its range) so a test run elsewhere on the machine cannot
    take them while the test's private allocators (own lock dirs) play with them."""
    reserved: list[PortAllocator] = []

    def reserve(size: int) -> int:
        low, high = default_range()
        for base in range(high - size + 1, low, -size):
            block = PortAllocator(base, base + size - 1)
            with contextlib.suppress(RuntimeError):  # a port in the block is busy
                for _ in range(size):
                    block.allocate()
            if block.held() == list(range(base, base + size)):
                reserved.append(block)  # locked, and still bindable: nothing listens
                return base
            for port in block.held():
                block.release(port)
        raise RuntimeError("no free block of ports")

    yield reserve
    for block in reserved:
        for port in block.held():
            block.release(port)


def holder(lock_dir: Path, low: int, high: int, count: int = 1) -> tuple[subprocess.Popen[str], list[int]]:
    """Another process that allocates `count` ports from the same range and lock dir, and holds them."""
    code = HOLDER.format(low=low, high=high, lock_dir=str(lock_dir), count=count)
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line, f"holder exited {proc.wait()}"
    return proc, [int(p) for p in line.split()]


def release(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.close()
    assert proc.wait(10) == 0


# -- ports -------------------------------------------------------------------------------------------
def test_the_ports_lie_outside_the_kernels_ephemeral_range(monkeypatch: pytest.MonkeyPatch) -> None:
    """The old race: bind port 0, close, let the child bind it; meanwhile any outgoing connection (the
    kernel picks its local port from the same ephemeral range) could take it. Not from this range."""
    monkeypatch.delenv("SCRIPTRUN_TEST_PORTS", raising=False)
    low, high = default_range()
    eph_low, eph_high = ephemeral()
    assert high < eph_low or low > eph_high, (low, high, eph_low, eph_high)
    assert high - low >= 999
    monkeypatch.setenv("SCRIPTRUN_TEST_PORTS", "21000-21099")
    assert default_range() == (21000, 21099)


def test_free_port_hands_out_held_ports_never_twice() -> None:
    got = [free_port() for _ in range(5)]
    assert len(set(got)) == 5
    assert set(got) <= set(ports.allocator().held())
    eph_low, eph_high = ephemeral()
    assert all(not eph_low <= p <= eph_high for p in got)
    for port in got:  # free for the child to bind (as the children do: SO_REUSEADDR)
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", port))


def test_a_port_something_listens_on_is_skipped(tmp_path: Path, free_block: Callable[[int], int]) -> None:
    base = free_block(4)
    # the port the allocator would hand out next, taken by a listener in another process
    listener = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import socket,sys; s=socket.socket(); s.bind(('127.0.0.1', {base})); s.listen(); print('up', flush=True);"
            " sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert listener.stdout is not None and listener.stdout.readline().strip() == "up"
    try:
        assert PortAllocator(base, base + 3, tmp_path).allocate() == base + 1
    finally:
        release(listener)
    assert PortAllocator(base, base + 3, tmp_path).allocate() == base  # free again: handed out


def test_a_port_another_test_run_holds_is_skipped_until_it_exits(
    tmp_path: Path, free_block: Callable[[int], int]
) -> None:
    base = free_block(4)
    other, taken = holder(tmp_path, base, base + 3)
    assert taken == [base]
    try:
        mine = PortAllocator(base, base + 3, tmp_path)
        assert mine.allocate() == base + 1  # bindable, but locked by the other run: not handed out
        assert mine.allocate() == base + 2
    finally:
        release(other)
    assert PortAllocator(base, base + 3, tmp_path).allocate() == base  # the lock died with the process


def test_an_exhausted_range_says_so(tmp_path: Path, free_block: Callable[[int], int]) -> None:
    base = free_block(2)
    allocator = PortAllocator(base, base + 1, tmp_path)
    assert [allocator.allocate(), allocator.allocate()] == [base, base + 1]
    with pytest.raises(RuntimeError, match="no free port"):
        allocator.allocate()
    allocator.release(base)
    assert allocator.allocate() == base


def test_parallel_threads_never_get_the_same_port(tmp_path: Path, free_block: Callable[[int], int]) -> None:
    base = free_block(100)
    shared = PortAllocator(base, base + 99, tmp_path)
    own = [PortAllocator(base, base + 99, tmp_path) for _ in range(4)]  # separate allocators, one lock dir
    got: list[int] = []
    mutex = threading.Lock()
    start = threading.Barrier(8)

    def work(allocator: PortAllocator) -> None:
        start.wait()
        mine = [allocator.allocate() for _ in range(10)]
        with mutex:
            got.extend(mine)

    threads = [threading.Thread(target=work, args=(a,)) for a in [shared] * 4 + own]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(got) == 80
    assert len(set(got)) == 80, sorted(got)


def test_parallel_processes_never_get_the_same_port(tmp_path: Path, free_block: Callable[[int], int]) -> None:
    base = free_block(60)
    code = HOLDER.format(low=base, high=base + 59, lock_dir=str(tmp_path), count=12)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]  # all started at once: they race for the same lowest ports
    got: list[int] = []
    try:
        for proc in procs:
            assert proc.stdout is not None
            got += [int(p) for p in proc.stdout.readline().split()]
    finally:
        for proc in procs:
            release(proc)
    assert len(got) == 48
    assert len(set(got)) == 48, sorted(got)


# -- logs of a failed run ----------------------------------------------------------------------------
def fake_workdir(root: Path) -> Path:
    w = root / "scriptrun-cp-x"
    for name in ("etcd.log", "kube-apiserver.log", "kwok.log", "operator.log", "operator-budget.log"):
        (w / name).parent.mkdir(parents=True, exist_ok=True)
        (w / name).write_text(f"{name} line\n")
    (w / "etcd" / "member" / "wal").mkdir(parents=True)
    (w / "etcd" / "member" / "wal" / "0.wal").write_text("data")
    (w / "kubeconfig").write_text("secret-ish")
    (w / "containerd" / "root" / "rootfs" / "var" / "log").mkdir(parents=True)
    (w / "containerd" / "root" / "rootfs" / "var" / "log" / "dpkg.log").write_text("an image's file")
    pod = w / "pod-logs" / "scriptrun-system_scriptrun-abc_123" / "operator"
    pod.mkdir(parents=True)
    (pod / "0.log").write_text("operator pod log\n")
    return w


def test_copy_logs_keeps_the_logs_and_nothing_else(tmp_path: Path) -> None:
    w = fake_workdir(tmp_path)
    dest = tmp_path / "kept"
    copy_logs(w, dest)
    kept = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert kept == [
        "etcd.log",
        "kube-apiserver.log",
        "kwok.log",
        "operator-budget.log",
        "operator.log",
        "pod-logs/scriptrun-system_scriptrun-abc_123/operator/0.log",
    ]
    assert (dest / "operator.log").read_text() == "operator.log line\n"


def test_a_new_log_dir_prunes_to_the_newest_five(tmp_path: Path) -> None:
    now = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    for age in range(1, 8):
        (tmp_path / f"{(now - timedelta(hours=age)).strftime('%Y%m%dT%H%M%SZ')}-controlplane").mkdir()
    (tmp_path / "notes").mkdir()  # not ours: left alone
    dest = new_log_dir("e2e", tmp_path, now=now)
    assert dest.name == "20300102T030405Z-e2e"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "20300101T230405Z-controlplane",
        "20300102T000405Z-controlplane",
        "20300102T010405Z-controlplane",
        "20300102T020405Z-controlplane",
        "20300102T030405Z-e2e",
        "notes",
    ]
    assert new_log_dir("e2e", tmp_path, now=now).name == f"20300102T030405Z-e2e-{os.getpid()}"  # same second


def test_failure_logs_copy_once_per_run_and_name_the_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCRIPTRUN_TEST_LOGS", str(tmp_path / "ci-logs"))
    w = fake_workdir(tmp_path)
    cluster = ControlPlane(workdir=w, bin_dir=tmp_path, versions={})

    class Op:
        def __init__(self) -> None:
            self.cluster = cluster

    assert workdirs_of([cluster, Op(), "unrelated", 3]) == [w]
    logs = FailureLogs("controlplane")
    line = logs.on_failure({"cluster": cluster, "operator": Op()}, "tests/controlplane/test_a.py::test_x", "call")
    assert line == f"controlplane logs of the failed tests kept in {tmp_path / 'ci-logs' / 'controlplane'}"
    (w / "operator.log").write_text("operator.log line\nlater line\n")
    assert logs.on_failure({"cluster": cluster}, "tests/controlplane/test_a.py::test_y", "teardown") is None
    dest = tmp_path / "ci-logs" / "controlplane"
    assert (dest / "operator.log").read_text().endswith("later line\n")  # copied again: the newest logs
    failures = (dest / "failures.txt").read_text().splitlines()
    assert [f.split(" logs from")[0] for f in failures] == [
        "tests/controlplane/test_a.py::test_x (call)",
        "tests/controlplane/test_a.py::test_y (teardown)",
    ]
    assert FailureLogs("e2e").on_failure({"x": 1}, "t", "setup") is None  # no cluster: nothing to keep


def test_the_hook_keeps_the_logs_of_a_failing_test(tmp_path: Path) -> None:
    """tests/controlplane/conftest.py's hooks in a real pytest run: a fake cluster fixture with logs,
    one failing test, one passing."""
    w = fake_workdir(tmp_path / "cp")
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "pytest.ini").write_text("[pytest]\n")
    (suite / "conftest.py").write_text(
        textwrap.dedent(f"""
        from pathlib import Path
        import pytest
        from tests.controlplane.conftest import pytest_runtest_makereport, pytest_terminal_summary
        from tests.support.controlplane import ControlPlane

        @pytest.fixture
        def cluster():
            return ControlPlane(workdir=Path({str(w)!r}), bin_dir=Path(), versions={{}})
        """)
    )
    (suite / "test_it.py").write_text("def test_fails(cluster):\n    assert False\n\ndef test_ok(cluster):\n    pass\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SCRIPTRUN_CACHE": str(tmp_path / "cache")}
    env.pop("SCRIPTRUN_TEST_LOGS", None)
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(suite)],
        cwd=suite,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 1, run.stdout + run.stderr
    kept = list((tmp_path / "cache" / "test-logs").iterdir())
    assert len(kept) == 1 and kept[0].name.endswith("-controlplane")
    assert f"controlplane logs of the failed tests kept in {kept[0]}" in run.stdout
    assert (kept[0] / "kube-apiserver.log").exists()
    assert (kept[0] / "failures.txt").read_text().startswith("test_it.py::test_fails (call)")


def test_audit_events_read_the_rotated_logs_too_oldest_first(tmp_path: Path) -> None:
    """The API server rotates its audit log at 100 MB (audit-<time>.log beside audit.log): a bench or
    the 100-kill chaos run passes that, and a count of creates must see the older files too."""
    cluster = ControlPlane(workdir=tmp_path, bin_dir=tmp_path, versions={}, audit=True)
    (tmp_path / "audit-2026-11-24T01-02-19.996.log").write_text('{"n": 1}\n{"n": 2}\n')
    (tmp_path / "audit-2026-11-24T01-36-00.001.log").write_text('{"n": 3}\n')
    (tmp_path / "audit.log").write_text('{"n": 4}\n{"n": 5, "half')  # a line being written: skipped
    (tmp_path / "audit-policy.yaml").write_text("rules: []\n")
    assert [e["n"] for e in cluster.audit_events()] == [1, 2, 3, 4]
