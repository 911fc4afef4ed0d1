"""Starting ``journey worker`` for a phase: its own topics, app id, database and data dir.

The child gets the bench's environment minus every ``JOURNEY_*`` variable, plus the
bench's Kafka connection (``JOURNEY_BROKERS`` and the ``JOURNEY_KAFKA_*`` security settings)
and the settings of the phase, so any other setting exported in the operator's shell cannot
leak in.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass

import orjson

from streams.bench.processes import (
    BenchError,
    ManagedProcess,
    child_env,
    free_port,
    scrape,
    wait_for,
)
from streams.bench.producer import produce_bulk
from streams.bench.resources import BenchResources
from streams.clickhouse.address import ServerAddress
from streams.clickhouse.server import ServerBackend
from streams.errors import StorageError

#: Idle wall time before the worker's watermark follows the clock (small: runs are short).
IDLE_GRACE_S = 2.0


@dataclass
class BenchWorker:
    """A running worker of one phase, with where it writes and where it reports."""

    process: ManagedProcess
    #: The server and database it writes to, with the bench's login and TLS settings.
    address: ServerAddress
    metrics_port: int

    def metrics(self) -> dict[str, float] | None:
        """Current metric totals (summed over labels), None while /metrics is not up."""
        return scrape(self.metrics_port)

    def wait_ready(self, timeout_s: float) -> dict[str, float]:
        """Wait until /metrics answers (migrations applied, app starting)."""

        def check() -> dict[str, float] | None:
            self.process.ensure_alive()
            return self.metrics()

        ready: dict[str, float] = wait_for(
            check, timeout_s=timeout_s, interval_s=0.1, what="the worker's /metrics endpoint"
        )
        return ready

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after the grace period."""
        self.process.stop()


class WorkerGroup:
    """Several worker processes of one app (one consumer group), measured as one worker.

    What a store does to use more cores: N ``journey worker`` processes with the same
    ``JOURNEY_APP_ID``, each with its own metrics port and data folder. ``metrics()`` sums
    their totals, ``cpu_seconds()`` their CPU; the first one's log names the group.
    """

    def __init__(self, workers: list[BenchWorker]) -> None:
        """Group ``workers`` (the first is the one profiled and named in errors)."""
        self.workers = workers
        self.address = workers[0].address
        self.process = self  # the part of ManagedProcess the phases use, for all
        self.log_path = workers[0].process.log_path
        self.pid = workers[0].process.pid

    def metrics(self) -> dict[str, float] | None:
        """Metric totals summed over the processes; None until every one answers."""
        totals: dict[str, float] = {}
        for worker in self.workers:
            one = worker.metrics()
            if one is None:
                return None
            for name, value in one.items():
                totals[name] = totals.get(name, 0.0) + value
        return totals

    def wait_ready(self, timeout_s: float) -> dict[str, float]:
        """Wait until every process serves /metrics; their summed totals."""
        for worker in self.workers:
            worker.wait_ready(timeout_s)
        return self.metrics() or {}

    def ensure_alive(self) -> None:
        """Raise BenchError if any process has exited."""
        for worker in self.workers:
            worker.process.ensure_alive()

    def cpu_seconds(self) -> float:
        """CPU seconds (user + system) of all the processes."""
        return sum(worker.process.cpu_seconds() for worker in self.workers)

    def stop(self) -> None:
        """Stop every process."""
        for worker in self.workers:
            worker.stop()


def start_workers(
    res: BenchResources,
    label: str,
    input_topic: str,
    *,
    processes: int,
    partitions: int,
    flush_interval_s: float,
) -> BenchWorker | WorkerGroup:
    """One worker, or a group of ``processes`` workers of one app (see WorkerGroup)."""
    if processes == 1:
        return start_worker(
            res, label, input_topic, partitions=partitions, flush_interval_s=flush_interval_s
        )
    workers: list[BenchWorker] = []
    try:
        for instance in range(processes):
            workers.append(
                start_worker(
                    res, label, input_topic, partitions=partitions,
                    flush_interval_s=flush_interval_s, instance=instance,
                )
            )  # fmt: skip
    except BaseException:
        for worker in workers:
            worker.stop()
        raise
    return WorkerGroup(workers)


def start_worker(
    res: BenchResources,
    label: str,
    input_topic: str,
    *,
    partitions: int,
    flush_interval_s: float,
    extra: Mapping[str, str] | None = None,
    instance: int = 0,
) -> BenchWorker:
    """Start ``journey worker`` on ``input_topic`` writing to the fresh database ``label``.

    ``instance`` > 0 starts one more process of the same app (same topics, database and
    consumer groups) with its own data folder, metrics port and log.
    """
    url = res.database_url(label)
    suffix = f"-{instance}" if instance else ""
    port = free_port()
    env = child_env() | res.connection_environment()
    env.update(
        {
            "JOURNEY_INPUT_TOPIC": input_topic,
            "JOURNEY_APP_ID": res.name(f"{label}-app"),
            "JOURNEY_SESSIONS_TOPIC": res.name(f"{label}-sessions"),
            "JOURNEY_TRANSITIONS_TOPIC": res.name(f"{label}-transitions"),
            "JOURNEY_DLQ_TOPIC": res.name(f"{label}-dlq"),
            "JOURNEY_LATE_TOPIC": res.name(f"{label}-late"),
            "JOURNEY_PARTITIONS": str(partitions),
            "JOURNEY_CLICKHOUSE_URL": url,
            "JOURNEY_DATA_DIR": str(res.folder(f"{label}-data{suffix}")),
            "JOURNEY_METRICS_PORT": str(port),
            "JOURNEY_IDLE_GRACE_S": str(IDLE_GRACE_S),
            "JOURNEY_FLUSH_INTERVAL_S": str(flush_interval_s),
            "JOURNEY_INPUT_KEYED_BY_VISITOR": "true" if res.direct else "false",
        }
    )
    env.update(extra or {})
    process = ManagedProcess(
        [sys.executable, "-m", "streams.cli", "worker"],
        env,
        res.workdir / f"worker-{label}{suffix}.log",
    )
    return BenchWorker(process, res.address(url), port)


def visible_events(backend: ServerBackend) -> int:
    """sum(events) over the live session rows (the worker has created the table by then)."""
    rows = backend.query("SELECT sum(events) FROM sessions FINAL WHERE deleted = 0")
    return int(rows[0][0] or 0) if rows else 0


def settle(seconds: float) -> None:
    """Let a process reach a steady state before a reading (bounded sleep)."""
    time.sleep(max(0.0, seconds))


def probe_until_live(
    res: BenchResources,
    worker: BenchWorker,
    topic: str,
    partitions: int,
    *,
    visitors: int = 1,
    timeout_s: float,
) -> float:
    """Send probe page views (now) until the worker counts them and ClickHouse shows them.

    A round of ``visitors`` probes (distinct visitors, so several partitions get one) every
    0.5 s until the worker counts any; then no more, and wait until all sent are counted and
    visible. Returns the ``journey_events_total`` value then: the baseline of a measured
    run, with start-up, group join and the first ClickHouse insert already behind.
    """
    sent = 0
    counted = 0.0
    deadline = time.monotonic() + timeout_s
    backend: ServerBackend | None = None
    try:
        while time.monotonic() < deadline:
            worker.process.ensure_alive()
            if counted == 0:
                now_ms = int(time.time() * 1000)
                keys = [f"probe-{res.tag}-{sent + i}".encode() for i in range(visitors)]
                values = [
                    orjson.dumps(
                        {
                            "event_id": f"{key.decode()}-e",
                            "event_type": "page_view",
                            "timestamp": now_ms,
                            "anonymous_id": key.decode(),
                        }
                    )
                    for key in keys
                ]
                asyncio.run(
                    produce_bulk(res.connection, topic, partitions, keys, values, timeout_s=30)
                )
                sent += visitors
            time.sleep(0.5)
            counted = (worker.metrics() or {}).get("journey_events_total", 0)
            if counted < sent:
                continue
            try:
                backend = backend or ServerBackend(worker.address)
                shown = visible_events(backend)
            except StorageError:
                shown = 0  # tables not created yet
            if shown >= sent:
                return counted
    finally:
        if backend is not None:
            backend.close()
    raise BenchError(f"the worker did not process probe events within {timeout_s:.0f} s")
