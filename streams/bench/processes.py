"""Subprocesses the bench starts (the worker, the naive Faust agent), and how it reads them.

Every process is started in its own session so a stop reaches it alone, is stopped with
SIGTERM and then SIGKILL after a grace period, and its output goes to a log file the bench
reports when something fails. Resident memory and CPU time come from ``/proc``; counters
from the worker's Prometheus endpoint.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from prometheus_client.parser import text_string_to_metric_families

from streams.errors import JourneyError

#: Seconds between SIGTERM and SIGKILL.
STOP_GRACE_S = 15.0
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
#: Every process started and not yet stopped, so a run's cleanup can stop what a phase
#: left running (an interrupt between start and the phase's own ``finally``).
_RUNNING: set[ManagedProcess] = set()


def stat_fields(pid: int) -> list[str]:
    """Fields of /proc/PID/stat after the parenthesised command name (state is [0])."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2 :].split()


def _cpu_seconds(pid: int) -> float:
    """utime + stime (fields 14 and 15 of /proc/PID/stat) in seconds; 0 once it is gone."""
    try:
        fields = stat_fields(pid)
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def descendants(pid: int) -> list[int]:
    """Live descendants of ``pid`` (by the parent id in every /proc/N/stat)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                parents.setdefault(int(stat_fields(int(entry.name))[1]), []).append(int(entry.name))
    found: list[int] = []
    todo = [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        found.extend(children)
        todo.extend(children)
    return found


class BenchError(JourneyError):
    """A bench phase could not complete (a process died, a bounded wait ran out)."""


def stop_all() -> None:
    """Stop every process the bench started that is still registered (cleanup)."""
    for process in list(_RUNNING):
        process.stop()


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(check: Callable[[], Any], *, timeout_s: float, interval_s: float, what: str) -> Any:
    """Call ``check`` until it returns something truthy; BenchError after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    for _ in range(int(timeout_s / interval_s) + 2):
        result = check()
        if result:
            return result
        if time.monotonic() >= deadline:
            break
        time.sleep(interval_s)
    raise BenchError(f"timed out after {timeout_s:.0f} s waiting for {what}")


class ManagedProcess:
    """A subprocess with a log file; stopped by :meth:`stop` (SIGTERM, then SIGKILL)."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str], log_path: Path) -> None:
        """Start ``argv`` with exactly ``env``; stdout and stderr go to ``log_path``."""
        self.argv = list(argv)
        self.log_path = log_path
        self._log: IO[bytes] = log_path.open("wb")
        self.proc = subprocess.Popen(
            self.argv,
            env=dict(env),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        _RUNNING.add(self)

    @property
    def pid(self) -> int:
        """Process id."""
        return self.proc.pid

    def alive(self) -> bool:
        """True while the process runs."""
        return self.proc.poll() is None

    def ensure_alive(self) -> None:
        """BenchError, with the end of its log, when the process has exited."""
        if not self.alive():
            raise BenchError(
                f"{' '.join(self.argv[:3])} exited with {self.proc.returncode}; "
                f"log {self.log_path}:\n{self.log_tail()}"
            )

    def log_tail(self, chars: int = 3000) -> str:
        """The last ``chars`` characters of the process log."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def rss_bytes(self) -> int:
        """Resident set size (VmRSS of /proc/PID/status) of the process and its descendants.

        The worker writes to ClickHouse from a child process (streams.clickhouse.process):
        its memory and CPU are the worker's too.
        """
        total = 0
        for pid in (self.pid, *descendants(self.pid)):
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        if not total:
            raise BenchError(f"no VmRSS for process {self.pid}")
        return total

    def cpu_seconds(self) -> float:
        """User plus system CPU time the process and its live descendants used so far."""
        return sum(_cpu_seconds(pid) for pid in (self.pid, *descendants(self.pid)))

    def stop(self, grace_s: float = STOP_GRACE_S, first: int = signal.SIGTERM) -> None:
        """Signal ``first`` (SIGTERM), wait up to ``grace_s``, then SIGKILL; idempotent."""
        try:
            if self.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.send_signal(first)
                try:
                    self.proc.wait(grace_s)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        self.proc.kill()
                    self.proc.wait(10)
        finally:
            _RUNNING.discard(self)
            self._log.close()


def child_env() -> dict[str, str]:
    """This process's environment without ``JOURNEY_*`` settings (children get their own)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("JOURNEY_")}


def scrape(port: int, timeout_s: float = 2.0) -> dict[str, float] | None:
    """Samples of ``http://127.0.0.1:PORT/metrics`` summed over labels; None if unreachable."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout_s) as resp:
            text = resp.read().decode()
    except OSError:
        return None
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    return totals
