"""Throughput phases on the one prepared topic: naive Faust agent, our worker, replay.

(The raw aiokafka upper bound is :mod:`streams.bench.raw`.) Each phase reads the same N
events. Rates are events per wall second of the measured interval, which each function
documents; set-up (process start, group join, migrations) is excluded and reported apart.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streams.bench.naive import read_progress
from streams.bench.processes import BenchError, ManagedProcess, child_env, wait_for
from streams.bench.profile import ProfileRecorder
from streams.bench.resources import BenchResources
from streams.bench.workers import start_workers, visible_events
from streams.clickhouse.server import ServerBackend


@dataclass(slots=True)
class NaiveResult:
    """The naive agent: events consumed, seconds from its first to its last event."""

    events: int
    seconds: float
    inserts: int
    complete: bool

    @property
    def per_s(self) -> float:
        """Events per second."""
        return self.events / self.seconds if self.seconds > 0 else 0.0


def run_naive(res: BenchResources, topic: str, expected: int, *, timeout_s: float) -> NaiveResult:
    """Run the naive Faust agent over ``topic`` until it consumed ``expected`` events.

    Timed by the agent itself: wall time of the first event to that of the last. When the
    bounded wait ends first, the rate of what it consumed so far is reported instead
    (``complete`` False), as a slow baseline must not make the bench fail.
    """
    progress_path = res.workdir / "naive-progress.json"
    url = res.database_url("naive")
    process = ManagedProcess(
        [
            sys.executable, "-m", "streams.bench.naive",
            "--topic", topic,
            "--app-id", res.name("naive-app"),
            "--expected", str(expected),
            "--progress", str(progress_path),
            "--data-dir", str(res.folder("naive-data")),
        ],
        # Not argv: the process list shows it. The Kafka settings may hold a password too.
        child_env() | res.connection_environment() | {"JOURNEY_CLICKHOUSE_URL": url},
        res.workdir / "naive.log",
    )  # fmt: skip
    try:
        deadline = time.monotonic() + timeout_s
        record: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            process.ensure_alive()
            record = read_progress(progress_path)
            if record is not None and record["events"] >= expected:
                break
            time.sleep(0.2)
        if record is None or record["first"] is None:
            raise BenchError(f"the naive agent consumed nothing in {timeout_s:.0f} s")
        return NaiveResult(
            events=int(record["events"]),
            seconds=float(record["last"]) - float(record["first"]),
            inserts=int(record["inserts"]),
            complete=int(record["events"]) >= expected,
        )
    finally:
        process.stop()


@dataclass(slots=True)
class WorkerThroughput:
    """Our worker, end to end; times in seconds from its first consumed event."""

    events: int
    consumed_s: float
    visible_s: float
    startup_s: float
    cpu_s: float
    late: int
    duplicates: int
    profile: list[str] = field(default_factory=list)

    @property
    def per_s(self) -> float:
        """Events per second until every event is visible in ClickHouse."""
        return self.events / self.visible_s if self.visible_s > 0 else 0.0


def completion_target(totals: Mapping[str, float], log_path: Path) -> int:
    """``sum(events)`` of the visible sessions that means every event of the phase is stored.

    ``totals`` are the worker's metric totals: the target is the accepted events
    (``journey_events_total``) minus the duplicates it dropped
    (``journey_events_duplicate_total``). Late events are never subtracted, as they never
    count as done: the bench's input is in event-time order per partition, so a worker must
    not call any of it late, and ``journey_events_late_total > 0`` raises BenchError naming
    the count and the worker log ``log_path``.
    """
    late = int(totals.get("journey_events_late_total", 0))
    if late > 0:
        raise BenchError(
            f"the worker counted {late} late event(s) (journey_events_late_total); the bench's"
            " input is in event-time order per partition, and in-order input must never"
            f" produce late events; worker log {log_path}"
        )
    return int(
        totals.get("journey_events_total", 0) - totals.get("journey_events_duplicate_total", 0)
    )


def run_worker(
    res: BenchResources,
    topic: str,
    expected: int,
    *,
    partitions: int,
    flush_interval_s: float,
    timeout_s: float,
    profile_path: Path | None = None,
    processes: int = 1,
) -> WorkerThroughput:
    """Start a worker on the filled ``topic``; time it until all events are in ClickHouse.

    With ``processes`` > 1, that many worker processes of one app share the work (see
    ``WorkerGroup``); their metrics and CPU are summed, the first one is profiled.

    t0 is the first /metrics poll (every 20 ms) showing ``journey_events_total > 0``, so
    start-up, group join and rebalance are excluded (reported as ``startup_s``).
    ``consumed_s``: until every message was accepted or rejected at intake (/metrics polled
    every 250 ms: serving a scrape costs the worker's process CPU, so not more often).
    ``visible_s``: until ``sum(events)`` over ``sessions FINAL WHERE deleted = 0`` on the
    server equals the accepted events minus duplicate ones (polled every 100 ms, only once
    everything was consumed, so these queries do not compete with the worker's inserts
    before).

    The topic was filled before the worker starts, in event-time order per partition (the
    traffic model emits events in event-time order, the bulk producer appends them in that
    order to each partition's batches, keyed by visitor, and aiokafka keeps one batch per
    partition in flight), so no event may be late: :func:`completion_target` raises
    BenchError whenever ``journey_events_late_total`` is above 0, checked at every read of
    /metrics and once more at the end.
    """
    began = time.monotonic()
    label = "worker" if processes == 1 else f"workers{processes}"
    worker = start_workers(
        res, label, topic, processes=processes, partitions=partitions,
        flush_interval_s=flush_interval_s,
    )  # fmt: skip
    log_path = worker.process.log_path
    recorder: ProfileRecorder | None = None
    try:
        completion_target(worker.wait_ready(timeout_s=120), log_path)

        def first_event() -> float | None:
            worker.process.ensure_alive()
            totals = worker.metrics() or {}
            completion_target(totals, log_path)
            return time.monotonic() if totals.get("journey_events_total", 0) > 0 else None

        t0: float = wait_for(first_event, timeout_s=120, interval_s=0.02, what="a first event")
        cpu0 = worker.process.cpu_seconds()
        if profile_path is not None:
            recorder = ProfileRecorder(worker.process.pid, profile_path)
        deadline = t0 + timeout_s
        totals: dict[str, float] = {}
        handled = 0.0
        while time.monotonic() < deadline:
            worker.process.ensure_alive()
            totals = worker.metrics() or totals
            completion_target(totals, log_path)
            handled = totals.get("journey_events_total", 0) + totals.get(
                "journey_events_rejected_total", 0
            )
            if handled >= expected:
                break
            time.sleep(0.25)
        else:
            raise BenchError(
                f"the worker handled {handled:.0f} of {expected} events within {timeout_s:.0f} s;"
                f" worker log {log_path}"
            )
        consumed = time.monotonic() - t0
        backend = ServerBackend(worker.address)
        try:
            seen = 0
            polls = 0
            while time.monotonic() < deadline:
                worker.process.ensure_alive()
                if polls % 5 == 0:  # late/duplicate counts settle with the last batches
                    totals = worker.metrics() or totals
                polls += 1
                target = completion_target(totals, log_path)
                seen = visible_events(backend)
                if seen >= target:
                    break
                time.sleep(0.1)
            else:
                raise BenchError(
                    f"only {seen} of {target} events became visible in ClickHouse within "
                    f"{timeout_s:.0f} s; worker log {log_path}"
                )
        finally:
            backend.close()
        visible = time.monotonic() - t0
        cpu = worker.process.cpu_seconds() - cpu0
        profile = recorder.finish() if recorder is not None else []
        # Once more after the interval: a late event may have been counted after the last read.
        totals = worker.metrics() or totals
        completion_target(totals, log_path)
        return WorkerThroughput(
            events=target,
            consumed_s=consumed,
            visible_s=visible,
            startup_s=t0 - began,
            cpu_s=cpu,
            late=int(totals.get("journey_events_late_total", 0)),
            duplicates=int(totals.get("journey_events_duplicate_total", 0)),
            profile=profile,
        )
    finally:
        if recorder is not None:
            recorder.stop()
        worker.stop()


@dataclass(frozen=True, slots=True)
class ReplayResult:
    """One ``replay_files`` run: events accepted, sessions written, seconds it took."""

    target: str
    events: int
    sessions: int
    seconds: float

    @property
    def per_s(self) -> float:
        """Events per second (read, validate, sessionize, write)."""
        return self.events / self.seconds if self.seconds > 0 else 0.0


def run_replay(path: Path, target: str) -> ReplayResult:
    """``journey replay``'s engine over ``path`` into ``target`` (URL or chdb folder).

    Timed as ``replay_files`` times itself (parse, sessionize, write), after migrations.
    """
    from streams.clickhouse.backend import open_backend
    from streams.clickhouse.migrations import apply_migrations
    from streams.clickhouse.writer import ClickHouseWriter
    from streams.engine.sessionizer import SessionConfig
    from streams.engine.stages import load_stage_rules
    from streams.replay import replay_files

    backend = open_backend(target)
    try:
        apply_migrations(backend)
        report = replay_files(
            [path], "jsonl", ClickHouseWriter(backend), SessionConfig(), load_stage_rules(None)
        )
    finally:
        backend.close()
    return ReplayResult(target, report.events, report.sessions, report.seconds)
