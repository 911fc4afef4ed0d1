"""Soak: generated store traffic at a steady rate for minutes; latency and memory per minute.

The latency phase's 60 s show a worker that has not yet filled its memory. Here a fresh
worker gets the traffic model's store (multi-event sessions that stay open for the
30-minute timeout) at ``rate`` events/s for ``minutes``, and each minute reports:

* event to ClickHouse-visible p50 and p99, measured as in the latency phase (event time =
  scheduled send time; ``VisibilityPoller``), over the events of one visitor in
  ``SAMPLE`` (chosen by a hash of the key, so a followed visitor's every event counts);
* the worker's RSS and open sessions at the minute's end, and the bytes per open session
  (RSS growth since the start over the sessions opened since), with real sessions rather
  than the memory phase's one-event visitors.

Generating traffic costs about 65 us an event, more than the worker spends, so one
minute of it (``POOL_S``) is generated before the run and sent again and again, each round
with its own visitors, events and orders (``rounds``): to the worker every round is new
store traffic, and the bench's own CPU stays small beside the worker it measures.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from streams.bench.data import paced_events
from streams.bench.latency import VisibilityPoller, percentile
from streams.bench.processes import wait_for
from streams.bench.producer import SendLog, produce_paced
from streams.bench.resources import BenchResources
from streams.bench.workers import BenchWorker, probe_until_live, start_worker

#: One visitor in SAMPLE is followed for latency (all of its events).
SAMPLE = 8
#: Seconds of traffic generated before the run and sent round after round.
POOL_S = 60.0
#: Ids made distinct per round (top-level fields, then members of ``properties``).
_IDS = ("event_id", "anonymous_id", "user_id")
_PROPERTY_IDS = ("order_id", "cart_id")


def followed(visitor: str) -> bool:
    """Whether ``visitor`` is one of the sample whose latency is measured."""
    return zlib.crc32(visitor.encode()) % SAMPLE == 0


def rounds(pool: Sequence[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """The ``pool`` events again and again; round k > 0 suffixes every id with ``~k``.

    Yields copies (the producer stamps each one's time), so the pool is never changed.
    """
    for k in itertools.count():
        suffix = f"~{k}" if k else ""
        for event in pool:
            copy = dict(event)
            if suffix:
                for name in _IDS:
                    value = copy.get(name)
                    if isinstance(value, str):
                        copy[name] = value + suffix
                props = copy.get("properties")
                if isinstance(props, dict) and any(name in props for name in _PROPERTY_IDS):
                    props = copy["properties"] = dict(props)
                    for name in _PROPERTY_IDS:
                        if name in props:
                            props[name] = f"{props[name]}{suffix}"
            yield copy


@dataclass(frozen=True, slots=True)
class SoakMinute:
    """One minute of the soak: latency of its followed events; the worker at its end."""

    minute: int
    events: int
    p50_s: float
    p99_s: float
    unseen: int
    rss_bytes: int
    open_sessions: int
    bytes_per_open_session: float


@dataclass(frozen=True, slots=True)
class SoakResult:
    """Every minute of a soak at ``rate`` events/s."""

    rate: float
    flush_interval_s: float
    minutes: list[SoakMinute]

    @property
    def worst_p99_s(self) -> float:
        """The highest per-minute p99 (NaN without minutes)."""
        return max((m.p99_s for m in self.minutes), default=float("nan"))

    @property
    def bytes_per_open_session(self) -> float:
        """Bytes per open session at the end of the last minute (NaN without minutes)."""
        return self.minutes[-1].bytes_per_open_session if self.minutes else float("nan")


class _Readings(threading.Thread):
    """Reads the worker's RSS and open sessions at every minute's end."""

    def __init__(self, worker: BenchWorker, began: float, minutes: int) -> None:
        super().__init__(name="bench-soak-readings", daemon=True)
        self.worker = worker
        self.began = began
        self.minutes = minutes
        #: (RSS bytes, open sessions) at the end of each minute.
        self.readings: list[tuple[int, int]] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        for minute in range(1, self.minutes + 1):
            if self._stop_event.wait(max(0.0, self.began + 60.0 * minute - time.monotonic())):
                return
            totals = self.worker.metrics() or {}
            rss = self.worker.process.rss_bytes()
            self.readings.append((rss, int(totals.get("journey_open_sessions", 0))))

    def stop(self) -> None:
        self._stop_event.set()
        self.join(30)


def run_soak(
    res: BenchResources,
    *,
    rate: float,
    minutes: int,
    partitions: int,
    flush_interval_s: float,
    seed: int,
    timeout_s: float,
) -> SoakResult:
    """Start a worker on a fresh topic, send ``rate`` events/s for ``minutes``, measure."""
    topic = res.create_topic("soak-in", partitions)
    pool = paced_events(int(rate * min(POOL_S, 60.0 * minutes)), seed)
    worker = start_worker(
        res, "soak", topic, partitions=partitions, flush_interval_s=flush_interval_s
    )
    visibility = VisibilityPoller(worker.address, keep=followed)
    log = SendLog()
    count = int(rate * 60 * minutes)
    try:
        worker.wait_ready(timeout_s=120)
        probe_until_live(res, worker, topic, partitions, timeout_s=120)
        rss_before = worker.process.rss_bytes()
        open_before = int((worker.metrics() or {}).get("journey_open_sessions", 0))
        visibility.start()
        began = time.monotonic()
        began_ms = time.time() * 1000.0
        readings = _Readings(worker, began, minutes)
        readings.start()
        try:
            asyncio.run(
                asyncio.wait_for(
                    produce_paced(
                        res.connection, topic, partitions, rounds(pool), count, rate, log,
                        encode=orjson.dumps, keep=followed,
                    ),
                    timeout=60.0 * minutes + timeout_s,
                )
            )  # fmt: skip
            readings.join(timeout=max(0.0, began + 60.0 * minutes + 5 - time.monotonic()))
        finally:
            readings.stop()
        all_visible = visibility.shows_last_events(log)

        def everything_seen() -> bool:
            worker.process.ensure_alive()
            return all_visible()

        wait_for(
            everything_seen,
            timeout_s=timeout_s,
            interval_s=1.0,
            what="every followed soak event to be visible",
        )
    finally:
        visibility.stop()
        worker.stop()
    per_minute: list[list[float]] = [[] for _ in range(minutes)]
    unseen = [0] * minutes
    for visitor, event_ms in zip(log.visitors, log.event_ms, strict=True):
        minute = min(minutes - 1, int((event_ms - began_ms) // 60_000))
        latency = visibility.latency_ms(visitor, event_ms)
        if latency is None:
            unseen[minute] += 1
        else:
            per_minute[minute].append(latency / 1000.0)
    out = []
    for minute, (rss, open_now) in enumerate(readings.readings):
        opened = open_now - open_before
        out.append(
            SoakMinute(
                minute=minute + 1,
                events=len(per_minute[minute]) + unseen[minute],
                p50_s=percentile(per_minute[minute], 50),
                p99_s=percentile(per_minute[minute], 99),
                unseen=unseen[minute],
                rss_bytes=rss,
                open_sessions=open_now,
                bytes_per_open_session=(rss - rss_before) / opened if opened > 0 else float("nan"),
            )
        )
    return SoakResult(rate, flush_interval_s, out)
