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


def test_the_demo_reads_metrics_where_the_worker_serves_them() -> None:
    """A wildcard JOURNEY_METRICS_HOST is read on this machine, any other host as given."""
    from streams.demo import _metrics_url
    from streams.settings import Settings

    urls = [
        _metrics_url(Settings.from_env({"JOURNEY_METRICS_HOST": host, "JOURNEY_METRICS_PORT": "9"}))
        for host in ("0.0.0.0", "::", "127.0.0.1", "::1", "metrics.local")
    ]
    assert urls == [
        "http://127.0.0.1:9/metrics",
        "http://127.0.0.1:9/metrics",
        "http://127.0.0.1:9/metrics",
        "http://[::1]:9/metrics",
        "http://metrics.local:9/metrics",
    ]
