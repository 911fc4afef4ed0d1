"""Latency at a steady rate: event time to ClickHouse-visible, and to the Prometheus counter.

A paced producer sends generated store traffic at ``rate`` events/s; each event's time is
set to its scheduled send time (epoch ms), so latency is measured from the moment the event
"happened" and includes the producer's own delay (reported apart, it is near zero).

ClickHouse: an event is *visible* once a live row of its session whose ``end_ms`` is at or
after the event's time can be read from the server (that row's ``events`` include it, as a
visitor's events arrive in time order). A poller reads every 100 ms the rows written since
its previous poll (``version`` is the writer's microsecond clock) and keeps, per visitor,
when each larger ``end_ms`` was first seen. An event's latency is the end of the first poll
that shows it minus its event time: an upper bound, too high by at most one poll interval
plus the query time.

Prometheus: a poller scrapes ``journey_events_total`` every 100 ms; the k-th event sent is
counted once the counter (minus its value before the run) reaches k. Events are counted in
roughly the order they were sent (per partition exactly), so this is the usual cumulative
matching of a send-time log against a counter.

The first ``warmup_s`` of events are sent but left out of the percentiles.
"""

from __future__ import annotations

import asyncio
import threading
import time
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import orjson

from streams.bench.data import paced_events
from streams.bench.processes import BenchError, wait_for
from streams.bench.producer import SendLog, produce_paced
from streams.bench.resources import BenchResources
from streams.bench.workers import BenchWorker, probe_until_live, start_worker
from streams.clickhouse.address import ServerAddress
from streams.clickhouse.server import ServerBackend


@dataclass(frozen=True, slots=True)
class LatencyResult:
    """Percentiles (seconds) over the events sent after the warm-up."""

    rate: float
    events: int
    clickhouse_p50_s: float
    clickhouse_p99_s: float
    clickhouse_max_s: float
    prometheus_p50_s: float
    prometheus_p99_s: float
    producer_delay_p99_s: float
    unseen: int
    flush_interval_s: float
    #: Worker CPU from the first paced event until every one was visible, per event sent.
    worker_cpu_us_per_event: float = float("nan")


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile ``q`` (0-100) of ``values``; NaN for an empty list."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


class VisibilityPoller(threading.Thread):
    """Polls new session rows every ``interval_s``; records when each visitor's end_ms rose."""

    def __init__(
        self,
        address: ServerAddress,
        interval_s: float = 0.1,
        keep: Callable[[str], bool] | None = None,
    ) -> None:
        """Poll the database at ``address`` (its own connection: the driver is not thread-safe).

        ``keep``: follow only the visitors it accepts (all without it).
        """
        super().__init__(name="bench-visibility", daemon=True)
        self.address = address
        self.interval_s = interval_s
        self.keep = keep
        self.lock = threading.Lock()
        #: visitor -> [(seen at epoch ms, end_ms)] with end_ms increasing.
        self.timeline: dict[str, list[tuple[float, int]]] = defaultdict(list)
        self.error: BaseException | None = None
        self._stop_event = threading.Event()

    def run(self) -> None:
        """Poll until stopped; a failure is kept for the caller."""
        floor = 0
        try:
            backend = ServerBackend(self.address)
            try:
                while not self._stop_event.is_set():
                    floor = self._poll(backend, floor)
                    self._stop_event.wait(self.interval_s)
            finally:
                backend.close()
        except BaseException as exc:
            self.error = exc

    def _poll(self, backend: ServerBackend, floor: int) -> int:
        """Read the rows above version ``floor``; the floor of the next poll.

        Every row of one write has the same version, and one worker's writes are one at a
        time, so when a poll reads rows of versions up to ``newest``, every earlier write
        is complete. The newest one may not be: a write spanning two months of session
        starts lands as two parts, which become visible one after the other. So the next
        poll starts above ``newest`` only once a count finds no row of it that this poll
        missed; otherwise it reads that version again (rows already seen change nothing).
        Each row is thus read about once: re-reading a fixed margin of versions instead
        made the poller parse every row some ten times, and its CPU is taken from the
        worker it measures on a two-core machine.
        """
        rows = backend.query(
            "SELECT visitor_key, end_ms, version FROM sessions"
            " WHERE deleted = 0 AND version > {floor}",
            {"floor": floor},
        )
        seen_ms = time.time() * 1000.0
        newest = floor
        below = floor  # the highest version read under ``newest``
        at_newest = 0
        keep = self.keep
        with self.lock:
            for visitor, end_ms, version in rows:
                if version > newest:
                    below, newest, at_newest = max(below, newest), version, 0
                elif version < newest:
                    below = max(below, version)
                if version == newest:
                    at_newest += 1
                if keep is not None and not keep(visitor):
                    continue
                line = self.timeline[visitor]
                if not line or end_ms > line[-1][1]:
                    line.append((seen_ms, int(end_ms)))
        if newest == floor:
            return floor
        stored = backend.query(
            "SELECT count() FROM sessions WHERE deleted = 0 AND version = {newest}",
            {"newest": newest},
        )
        return newest if int(stored[0][0]) <= at_newest else below

    def latency_ms(self, visitor: str, event_ms: int) -> float | None:
        """Time from ``event_ms`` until a row of ``visitor`` reaching it was seen, or None."""
        with self.lock:
            line = self.timeline.get(visitor)
            if not line:
                return None
            ends = [end for _, end in line]
            at = bisect_left(ends, event_ms)
            return line[at][0] - event_ms if at < len(line) else None

    def shows_last_events(self, log: SendLog) -> Callable[[], bool]:
        """A check: is every visitor's last event in ``log`` visible? Raises if polling failed.

        A visitor's events arrive in time order, so its last one visible means all are.
        """
        last_of: dict[str, int] = {}
        for visitor, event_ms in zip(log.visitors, log.event_ms, strict=True):
            last_of[visitor] = event_ms

        def check() -> bool:
            if self.error is not None:
                raise BenchError(f"ClickHouse poller failed: {self.error!r}")
            return all(self.latency_ms(v, e) is not None for v, e in last_of.items())

        return check

    def stop(self) -> None:
        """Stop polling and wait for the thread."""
        self._stop_event.set()
        self.join(30)


class CounterPoller(threading.Thread):
    """Scrapes ``journey_events_total`` every ``interval_s``: [(epoch ms, value)]."""

    def __init__(self, worker: BenchWorker, interval_s: float = 0.1) -> None:
        """Scrape ``worker``'s /metrics."""
        super().__init__(name="bench-counter", daemon=True)
        self.worker = worker
        self.interval_s = interval_s
        self.samples: list[tuple[float, float]] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        """Scrape until stopped (a missed scrape is skipped)."""
        while not self._stop_event.is_set():
            totals = self.worker.metrics()
            if totals is not None:
                self.samples.append((time.time() * 1000.0, totals.get("journey_events_total", 0)))
            self._stop_event.wait(self.interval_s)

    def stop(self) -> None:
        """Stop scraping and wait for the thread."""
        self._stop_event.set()
        self.join(30)


def run_latency(
    res: BenchResources,
    *,
    rate: float,
    seconds: float,
    warmup_s: float,
    partitions: int,
    flush_interval_s: float,
    seed: int,
    timeout_s: float,
    label: str = "latency",
) -> LatencyResult:
    """Start a worker on a fresh topic, send ``rate`` events/s for ``seconds``, measure.

    ``label`` names the run's topic, app and database (each run of a bench needs its own).
    """
    topic = res.create_topic(f"{label}-in", partitions)
    events = paced_events(int(rate * seconds), seed)
    worker = start_worker(
        res, label, topic, partitions=partitions, flush_interval_s=flush_interval_s
    )
    visibility = VisibilityPoller(worker.address)
    counter = CounterPoller(worker)
    log = SendLog()
    try:
        worker.wait_ready(timeout_s=120)
        baseline = probe_until_live(res, worker, topic, partitions, timeout_s=120)
        visibility.start()
        counter.start()
        cpu0 = worker.process.cpu_seconds()
        asyncio.run(
            asyncio.wait_for(
                produce_paced(
                    res.connection,
                    topic,
                    partitions,
                    events,
                    len(events),
                    rate,
                    log,
                    encode=orjson.dumps,
                ),
                timeout=seconds + timeout_s,
            )
        )
        sent = len(log.event_ms)
        all_visible = visibility.shows_last_events(log)

        def everything_seen() -> bool:
            worker.process.ensure_alive()
            if not counter.samples or counter.samples[-1][1] - baseline < sent:
                return False
            return all_visible()

        wait_for(
            everything_seen,
            timeout_s=timeout_s,
            interval_s=0.5,
            what="every paced event to be counted and visible",
        )
        cpu_us = (worker.process.cpu_seconds() - cpu0) * 1e6 / max(1, sent)
    finally:
        visibility.stop()
        counter.stop()
        worker.stop()
    skip = int(warmup_s * rate)
    to_clickhouse: list[float] = []
    unseen = 0
    for visitor, event_ms in zip(log.visitors[skip:], log.event_ms[skip:], strict=True):
        latency = visibility.latency_ms(visitor, event_ms)
        if latency is None:
            unseen += 1
        else:
            to_clickhouse.append(latency / 1000.0)
    to_counter = _counter_latencies(counter.samples, baseline, log.event_ms, skip)
    delays = [
        (s - e) / 1000.0 for s, e in zip(log.sent_ms[skip:], log.event_ms[skip:], strict=True)
    ]
    return LatencyResult(
        rate=rate,
        events=len(log.event_ms) - skip,
        clickhouse_p50_s=percentile(to_clickhouse, 50),
        clickhouse_p99_s=percentile(to_clickhouse, 99),
        clickhouse_max_s=max(to_clickhouse, default=float("nan")),
        prometheus_p50_s=percentile(to_counter, 50),
        prometheus_p99_s=percentile(to_counter, 99),
        producer_delay_p99_s=percentile(delays, 99),
        unseen=unseen,
        flush_interval_s=flush_interval_s,
        worker_cpu_us_per_event=cpu_us,
    )


def _counter_latencies(
    samples: list[tuple[float, float]], baseline: float, event_ms: list[int], skip: int
) -> list[float]:
    """Per event k (after ``skip``): first sample with counter - baseline >= k+1, minus its time."""
    times = [t for t, _ in samples]
    counts = [value - baseline for _, value in samples]
    # The counter never decreases; keep the running maximum in case a scrape raced a reset.
    for i in range(1, len(counts)):
        counts[i] = max(counts[i], counts[i - 1])
    out: list[float] = []
    for k in range(skip, len(event_ms)):
        at = bisect_left(counts, k + 1)
        if at < len(counts):
            out.append((times[at] - event_ms[k]) / 1000.0)
    return out
