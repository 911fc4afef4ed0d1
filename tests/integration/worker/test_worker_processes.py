"""``journey worker --processes 2``: two workers of one group under one supervisor.

The supervisor is started as an operator would (``journey worker --processes 2``); its
children are found through ``/proc`` (their parent is the supervisor, their environment
names their metrics port). Figures are checked against ``journey replay`` of the same
generated events, as in the other worker tests.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from workerkit import (
    Names,
    PacedProducer,
    WorkerProcess,
    assert_same_as_replay,
    free_port,
    poll,
    prepare_run,
    total,
    wait_complete,
    worker_env,
)

from streams.bench.processes import descendants as process_tree
from streams.bench.processes import stat_fields

EVENTS = 8_000
PROCESSES = 2
RATE = 400


def consecutive_free_ports(count: int) -> int:
    """A port P such that P .. P+count-1 are all free right now (bounded tries)."""
    for _ in range(50):
        base = free_port()
        with contextlib.ExitStack() as stack:
            try:
                for port in range(base + 1, base + count):
                    sock = stack.enter_context(socket.socket())
                    sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        return base
    pytest.fail(f"found no {count} consecutive free ports in 50 tries")


def running(pid: int) -> bool:
    """True while ``pid`` runs (a zombie nobody reaped yet does not count)."""
    try:
        return stat_fields(pid)[0] not in "ZX"
    except OSError:
        return False


def descendants(pid: int) -> list[int]:
    """Live descendants of ``pid``: the workers and their ClickHouse writer processes."""
    return [p for p in process_tree(pid) if running(p)]


def metrics_port_of(pid: int) -> int | None:
    """JOURNEY_METRICS_PORT in the environment of ``pid`` (None if gone or unset)."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    for entry in environ:
        if entry.startswith(b"JOURNEY_METRICS_PORT="):
            return int(entry.split(b"=", 1)[1])
    return None


@dataclasses.dataclass
class SupervisedGroup:
    """``journey worker --processes N`` (``supervisor``), its metrics ports base .. base+N-1."""

    supervisor: WorkerProcess
    base_port: int
    seen: set[int] = dataclasses.field(default_factory=set)

    def start(self) -> list[WorkerProcess]:
        """Start the group; one view per instance (its port), once every /metrics answers.

        A view is the supervisor's WorkerProcess with the instance's metrics port: alive
        while the supervisor is, scraped on its own port.
        """
        self.supervisor.start()
        views = [
            dataclasses.replace(self.supervisor, metrics_port=self.base_port + i)
            for i in range(PROCESSES)
        ]
        for view in views:
            view.wait_ready(timeout_s=90)
        self.seen.update(descendants(self.supervisor.pid))
        return views

    def workers(self) -> dict[int, int]:
        """{instance: pid} of the supervisor's running worker children."""
        found: dict[int, int] = {}
        for pid in descendants(self.supervisor.pid):
            port = metrics_port_of(pid)
            if port is not None and stat_fields(pid)[1] == str(self.supervisor.pid):
                found[port - self.base_port] = pid
        self.seen.update(found.values())
        return found

    def wait_gone(self, pids: set[int]) -> None:
        """Until none of ``pids`` runs (bounded)."""
        poll(lambda: not any(running(p) for p in pids), timeout_s=30, interval_s=0.2,
             what=f"processes {sorted(pids)} to exit",
             describe=lambda: f"still running: {[p for p in pids if running(p)]}")  # fmt: skip


@pytest.fixture
def group(tmp_path: Path) -> Iterator[Callable[[Names], SupervisedGroup]]:
    """Factory of supervised groups; each stopped after the test, no descendant left."""
    made: list[SupervisedGroup] = []

    def make(names: Names) -> SupervisedGroup:
        data_dir = tmp_path / "workers"
        data_dir.mkdir(exist_ok=True)
        base = consecutive_free_ports(PROCESSES)
        env = worker_env(names, data_dir, base, partitions=4)
        supervisor = WorkerProcess(
            env, tmp_path / "supervisor.log", base, args=("--processes", str(PROCESSES))
        )
        made.append(SupervisedGroup(supervisor, base))
        return made[-1]

    yield make
    for one in made:
        if one.supervisor.alive:
            one.seen.update(descendants(one.supervisor.pid))
        one.supervisor.stop()
        for pid in one.seen:
            if running(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def _accepted(view: WorkerProcess) -> float:
    """Events this instance's intake accepted so far (0 when /metrics does not answer)."""
    samples = view.scrape()
    return 0.0 if samples is None else total(samples, "journey_events_total")


@pytest.mark.integration
@pytest.mark.slow
def test_two_processes_equal_replay_and_stop_on_sigterm(
    tmp_path: Path,
    names: Names,
    group: Callable[[Names], SupervisedGroup],
    paced_producers: list[PacedProducer],
) -> None:
    """Both processes consume, the tables equal replay's; SIGTERM: exit 0, nothing left.

    The input arrives live (paced): produced up front, the first process to join the
    group would read all of it before the second got a partition.
    """
    run = prepare_run(tmp_path, names, EVENTS, 41)
    workers = group(names)
    views = workers.start()
    instances = workers.workers()
    assert sorted(instances) == list(range(PROCESSES)), f"children by instance: {instances}"
    producer = PacedProducer(names.topic, run.lines, RATE)
    paced_producers.append(producer)
    producer.start()
    producer.finish(timeout_s=120)
    wait_complete(views, names.url, run.expected_events, timeout_s=180)
    accepted = [_accepted(view) for view in views]
    assert all(accepted), f"an instance got no input partition: events accepted {accepted}"
    assert_same_as_replay(names)

    everything = set(descendants(workers.supervisor.pid))
    assert set(instances.values()) <= everything
    assert workers.supervisor.proc is not None
    workers.supervisor.proc.send_signal(signal.SIGTERM)
    status = workers.supervisor.proc.wait(timeout=90)
    assert status == 0, workers.supervisor.log_tail(40)
    workers.wait_gone(everything)
    log = workers.supervisor.log_path.read_text(errors="replace")
    assert "worker-0: " in log
    assert "worker-1: " in log
    for i in range(PROCESSES):
        assert (tmp_path / "workers" / f"worker-{i}" / "faust").is_dir()


@pytest.mark.integration
@pytest.mark.slow
def test_a_killed_worker_stops_the_group_and_a_restart_completes(
    tmp_path: Path,
    names: Names,
    group: Callable[[Names], SupervisedGroup],
    paced_producers: list[PacedProducer],
) -> None:
    """SIGKILL of one worker mid-run: the other stops, the supervisor exits 137; restarted,
    the group ends with replay's figures; a SIGKILLed supervisor leaves no process behind."""
    run = prepare_run(tmp_path, names, EVENTS, 42)
    workers = group(names)
    views = workers.start()
    producer = PacedProducer(names.topic, run.lines, RATE)
    paced_producers.append(producer)
    producer.start()
    poll(lambda: all(_accepted(view) for view in views), timeout_s=90,
         what="both instances to consume input",
         describe=lambda: f"accepted: {[_accepted(v) for v in views]}")  # fmt: skip
    instances = workers.workers()
    everything = set(descendants(workers.supervisor.pid))
    assert producer.is_alive(), "the kill must land mid-run"
    os.kill(instances[1], signal.SIGKILL)

    assert workers.supervisor.proc is not None
    status = workers.supervisor.proc.wait(timeout=90)
    assert status == 128 + signal.SIGKILL, workers.supervisor.log_tail(40)
    workers.wait_gone(everything)
    assert "worker-1 (pid" in workers.supervisor.log_tail(200)

    # Restarted whole (what systemd or Kubernetes does), it recovers from Kafka.
    views = workers.start()
    producer.finish(timeout_s=120)
    wait_complete(views, names.url, run.expected_events, timeout_s=180)
    assert_same_as_replay(names)

    # The supervisor SIGKILLed: its workers get SIGKILL from the kernel, their writers follow.
    everything = set(descendants(workers.supervisor.pid))
    assert len(everything) >= 2 * PROCESSES, "two workers, each with its writer process"
    workers.supervisor.kill()
    workers.wait_gone(everything)
