"""The batching ClickHouse sink: coalescing, one write per flush, retries with backoff."""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping, Sequence

from msgspec.structs import replace
from prometheus_client import CollectorRegistry

from streams.engine.rows import OrderRow, SessionRow
from streams.errors import StorageError
from streams.metrics import JourneyMetrics
from streams.sink import Backoff, ClickHouseSink


def _session(session_id: str, events: int) -> SessionRow:
    return SessionRow(
        session_id=session_id, visitor_key="v", anonymous_id="v", user_id="", customer_key="v",
        start_ms=0, end_ms=1000, duration_ms=1000, events=events, page_views=events,
        interactions=0, dwell_sum_ms=0, dwell_count=0, landing_page="/", exit_page="/",
        referrer="", channel="Direct", source="(direct)", medium="(none)", campaign="",
        device="desktop", furthest_stage="awareness", furthest_stage_rank=1,
        reached_consideration=0, reached_purchase=0, retention=0, advocacy=0, returning=0,
        bounced=0, engaged=1, converted=0, has_cart=0, cart_adds=0, cart_value=0.0,
        purchases=0, orders=0, revenue=0.0, csat_responses=0, csat_satisfied=0,
        nps_responses=0, nps_promoters=0, nps_detractors=0, closed=0,
    )  # fmt: skip


class RecordingWriter:
    """An in-memory RowWriter that fails a given number of times before succeeding."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.calls: list[tuple[list[SessionRow], list[str], list[OrderRow]]] = []
        self.starts: list[dict[str, int]] = []
        #: (deferred?, minutes refreshed) of each write, as a ClickHouseWriter would.
        self.refreshes: list[tuple[bool, set[int]]] = []

    def write(
        self,
        sessions: Sequence[SessionRow],
        removed_session_ids: Sequence[str],
        orders: Sequence[OrderRow],
        removed_starts: Mapping[str, int] | None = None,
        *,
        defer_rollups: bool = False,
        also_refresh: Collection[int] = (),
    ) -> set[int]:
        if self.failures:
            self.failures -= 1
            raise StorageError("ClickHouse unreachable (simulated by the test writer)")
        self.calls.append((list(sessions), list(removed_session_ids), list(orders)))
        self.starts.append(dict(removed_starts or {}))
        touched = {row.start_ms // 60_000 * 60_000 for row in sessions}
        self.refreshes.append(
            (defer_rollups, set() if defer_rollups else touched | set(also_refresh))
        )
        return touched


def test_rows_are_coalesced_latest_state_wins() -> None:
    """A session rewritten between flushes is written once, in its latest state."""
    writer = RecordingWriter()
    sink = ClickHouseSink(writer, max_rows=100)
    sink.add(sessions=[_session("a", 1), _session("b", 1)])
    sink.add(sessions=[_session("a", 3)])
    assert sink.pending == 2
    sink.flush_once()
    assert len(writer.calls) == 1
    sessions, removed, orders = writer.calls[0]
    assert {row.session_id: row.events for row in sessions} == {"a": 3, "b": 1}
    assert removed == []
    assert orders == []
    assert sink.pending == 0


def test_tombstone_replaces_a_pending_row_and_a_rewrite_revives_it() -> None:
    """A removed session id drops its pending row; a later row for it cancels the removal."""
    writer = RecordingWriter()
    sink = ClickHouseSink(writer)
    sink.add(sessions=[_session("a", 1), _session("b", 1)])
    sink.add(removed_session_ids=["b", "d"], removed_starts={"b": 1234})
    sink.flush_once()
    sessions, removed, _ = writer.calls[0]
    assert [row.session_id for row in sessions] == ["a"]
    assert removed == ["b", "d"]
    assert writer.starts[0] == {"b": 1234}  # "d" came without a start: none is made up
    sink.add(removed_session_ids=["c"])
    sink.add(sessions=[_session("c", 2)])
    sink.flush_once()
    sessions, removed, _ = writer.calls[1]
    assert [row.session_id for row in sessions] == ["c"]
    assert removed == []


def test_due_by_size_or_interval() -> None:
    """A flush is due when the buffer is full or the interval passed, never when empty."""
    now = [100.0]
    sink = ClickHouseSink(RecordingWriter(), max_rows=2, flush_interval_s=5, clock=lambda: now[0])
    assert not sink.due()
    sink.add(sessions=[_session("a", 1)])
    assert not sink.due()
    now[0] += 5
    assert sink.due()
    now[0] -= 5
    sink.add(sessions=[_session("b", 1)])
    assert sink.due()


def test_failed_flush_keeps_rows_and_retries_with_backoff() -> None:
    """While ClickHouse fails the rows stay buffered; retries back off, then one write lands."""
    writer = RecordingWriter(failures=3)
    metrics = JourneyMetrics.create(CollectorRegistry())
    delays: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        delays.append(seconds)

    sink = ClickHouseSink(writer, metrics, sleep=fake_sleep)
    sink.add(sessions=[_session("a", 1)], orders=[])
    assert asyncio.run(sink.flush()) is True
    assert delays == [0.5, 1.0, 2.0]
    assert len(writer.calls) == 1
    assert metrics.registry.get_sample_value("journey_clickhouse_errors_total") == 3
    assert (
        metrics.registry.get_sample_value("journey_clickhouse_rows_total", {"table": "sessions"})
        == 1
    )


def test_flush_gives_up_only_when_told_to_stop() -> None:
    """A stopping worker leaves the retry loop with the rows still buffered."""
    writer = RecordingWriter(failures=10)

    async def no_sleep(seconds: float) -> None:
        return None

    sink = ClickHouseSink(writer, sleep=no_sleep)
    sink.add(sessions=[_session("a", 1)])
    assert asyncio.run(sink.flush(should_stop=lambda: True)) is False
    assert sink.pending == 1


def test_backoff_doubles_up_to_the_cap() -> None:
    """Delays double from the initial value and stop growing at the cap; reset starts over."""
    backoff = Backoff(initial_s=1, cap_s=5)
    assert [backoff.next_delay() for _ in range(5)] == [1, 2, 4, 5, 5]
    backoff.reset()
    assert backoff.next_delay() == 1


def test_orders_coalesce_by_order_key() -> None:
    """Two rows for one order key leave one row, the later one."""
    writer = RecordingWriter()
    sink = ClickHouseSink(writer)
    order = OrderRow("o1", "o1", "s", "v", "v", 1, 10.0, "EUR")
    sink.add(orders=[order, replace(order, revenue=12.5)])
    sink.flush_once()
    assert [o.revenue for o in writer.calls[0][2]] == [12.5]


def test_deferred_rollup_minutes_are_refreshed_by_the_next_write_that_does_not_defer() -> None:
    """Minutes of deferred writes, including one that failed first, reach the next refresh.

    A refreshing write with no rows of its own still happens when minutes wait for it;
    afterwards nothing waits.
    """
    writer = RecordingWriter(failures=1)

    async def no_sleep(seconds: float) -> None:
        pass

    sink = ClickHouseSink(writer, None, sleep=no_sleep)
    minute = 60_000
    sink.add(sessions=[replace(_session("a", 1), start_ms=0)], orders=[])
    assert asyncio.run(sink.write(sink.take(), defer_rollups=True)) is True  # after a failure
    sink.add(sessions=[replace(_session("b", 1), start_ms=3 * minute + 5)], orders=[])
    assert asyncio.run(sink.write(sink.take(), defer_rollups=True)) is True
    assert asyncio.run(sink.write(sink.take(), defer_rollups=False)) is True  # no rows
    sink.add(sessions=[replace(_session("c", 1), start_ms=7 * minute)], orders=[])
    assert asyncio.run(sink.write(sink.take())) is True
    assert writer.refreshes == [
        (True, set()),
        (True, set()),
        (False, {0, 3 * minute}),
        (False, {7 * minute}),
    ]
    assert asyncio.run(sink.write(sink.take())) is True
    assert len(writer.refreshes) == 4  # nothing to write, nothing to refresh
