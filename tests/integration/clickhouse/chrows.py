"""Hand-built SessionRow/OrderRow values for the ClickHouse tests (no engine involved)."""

from __future__ import annotations

from typing import Any

from streams.engine.rows import FUNNEL_STAGES, OrderRow, SessionRow

#: 2024-05-01T00:00:00Z, the start of the one-day period most tests use.
T0 = 1_714_521_600_000
DAY = 86_400_000


def session_row(session_id: str, visitor_key: str, start_ms: int, **fields: Any) -> SessionRow:
    """A SessionRow with neutral defaults (one landing page view); ``fields`` override."""
    rank = int(fields.pop("rank", 1))
    values: dict[str, Any] = {
        "session_id": session_id,
        "visitor_key": visitor_key,
        "anonymous_id": visitor_key,
        "user_id": "",
        "customer_key": visitor_key,
        "start_ms": start_ms,
        "end_ms": start_ms,
        "duration_ms": 0,
        "events": 1,
        "page_views": 1,
        "interactions": 0,
        "dwell_sum_ms": 0,
        "dwell_count": 0,
        "landing_page": "/",
        "exit_page": "/",
        "referrer": "",
        "channel": "Direct",
        "source": "",
        "medium": "",
        "campaign": "",
        "device": "desktop",
        "furthest_stage": FUNNEL_STAGES[rank - 1],
        "furthest_stage_rank": rank,
        "reached_consideration": int(rank >= 2),
        "reached_purchase": int(rank >= 3),
        "retention": 0,
        "advocacy": 0,
        "returning": 0,
        "bounced": 0,
        "engaged": 0,
        "converted": 0,
        "has_cart": 0,
        "cart_adds": 0,
        "cart_value": 0.0,
        "purchases": 0,
        "orders": 0,
        "revenue": 0.0,
        "csat_responses": 0,
        "csat_satisfied": 0,
        "nps_responses": 0,
        "nps_promoters": 0,
        "nps_detractors": 0,
        "closed": 1,
        "link_user_id": "",
        "link_ms": 0,
        "link_event_id": "",
        "first_purchase_ms": 0,
        "last_purchase_ms": 0,
    }
    unknown = set(fields) - set(values)
    assert not unknown, f"unknown SessionRow fields {unknown}"
    values.update(fields)
    if "duration_ms" in fields and "end_ms" not in fields:
        values["end_ms"] = start_ms + values["duration_ms"]
    return SessionRow(**values)


def order_row(order_id: str, session: SessionRow, ts_ms: int, revenue: float) -> OrderRow:
    """An order of ``session``'s customer at ``ts_ms``."""
    return OrderRow(
        order_key=order_id,
        order_id=order_id,
        session_id=session.session_id,
        visitor_key=session.visitor_key,
        customer_key=session.customer_key,
        ts_ms=ts_ms,
        revenue=revenue,
        currency="EUR",
    )


def worked_example() -> tuple[list[SessionRow], list[OrderRow]]:
    """The dataset of docs/metrics.md: five sessions in [T0, T0+DAY), two outside.

    Hand-computed figures for that period are :data:`WORKED_EXAMPLE_SUMMARY`.
    """
    s0 = session_row(
        "s0",
        "v1",
        T0 - 1,
        customer_key="u1",
        user_id="u1",
        link_user_id="u1",
        link_ms=T0 - 1,
        link_event_id="e0",
        rank=3,
        converted=1,
        first_purchase_ms=T0 - 1,
        last_purchase_ms=T0 - 1,
        orders=1,
        revenue=100.0,
        nps_responses=1,
        nps_detractors=1,
        events=3,
        interactions=2,
    )
    s1 = session_row(
        "s1",
        "v1",
        T0,
        customer_key="u1",
        user_id="u1",
        duration_ms=120_000,
        events=5,
        page_views=3,
        interactions=2,
        dwell_sum_ms=90_000,
        dwell_count=3,
        rank=3,
        engaged=1,
        converted=1,
        first_purchase_ms=T0 + 100_000,
        last_purchase_ms=T0 + 100_000,
        has_cart=1,
        cart_adds=1,
        purchases=1,
        orders=1,
        revenue=50.0,
        nps_responses=3,
        nps_promoters=2,
        nps_detractors=1,
    )
    s2 = session_row("s2", "v2", T0 + 60_000, bounced=1)
    s3 = session_row(
        "s3",
        "v1",
        T0 + 3_600_000,
        customer_key="u1",
        user_id="u1",
        duration_ms=30_000,
        events=4,
        page_views=2,
        interactions=2,
        dwell_sum_ms=20_000,
        dwell_count=2,
        rank=3,
        engaged=1,
        has_cart=1,
        cart_adds=1,
        csat_responses=2,
        csat_satisfied=1,
    )
    s4 = session_row(
        "s4",
        "v3",
        T0 + 7_200_000,
        duration_ms=5_000,
        events=2,
        interactions=1,
        dwell_sum_ms=5_000,
        dwell_count=1,
        rank=2,
        channel="Organic Search",
        device="mobile",
    )
    s5 = session_row(
        "s5",
        "v4",
        T0 + DAY - 1,
        customer_key="u4",
        user_id="u4",
        link_user_id="u4",
        link_ms=T0 + DAY - 1,
        link_event_id="e5",
        duration_ms=15_000,
        events=3,
        interactions=2,
        rank=3,
        engaged=1,
        converted=1,
        first_purchase_ms=T0 + DAY - 1,
        last_purchase_ms=T0 + DAY - 1,
        has_cart=1,
        cart_adds=1,
        purchases=1,
        orders=1,
        revenue=20.01,
        channel="Paid Search",
    )
    s6 = session_row("s6", "v5", T0 + DAY, bounced=1)
    orders = [
        order_row("o0", s0, T0 - 1, 100.0),
        order_row("o1", s1, T0 + 100_000, 50.0),
        order_row("o5", s5, T0 + DAY - 1, 20.01),
    ]
    return [s0, s1, s2, s3, s4, s5, s6], orders


#: The summary of :func:`worked_example` over [T0, T0+DAY), computed by hand (docs/metrics.md).
WORKED_EXAMPLE_SUMMARY: dict[str, Any] = {
    "sessions": 5,
    "visitors": 4,
    "page_views": 8,
    "events": 15,
    "bounce_rate": 0.2,
    "engagement_rate": 0.6,
    "conversion_rate": 0.4,
    "cart_abandonment_rate": 0.333333,
    "avg_time_on_page_s": 19.166667,
    "avg_session_duration_s": 34.0,
    "orders": 2,
    "revenue": 70.01,
    "funnel": {"awareness": 5, "consideration": 4, "purchase": 3, "converted": 2},
    "dropoff": {"awareness": 1, "consideration": 1, "purchase": 1},
    "clv_avg": 85.01,
    "csat": 50.0,
    "nps": 33.333333,
    # v1 is linked to u1 (s0's link), v4 to u4: s1..s5 belong to u1, v2, v3, u4.
    "customers": 4,
    "customer_funnel": {
        "awareness": 4,
        "consideration": 3,  # u1 (s1, s3), v3 (s4), u4 (s5)
        "purchase": 2,  # u1, u4
        "converted": 2,  # u1 (s1), u4 (s5)
        "retention": 0,
        "advocacy": 0,
    },
    # Before the end: u1 bought in s0 and s1 (a repeat), u4 in s5.
    "repeat_purchase_rate": 0.5,
    "advocacy_rate": 0.0,
    # Every purchase falls in the week of Monday 2024-04-29, which starts before T0.
    "cohorts": [],
}
