"""Real data: the OTTO fixture through ``journey replay`` against two engine-free oracles."""

from __future__ import annotations

import json
from contextlib import closing
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from reference_sql import reference_summary
from replay_support import otto_events, plain_sessions, replay, summary_text

from streams.clickhouse.embedded import EmbeddedBackend

#: The keys SPEC section 6 lists for ``journey summary --json``.
SPEC_KEYS = {
    "sessions", "visitors", "page_views", "events", "bounce_rate", "engagement_rate",
    "conversion_rate", "cart_abandonment_rate", "avg_time_on_page_s", "avg_session_duration_s",
    "orders", "revenue", "funnel", "dropoff", "clv_avg", "csat", "nps", "customers",
    "customer_funnel", "repeat_purchase_rate", "advocacy_rate", "cohorts",
}  # fmt: skip

PAGE_TYPES = {"page_view", "product_view"}
DECISION_TYPES = {"add_to_cart", "begin_checkout", "purchase"}


@pytest.fixture
def otto_replayed(otto_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """An embedded folder holding the OTTO replay, raw_events included."""
    folder = str(tmp_path / "clickhouse")
    replay(capsys, folder, str(otto_file), "--raw-events")
    return folder


def test_otto_summary_equals_sql_reference(
    otto_replayed: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """On every key, the OTTO summary equals reference_sql's recomputation from raw_events."""
    printed = json.loads(summary_text(capsys, otto_replayed))
    with closing(EmbeddedBackend(otto_replayed)) as backend:
        expected = reference_summary(backend)
    assert set(printed) == SPEC_KEYS
    assert expected["events"] == 862, "raw_events should hold every OTTO event"
    differing = {k: (printed[k], expected[k]) for k in SPEC_KEYS if printed[k] != expected[k]}
    assert not differing, f"summary vs reference (printed, expected): {differing}"


def _hand_figures(events: list[dict[str, Any]]) -> dict[str, Any]:
    """The figures of SPEC section 5 over OTTO, by plain Python (no engine, no SQL)."""
    sessions = plain_sessions(events)
    n = len(sessions)
    durations, dwell = [], []
    bounced = engaged = converted = carts = abandoned = decided = 0
    for session in sessions:
        types = [e["event_type"] for e in session]
        times = [e["timestamp"] for e in session]
        page_views = sum(t in PAGE_TYPES for t in types)
        bought = "purchase" in types
        duration = times[-1] - times[0]
        durations.append(duration)
        bounced += page_views == 1 and len(types) == 1
        engaged += duration >= 10_000 or page_views >= 2 or bought
        converted += bought
        carts += "add_to_cart" in types
        abandoned += "add_to_cart" in types and not bought
        decided += bool(DECISION_TYPES & set(types))
        for t, ts in zip(types, times, strict=True):
            later = [x for x in times if x > ts]
            if t in PAGE_TYPES and later:
                dwell.append(min(later) - ts)
    return {
        "sessions": n,
        "visitors": len({e["anonymous_id"] for e in events}),
        "events": len(events),
        "page_views": sum(e["event_type"] in PAGE_TYPES for e in events),
        "orders": sum(e["event_type"] == "purchase" for e in events),  # no order_id: one each
        "bounce_rate": bounced / n,
        "engagement_rate": engaged / n,
        "conversion_rate": converted / n,
        "cart_abandonment_rate": abandoned / carts,
        "avg_time_on_page_s": sum(dwell) / len(dwell) / 1000,
        "avg_session_duration_s": sum(durations) / n / 1000,
        # Every OTTO event is a product view or a decision event: no session stops at awareness.
        "funnel": {"awareness": n, "consideration": n, "purchase": decided, "converted": converted},
        "dropoff": {"awareness": 0, "consideration": n - decided, "purchase": decided - converted},
    }


def _hand_customer_figures(events: list[dict[str, Any]]) -> dict[str, Any]:
    """SPEC 5b over OTTO by plain Python: no user ids, so each visitor is its own customer."""
    by_visitor: dict[str, list[list[dict[str, Any]]]] = {}
    for session in plain_sessions(events):
        by_visitor.setdefault(session[0]["anonymous_id"], []).append(session)
    funnel = dict.fromkeys(("consideration", "purchase", "converted", "retention"), 0)
    buyers = repeaters = 0
    cohorts: dict[date, list[int]] = {}
    for sessions in by_visitor.values():
        sessions.sort(key=lambda s: s[0]["timestamp"])
        bought = [any(e["event_type"] == "purchase" for e in s) for s in sessions]
        types = {e["event_type"] for s in sessions for e in s}
        funnel["consideration"] += "product_view" in types or bool(DECISION_TYPES & types)
        funnel["purchase"] += bool(DECISION_TYPES & types)
        funnel["converted"] += any(bought)
        # Retention: a session after one with a purchase.
        funnel["retention"] += any(any(bought[:i]) for i in range(1, len(sessions)))
        buyers += any(bought)
        repeaters += sum(bought) >= 2
        times = [e["timestamp"] for s in sessions for e in s if e["event_type"] == "purchase"]
        if times:
            weeks = {_monday(t) for t in times}
            retained = cohorts.setdefault(min(weeks), [0] * 12)
            for week in weeks:
                if (week - min(weeks)).days // 7 < 12:
                    retained[(week - min(weeks)).days // 7] += 1
    return {
        "customers": len(by_visitor),
        "customer_funnel": {"awareness": len(by_visitor), **funnel, "advocacy": 0},
        "repeat_purchase_rate": round(repeaters / buyers, 6),
        "advocacy_rate": 0.0,
        "cohorts": [
            {"week": w.isoformat(), "customers": r[0], "retained": r}
            for w, r in sorted(cohorts.items())
        ],
    }


def _monday(ts_ms: int) -> date:
    day = datetime.fromtimestamp(ts_ms / 1000, tz=UTC).date()
    return day - timedelta(days=day.weekday())


def test_otto_customer_figures_match_plain_python(
    otto_replayed: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """OTTO's customers (its visitors: no logins), repeats and weekly cohorts, counted by hand."""
    printed = json.loads(summary_text(capsys, otto_replayed))
    hand = _hand_customer_figures(otto_events())
    assert {key: printed[key] for key in hand} == hand
    assert printed["cohorts"], "OTTO's ten orders should form cohorts"


def test_otto_figures_match_plain_python(
    otto_replayed: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """OTTO's 862 events, 10 orders and 144 thirty-minute sessions come out as counted by hand."""
    printed = json.loads(summary_text(capsys, otto_replayed))
    hand = _hand_figures(otto_events())
    # The fixture's README: 862 events (800 clicks), 20 OTTO sessions; 144 after the 30 min split.
    assert (hand["events"], hand["page_views"], hand["orders"]) == (862, 800, 10)
    assert (hand["visitors"], hand["sessions"]) == (20, 144)
    for key in ("sessions", "visitors", "events", "page_views", "orders", "funnel", "dropoff"):
        assert printed[key] == hand[key], key
    for key in (
        "bounce_rate", "engagement_rate", "conversion_rate", "cart_abandonment_rate",
        "avg_time_on_page_s", "avg_session_duration_s",
    ):  # fmt: skip
        assert printed[key] == pytest.approx(hand[key], abs=1e-6), key
    # No prices in OTTO: ten orders worth nothing, a CLV of zero, and no surveys at all.
    assert (printed["revenue"], printed["clv_avg"]) == (0.0, 0.0)
    assert (printed["csat"], printed["nps"]) == (None, None)
