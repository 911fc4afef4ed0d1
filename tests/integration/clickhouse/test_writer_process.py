"""The worker's ClickHouse writer process, against the 18.16 server and chdb.

Expected figures are the hand-computed worked example (docs/metrics.md); every child
process a test starts is stopped by it, and every wait is bounded.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from chrows import DAY, T0, WORKED_EXAMPLE_SUMMARY, worked_example
from support import open_server

from streams.clickhouse.embedded import EmbeddedBackend
from streams.clickhouse.process import WriterProcess
from streams.clickhouse.summary import compute_summary
from streams.engine.rows import SessionRow
from streams.errors import StorageError

pytestmark = pytest.mark.integration


def _gone(pid: int, timeout_s: float) -> bool:
    """True once process ``pid`` no longer exists (or is a zombie), within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        if state == "Z":
            return True
        time.sleep(0.05)
    return False


def _assert_worked_example_on(url: str) -> None:
    """The server database at ``url`` holds the worked example, by its hand-computed summary."""
    backend = open_server(url)
    try:
        assert compute_summary(backend, T0, T0 + DAY) == WORKED_EXAMPLE_SUMMARY
    finally:
        backend.close()


def test_server_writes_give_the_worked_example(server_url: str) -> None:
    """Rows written through the child read back as the hand-computed summary."""
    writer = WriterProcess(server_url)
    try:
        sessions, orders = worked_example()
        minutes = writer.write(sessions[:3], [], orders)
        writer.write(sessions[3:], [], [])
        assert minutes == {s.start_ms // 60_000 * 60_000 for s in sessions[:3]}
    finally:
        writer.close()
    _assert_worked_example_on(server_url)


def test_embedded_writes_give_the_worked_example(tmp_path: Path) -> None:
    """The child owns the chdb folder while it runs; the rows are there once it closed."""
    writer = WriterProcess(str(tmp_path / "ch"))
    try:
        sessions, orders = worked_example()
        writer.write(sessions, [], orders)
    finally:
        writer.close()
    backend = EmbeddedBackend(tmp_path / "ch")
    try:
        assert compute_summary(backend, T0, T0 + DAY) == WORKED_EXAMPLE_SUMMARY
    finally:
        backend.close()


def test_unreachable_server_fails_at_start_with_a_storage_error() -> None:
    """Nothing listens on port 1: the child reports it and no process is left behind."""
    with pytest.raises(StorageError, match=r"127\.0\.0\.1:1"):
        WriterProcess("clickhouse://127.0.0.1:1/journey_unreachable")
    assert multiprocessing.active_children() == []


def test_a_dead_child_fails_one_write_then_is_replaced(server_url: str) -> None:
    """SIGKILL the child: the next write raises StorageError, the one after writes."""
    writer = WriterProcess(server_url)
    try:
        sessions, orders = worked_example()
        first = writer._process
        assert first is not None
        os.kill(first.pid, signal.SIGKILL)
        first.join(10)
        with pytest.raises(StorageError, match="exited"):
            writer.write(sessions, [], orders)
        writer.write(sessions, [], orders)
        assert writer._process is not None
        assert writer._process.pid != first.pid
    finally:
        writer.close()
    _assert_worked_example_on(server_url)


def test_the_child_exits_when_the_worker_is_killed(tmp_path: Path) -> None:
    """A worker killed with SIGKILL leaves no writer behind (it would race its successor)."""
    script = textwrap.dedent(
        f"""
        import sys, time
        from streams.clickhouse.process import WriterProcess
        writer = WriterProcess({str(tmp_path / "ch")!r})
        print(writer._process.pid, flush=True)
        time.sleep(120)
        """
    )
    with subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True
    ) as parent:
        try:
            assert parent.stdout is not None
            child = int(parent.stdout.readline())
            assert not _gone(child, 0.5)
            parent.kill()
            parent.wait(10)
            assert _gone(child, 10), f"writer process {child} outlived its worker"
        finally:
            if parent.poll() is None:
                parent.kill()
                parent.wait(10)


class _Refuses:
    """An after-write hook that fails (as a publisher whose Kafka refused the rows)."""

    def start(self) -> None:
        """Nothing to open."""

    def __call__(self, sessions: list[SessionRow]) -> None:
        raise ValueError(f"refused {len(sessions)} rows")


def test_an_after_write_failure_reaches_the_worker(server_url: str) -> None:
    """The hook runs in the child after the write; what it raises comes back, named."""
    writer = WriterProcess(server_url, after=_Refuses())
    try:
        sessions, orders = worked_example()
        with pytest.raises(RuntimeError, match=f"refused {len(sessions)} rows"):
            writer.write(sessions, [], orders)
    finally:
        writer.close()
