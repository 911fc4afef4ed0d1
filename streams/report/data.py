"""The figures of the journey report, read by SQL from the ClickHouse tables.

Everything comes from ``sessions FINAL`` and ``orders FINAL`` with ``deleted = 0`` (never
from worker memory), with the period rules of ``docs/metrics.md``: a session belongs to
the period in which it started (``[from_ms, to_ms)``). The headline figures are
:func:`~streams.clickhouse.summary.compute_summary` itself, so the report and
``journey summary`` can never disagree. SQL returns integer counts and sums only; the
page divides. The SQL runs unchanged on ClickHouse 18.16 and chdb 26.x (no aliases equal
to a column name, integer time arithmetic). Money is also read by currency (the
``currency`` of the purchase events), which the page uses to label it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from streams.clickhouse.backend import ClickHouse
from streams.clickhouse.dialect import FINAL
from streams.clickhouse.summary import compute_summary

#: Time-on-page buckets: (label, upper bound in seconds of a session's mean time on page).
TIME_ON_PAGE_BUCKETS: tuple[tuple[str, int | None], ...] = (
    ("< 5 s", 5),
    ("5-15 s", 15),
    ("15-30 s", 30),
    ("30-60 s", 60),
    ("1-2 min", 120),
    ("2-5 min", 300),
    ("5 min +", None),
)
#: Candidate trend bucket sizes (ms); the smallest giving at most MAX_TREND_BUCKETS wins.
TREND_BUCKETS_MS: tuple[int, ...] = (
    60_000,
    300_000,
    900_000,
    3_600_000,
    6 * 3_600_000,
    86_400_000,
    7 * 86_400_000,
)
MAX_TREND_BUCKETS = 48


@dataclass(frozen=True, slots=True)
class StageFlow:
    """Sessions by how far they went: the partition the Sankey diagram draws."""

    left_at_awareness: int
    left_at_consideration: int
    abandoned_at_purchase: int
    converted: int

    @property
    def sessions(self) -> int:
        """Every session of the period (the four parts add up to it)."""
        return (
            self.left_at_awareness
            + self.left_at_consideration
            + self.abandoned_at_purchase
            + self.converted
        )

    @property
    def consideration(self) -> int:
        """Sessions whose furthest stage is consideration or purchase."""
        return self.left_at_consideration + self.purchase

    @property
    def purchase(self) -> int:
        """Sessions whose furthest stage is purchase (converted or not)."""
        return self.abandoned_at_purchase + self.converted


@dataclass(frozen=True, slots=True)
class ChannelRow:
    """One channel's sessions and outcomes."""

    channel: str
    sessions: int
    consideration: int
    purchase: int
    converted: int
    bounced: int
    revenue_cents: int


@dataclass(frozen=True, slots=True)
class TimeOnPageRow:
    """Sessions whose mean time on page falls in one bucket."""

    label: str
    sessions: int


@dataclass(frozen=True, slots=True)
class DeviceTimeRow:
    """Time on page of one device type: summed dwell and number of measured page views."""

    device: str
    sessions: int
    dwell_sum_ms: int
    dwell_count: int


@dataclass(frozen=True, slots=True)
class TrendRow:
    """Sessions started in one time bucket, and how many converted."""

    start_ms: int
    sessions: int
    converted: int


@dataclass(frozen=True, slots=True)
class CurrencyRow:
    """Orders of the period in one currency (as the purchase events named it; "" if none)."""

    currency: str
    orders: int
    revenue_cents: int


@dataclass(frozen=True, slots=True)
class ReportData:
    """Everything the report page shows, for sessions started in ``[from_ms, to_ms)``."""

    from_ms: int | None
    to_ms: int | None
    first_start_ms: int | None
    last_start_ms: int | None
    summary: dict[str, Any]
    flow: StageFlow
    channels: tuple[ChannelRow, ...]
    time_on_page: tuple[TimeOnPageRow, ...]
    devices: tuple[DeviceTimeRow, ...]
    trend_bucket_ms: int
    trend: tuple[TrendRow, ...]
    currencies: tuple[CurrencyRow, ...] = ()
    lifetime_currencies: tuple[str, ...] = ()


def _period(from_ms: int | None, to_ms: int | None, column: str = "start_ms") -> str:
    clauses = [f" AND {column} >= {int(from_ms)}" if from_ms is not None else ""]
    clauses.append(f" AND {column} < {int(to_ms)}" if to_ms is not None else "")
    return "".join(clauses)


def trend_bucket_ms(first_ms: int, last_ms: int) -> int:
    """The smallest bucket size of TREND_BUCKETS_MS that shows the span in few buckets."""
    for size in TREND_BUCKETS_MS:
        if (last_ms // size) - (first_ms // size) + 1 <= MAX_TREND_BUCKETS:
            return size
    return TREND_BUCKETS_MS[-1]


def _time_on_page_sql(where: str) -> str:
    # A session's mean time on page is dwell_sum_ms / dwell_count; comparing
    # dwell_sum_ms with bound * dwell_count keeps the bucketing in integers.
    cases = ", ".join(
        f"dwell_sum_ms < {bound * 1000} * dwell_count, {i}"
        for i, (_, bound) in enumerate(TIME_ON_PAGE_BUCKETS)
        if bound is not None
    )
    return (
        f"SELECT multiIf({cases}, {len(TIME_ON_PAGE_BUCKETS) - 1}) AS bucket_index, count()"
        f" FROM sessions {FINAL} WHERE {where} AND dwell_count > 0"
        " GROUP BY bucket_index ORDER BY bucket_index"
    )


def load_report_data(
    backend: ClickHouse, from_ms: int | None = None, to_ms: int | None = None
) -> ReportData:
    """Read every figure of the report from ``backend`` (nine small queries)."""
    where = "deleted = 0" + _period(from_ms, to_ms)
    table = f"sessions {FINAL} WHERE {where}"
    summary = compute_summary(backend, from_ms, to_ms)

    (flow_row,) = backend.query(
        "SELECT countIf(furthest_stage_rank <= 1), countIf(furthest_stage_rank = 2),"
        " countIf(furthest_stage_rank >= 3 AND converted = 0),"
        f" countIf(furthest_stage_rank >= 3 AND converted = 1) FROM {table}"
    )
    flow = StageFlow(*(int(v) for v in flow_row))

    channels = tuple(
        ChannelRow(str(r[0]), *(int(v) for v in r[1:]))
        for r in backend.query(
            "SELECT channel, count(), countIf(furthest_stage_rank >= 2),"
            " countIf(furthest_stage_rank >= 3), sum(converted), sum(bounced),"
            f" sum(toInt64(round(revenue * 100))) FROM {table}"
            " GROUP BY channel ORDER BY count() DESC, channel"
        )
    )

    counts = {int(i): int(n) for i, n in backend.query(_time_on_page_sql(where))}
    time_on_page = tuple(
        TimeOnPageRow(label, counts.get(i, 0)) for i, (label, _) in enumerate(TIME_ON_PAGE_BUCKETS)
    )

    devices = tuple(
        DeviceTimeRow(str(r[0]), int(r[1]), int(r[2]), int(r[3]))
        for r in backend.query(
            f"SELECT device, count(), sum(dwell_sum_ms), sum(dwell_count) FROM {table}"
            " GROUP BY device ORDER BY count() DESC, device"
        )
    )

    (span,) = backend.query(f"SELECT count(), min(start_ms), max(start_ms) FROM {table}")
    first = last = None
    bucket = TREND_BUCKETS_MS[0]
    trend: tuple[TrendRow, ...] = ()
    if int(span[0]):
        first, last = int(span[1]), int(span[2])
        bucket = trend_bucket_ms(first, last)
        trend = tuple(
            TrendRow(int(r[0]), int(r[1]), int(r[2]))
            for r in backend.query(
                f"SELECT intDiv(start_ms, {bucket}) * {bucket} AS bucket_start, count(),"
                f" sum(converted) FROM {table} GROUP BY bucket_start ORDER BY bucket_start"
            )
        )
    # Money by currency: the period's orders (as revenue), all orders up to its end (as
    # CLV); an order's time is its earliest purchase event's, as in compute_summary.
    orders_where = "deleted = 0" + _period(from_ms, to_ms, "ts_ms")
    currencies = tuple(
        CurrencyRow(str(r[0]), int(r[1]), int(r[2]))
        for r in backend.query(
            f"SELECT currency, count(), sum(toInt64(round(revenue * 100))) FROM orders {FINAL}"
            f" WHERE {orders_where} GROUP BY currency ORDER BY currency"
        )
    )
    lifetime_currencies = tuple(
        str(r[0])
        for r in backend.query(
            f"SELECT DISTINCT currency FROM orders {FINAL}"
            f" WHERE deleted = 0{_period(None, to_ms, 'ts_ms')} ORDER BY currency"
        )
    )
    return ReportData(
        from_ms=from_ms,
        to_ms=to_ms,
        first_start_ms=first,
        last_start_ms=last,
        summary=summary,
        flow=flow,
        channels=channels,
        time_on_page=time_on_page,
        devices=devices,
        trend_bucket_ms=bucket,
        trend=trend,
        currencies=currencies,
        lifetime_currencies=lifetime_currencies,
    )
