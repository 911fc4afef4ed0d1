"""Memory per open session: worker RSS before and after ``count`` one-event visitors.

A fresh worker is warmed with probe events (every partition's state exists, the first
ClickHouse insert is done), its RSS (``VmRSS`` of ``/proc/PID/status``) read; then
``count`` distinct visitors send one landing page view each with event time = now, so all
their sessions stay open (the timeout is 30 minutes). Once ``journey_open_sessions``
shows them all and the ClickHouse buffer is flushed, RSS is read again (after a short
settle). Bytes per open session = RSS growth / sessions opened, counting everything a
session costs the worker: sessionizer state, the Faust table's copy of the visitor record,
offsets, and whatever the allocator keeps from the batches that carried them.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from streams.bench.data import single_event_visitors
from streams.bench.processes import BenchError
from streams.bench.producer import produce_bulk
from streams.bench.resources import BenchResources
from streams.bench.workers import probe_until_live, settle, start_worker
from streams.settings import Settings
from streams.worker.flusher import ENCODE_SPREAD


@dataclass(frozen=True, slots=True)
class MemoryResult:
    """RSS readings (bytes) and the open sessions they bracket."""

    sessions: int
    rss_before: int
    rss_after: int
    open_before: int
    open_after: int

    @property
    def bytes_per_session(self) -> float:
        """RSS growth per session opened."""
        opened = self.open_after - self.open_before
        return (self.rss_after - self.rss_before) / opened if opened > 0 else float("nan")


def run_memory(
    res: BenchResources,
    *,
    count: int,
    partitions: int,
    flush_interval_s: float,
    seed: int,
    timeout_s: float,
) -> MemoryResult:
    """Open ``count`` sessions in a fresh worker and measure its RSS growth."""
    topic = res.create_topic("memory-in", partitions)
    worker = start_worker(
        res, "memory", topic, partitions=partitions, flush_interval_s=flush_interval_s
    )
    try:
        worker.wait_ready(timeout_s=120)
        probe_until_live(res, worker, topic, partitions, visitors=8 * partitions, timeout_s=120)
        settle(flush_interval_s + 1.0)
        rss_before = worker.process.rss_bytes()
        open_before = int((worker.metrics() or {}).get("journey_open_sessions", 0))
        keys, values = single_event_visitors(count, seed, int(time.time() * 1000))
        asyncio.run(
            produce_bulk(res.connection, topic, partitions, keys, values, timeout_s=timeout_s)
        )
        del keys, values
        deadline = time.monotonic() + timeout_s
        open_after = open_before
        while time.monotonic() < deadline:
            worker.process.ensure_alive()
            totals = worker.metrics() or {}
            open_after = int(totals.get("journey_open_sessions", 0))
            pending = totals.get("journey_clickhouse_pending_rows", 0)
            if open_after >= open_before + count and pending == 0:
                break
            time.sleep(0.5)
        else:
            raise BenchError(
                f"the worker showed {open_after - open_before} of {count} new open sessions "
                f"after {timeout_s:.0f} s"
            )
        # The flush just emptied the buffer; let the checkpoint after it finish too (the
        # worker's default interval for its input path, then its encoding, spread over
        # ENCODE_SPREAD of the interval, and its delivery).
        every = Settings(input_keyed_by_visitor=res.direct).checkpoint_every_s()
        settle(max(flush_interval_s, every * (1 + ENCODE_SPREAD)) + 5.0)
        rss_after = worker.process.rss_bytes()
        open_after = int((worker.metrics() or {}).get("journey_open_sessions", open_after))
    finally:
        worker.stop()
    return MemoryResult(count, rss_before, rss_after, open_before, open_after)
