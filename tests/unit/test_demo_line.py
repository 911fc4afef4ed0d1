"""The demo's live line reads the right series from the worker's metrics."""

from __future__ import annotations

from streams.demo import _live_line


def test_consideration_column_counts_only_that_stage() -> None:
    """Sessions reaching consideration are shown, not the sum over every stage."""
    metrics = {
        "journey_stage_reached_total": 30.0,
        "journey_stage_reached_total{stage=consideration}": 7.0,
        "journey_cart_sessions_closed_total": 4.0,
        "journey_carts_abandoned_total": 1.0,
    }
    line = _live_line(metrics, 5.0)
    assert "consideration      7" in line
    assert "abandoned carts 25%" in line
