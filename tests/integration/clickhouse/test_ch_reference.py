"""The independent raw_events reference gives hand-computed figures (for later replay tests)."""

from __future__ import annotations

from pathlib import Path

import pytest
from chrows import T0
from reference_sql import assign_sessions, reference_summary

from streams.clickhouse.embedded import EmbeddedBackend
from streams.clickhouse.writer import ClickHouseWriter

pytestmark = pytest.mark.integration

MIN = 60_000
HOUR = 60 * MIN


def _event(
    eid: str, etype: str, ts: int, visitor: str = "v1", **extra: object
) -> dict[str, object]:
    return {"event_id": eid, "event_type": etype, "ts_ms": ts, "visitor_key": visitor, **extra}


def test_sessions_cut_at_30_minute_gaps_and_24_hours(embedded: EmbeddedBackend) -> None:
    """A 30 min gap stays, 30 min + 1 ms splits, and an always-active visitor splits after 24 h."""
    events = [_event("a1", "page_view", T0), _event("a2", "page_view", T0 + 30 * MIN)]
    events.append(_event("a3", "page_view", T0 + 60 * MIN + 1))  # gap 30 min + 1 ms: new
    # v2 is active every 20 minutes for 25 h: one session of 24 h, then a new one.
    events += [_event(f"b{i}", "page_ping", T0 + i * 20 * MIN, "v2") for i in range(76)]
    ClickHouseWriter(embedded).write_raw_events(events)
    assign_sessions(embedded)
    counts = embedded.query(
        "SELECT visitor_key, session_key, count() FROM ref_event_session"
        " GROUP BY visitor_key, session_key ORDER BY visitor_key, session_key"
    )
    assert [(v, int(n)) for v, _, n in counts] == [("v1", 2), ("v1", 1), ("v2", 73), ("v2", 3)]


def test_reference_summary_of_a_small_store(embedded: EmbeddedBackend) -> None:
    """Two visitors, one purchase, one abandoned cart, surveys: figures computed by hand."""
    events = [
        _event("e1", "page_view", T0),
        _event("e2", "product_view", T0 + 20_000),
        _event("e3", "add_to_cart", T0 + 30_000),
        _event("e4", "purchase", T0 + 30_000, order_id="o1", revenue=25.5),
        _event("e5", "purchase", T0 + 40_000, order_id="o1", revenue=99.0),  # same order
        _event("f1", "page_view", T0 + 5 * MIN, "v2"),
        _event("f2", "add_to_cart", T0 + 5 * MIN + 4_000, "v2"),
        _event("f3", "survey_response", T0 + 5 * MIN + 6_000, "v2", score=4.0, scale=5),
        _event("f4", "survey_response", T0 + 5 * MIN + 7_000, "v2", score=6.0, scale=10),
        _event("g1", "page_view", T0 + 3 * HOUR, "v2"),  # a bounce
    ]
    ClickHouseWriter(embedded).write_raw_events(events)
    summary = reference_summary(embedded, T0, T0 + 24 * HOUR)
    # v1: dwell e1->e2 20 s, e2->e3 10 s; v2 first session: f1->f2 4 s; bounce has none.
    assert summary == {
        "sessions": 3,
        "visitors": 2,
        "page_views": 4,
        "events": 10,
        "bounce_rate": 0.333333,
        "engagement_rate": 0.333333,  # v1 (40 s); v2's first lasts 7 s with 1 page view
        "conversion_rate": 0.333333,
        "cart_abandonment_rate": 0.5,
        "avg_time_on_page_s": 11.333333,
        "avg_session_duration_s": 15.666667,  # (40 + 7 + 0) / 3
        "orders": 1,
        "revenue": 25.5,
        "funnel": {"awareness": 3, "consideration": 2, "purchase": 2, "converted": 1},
        "dropoff": {"awareness": 1, "consideration": 0, "purchase": 1},
        "clv_avg": 25.5,
        "csat": 100.0,
        "nps": -100.0,
        # No user ids: the customers are v1 and v2; v2 carted (purchase stage) but never bought.
        "customers": 2,
        "customer_funnel": {
            "awareness": 2,
            "consideration": 2,
            "purchase": 2,
            "converted": 1,
            "retention": 0,
            "advocacy": 0,  # v2's NPS 6 is no promoter
        },
        "repeat_purchase_rate": 0.0,  # v1 bought in one session
        "advocacy_rate": 0.0,
        "cohorts": [],  # v1's purchase week starts on Monday 2024-04-29, before T0
    }


def test_reference_module_needs_no_engine(tmp_path: Path) -> None:
    """reference_sql never imports the engine; it shares only the rounding of finish()."""
    source = (Path(__file__).parent / "reference_sql.py").read_text()
    assert "streams.engine" not in source
    assert "streams.clickhouse.summary import finish" in source
