"""Batching sink between the engine and ClickHouse: ``add`` rows, ``flush`` them in one go.

Rows are coalesced by key while buffered (a session rewritten a hundred times between
flushes is written once, in its latest state), so the buffer is bounded by the number of
distinct sessions and orders touched, not by the number of events. A flush writes one
insert per table; when ClickHouse is unreachable it retries with capped exponential
backoff for as long as it takes, and the caller, which awaits the flush before taking the
next batch, stops consuming meanwhile: that is the back-pressure. Writes are idempotent
(ReplacingMergeTree by key, version per write), so a retry or a redelivery after a crash
rewrites rows instead of adding them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from streams.engine.rows import OrderRow, SessionRow
from streams.errors import StorageError
from streams.metrics import JourneyMetrics

log = logging.getLogger(__name__)


class RowWriter(Protocol):
    """What the sink needs from the ClickHouse layer: one idempotent write of a batch."""

    def write(
        self,
        sessions: Sequence[SessionRow],
        removed_session_ids: Sequence[str],
        orders: Sequence[OrderRow],
        removed_starts: Mapping[str, int] | None = None,
        *,
        defer_rollups: bool = False,
        also_refresh: Collection[int] = (),
    ) -> Collection[int] | None:
        """Write (replace) sessions, tombstone removed ids and write orders, in one batch.

        ``removed_starts`` maps removed ids to their start (epoch ms) where known. The
        rollups of the minutes touched (returned) are refreshed with those of
        ``also_refresh``, unless ``defer_rollups``.
        """


@dataclass(slots=True)
class Backoff:
    """Capped exponential backoff: 0.5 s, 1 s, 2 s ... up to ``cap_s``."""

    initial_s: float = 0.5
    cap_s: float = 15.0
    attempt: int = 0

    def next_delay(self) -> float:
        """The delay before the next attempt; each call doubles it up to the cap."""
        delay: float = min(self.cap_s, self.initial_s * 2.0**self.attempt)
        self.attempt += 1
        return delay

    def reset(self) -> None:
        """Back to the initial delay after a success."""
        self.attempt = 0


@dataclass(slots=True)
class PendingRows:
    """Rows waiting for the next flush, coalesced by key (latest state wins)."""

    sessions: dict[str, SessionRow] = field(default_factory=dict)
    #: Removed session id -> its start (epoch ms), or None when the caller did not say.
    removed: dict[str, int | None] = field(default_factory=dict)
    orders: dict[str, OrderRow] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.sessions) + len(self.removed) + len(self.orders)


class ClickHouseSink:
    """Buffers engine output and writes it to ClickHouse in batches (see module docstring)."""

    def __init__(
        self,
        writer: RowWriter,
        metrics: JourneyMetrics | None = None,
        *,
        max_rows: int = 50_000,
        flush_interval_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._writer = writer
        self._metrics = metrics
        self._max_rows = max_rows
        self._interval = flush_interval_s
        self._clock = clock
        self._sleep = sleep
        self._pending = PendingRows()
        #: Start minutes of rows written with their rollup refresh deferred.
        self._unrefreshed: set[int] = set()
        self._last_flush = clock()
        self._backoff = Backoff()

    @property
    def pending(self) -> int:
        """Rows buffered and not yet written."""
        return len(self._pending)

    def add(
        self,
        sessions: Iterable[SessionRow] = (),
        removed_session_ids: Iterable[str] = (),
        orders: Iterable[OrderRow] = (),
        removed_starts: Mapping[str, int] | None = None,
    ) -> None:
        """Buffer rows; a later row for the same key replaces the earlier one."""
        pending = self._pending
        starts = removed_starts or {}
        for row in sessions:
            pending.sessions[row.session_id] = row
            pending.removed.pop(row.session_id, None)
        for session_id in removed_session_ids:
            pending.sessions.pop(session_id, None)
            pending.removed[session_id] = starts.get(session_id)
        for order in orders:
            pending.orders[order.order_key] = order
        if self._metrics is not None:
            self._metrics.clickhouse_pending_rows.set(len(pending))

    def due(self) -> bool:
        """True when the buffer is full or the flush interval has passed with rows waiting."""
        if not self._pending:
            return False
        full = len(self._pending) >= self._max_rows
        return full or self._clock() - self._last_flush >= self._interval

    def take(self) -> PendingRows:
        """Everything buffered, to write with :meth:`write`; the buffer starts afresh.

        The worker takes the rows of a flush at once and writes them while it goes on
        processing (see ``Flusher.flush`` in ``streams.worker.flusher``).
        """
        pending, self._pending = self._pending, PendingRows()
        self._last_flush = self._clock()
        return pending

    def write_once(self, pending: PendingRows, defer_rollups: bool = False) -> None:
        """Write taken rows in one batch; raises StorageError (the rows stay the caller's).

        ``defer_rollups``: leave the rollup refresh of the minutes these rows touch to a
        later write (the sink remembers them; see :meth:`write`).
        """
        if not pending and (defer_rollups or not self._unrefreshed):
            return
        started = time.perf_counter()
        try:
            touched = self._writer.write(
                list(pending.sessions.values()),
                sorted(pending.removed),
                list(pending.orders.values()),
                {sid: start for sid, start in pending.removed.items() if start is not None},
                defer_rollups=defer_rollups,
                also_refresh=() if defer_rollups else frozenset(self._unrefreshed),
            )
        except StorageError:
            if self._metrics is not None:
                self._metrics.clickhouse_errors.inc()
            raise
        if defer_rollups:
            self._unrefreshed.update(touched or ())
        else:
            self._unrefreshed.clear()
        if self._metrics is not None:
            self._metrics.clickhouse_write_seconds.observe(time.perf_counter() - started)
            self._metrics.clickhouse_rows.labels("sessions").inc(
                len(pending.sessions) + len(pending.removed)
            )
            self._metrics.clickhouse_rows.labels("orders").inc(len(pending.orders))
            self._metrics.clickhouse_pending_rows.set(len(self._pending))

    def flush_once(self) -> None:
        """Write everything buffered in one batch; raises StorageError and keeps the rows."""
        pending = self._pending
        self._last_flush = self._clock()
        self.write_once(pending)
        if pending is self._pending:
            self._pending = PendingRows()
        if self._metrics is not None:
            self._metrics.clickhouse_pending_rows.set(len(self._pending))

    async def flush(self, should_stop: Callable[[], bool] = lambda: False) -> bool:
        """Flush, retrying with backoff until it succeeds; False if stopped before that.

        The blocking driver call runs in a thread so the event loop keeps serving Kafka
        heartbeats and the metrics endpoint while ClickHouse is slow or down.
        """
        return await self._retry(self.flush_once, should_stop)

    async def write(
        self,
        pending: PendingRows,
        should_stop: Callable[[], bool] = lambda: False,
        defer_rollups: bool = False,
    ) -> bool:
        """:meth:`write_once`, retrying with backoff until it succeeds; False if stopped.

        The worker defers the rollup refresh (``session_minutes``) of the flushes between
        two checkpoints to the flush that comes with the next checkpoint: the refresh
        reads every session of the minutes a write touched, and with live traffic that is
        the last half hour's minutes at every 2-s flush (about a third of a write's time).
        Deferring it is safe for the figures: the input whose rows it covers is not
        acknowledged before that checkpoint, so after a crash it is applied again, its
        rows rewritten and their minutes refreshed. Dashboards' rollups then lag the
        sessions by up to a checkpoint interval.
        """
        return await self._retry(lambda: self.write_once(pending, defer_rollups), should_stop)

    async def _retry(self, attempt: Callable[[], None], should_stop: Callable[[], bool]) -> bool:
        while True:
            try:
                await asyncio.to_thread(attempt)
            except StorageError as exc:
                if should_stop():
                    return False
                delay = self._backoff.next_delay()
                log.warning("ClickHouse write failed (%s); retrying in %.1f s", exc, delay)
                await self._sleep(delay)
                continue
            self._backoff.reset()
            return True
