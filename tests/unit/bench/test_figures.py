"""``journey bench`` reports every figure next to its target, in the table and in JSON."""

from __future__ import annotations

from typing import Any

from streams.bench.command import _finish, _latency_rates, format_table


def result(**extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "events": 1000,
        "errors": {},
        "machine": {"cores": 2, "cpu_model": "test", "load_average": [0.1, 0.1, 0.1]},
        "versions": {"python": "3"},
        "load_average_end": [0.2, 0.2, 0.2],
    }
    base.update(extra)
    _finish(base)
    return base


def by_key(res: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {figure["key"]: figure for figure in res["figures"]}


def test_targets_met_and_missed_from_the_values() -> None:
    """Each figure's ``met`` follows its target; figures without a value are not judged."""
    res = result(
        events_per_s=30_000.0, naive_faust_events_per_s=5_000.0,
        raw_consume_events_per_s=300_000.0, replay_events_per_s=120_000.0,
        worker={"events_per_cpu_s": 40_000.0, "late": 0}, naive={"inserts": 12},
        latency_runs=[{"share": 0.5, "flush_interval_s": 2.0}, {"share": 0.8}],
        latency_p99_s=3.9, latency_80_p99_s=12.5, bytes_per_open_session=1_100.0,
    )  # fmt: skip
    figures = by_key(res)
    assert figures["ratio_worker_to_naive"]["value"] == 6.0
    assert figures["ratio_worker_to_naive"]["met"] is True
    assert figures["ratio_worker_to_raw"]["met"] is False  # 0.1 < 0.25
    assert figures["events_per_cpu_s"]["met"] is False
    assert figures["naive_inserts"]["met"] is True
    assert figures["late"]["met"] is True
    assert figures["ratio_replay_to_raw"]["value"] == 0.4
    assert figures["ratio_replay_to_raw"]["met"] is True
    assert figures["latency_p99_s"]["met"] is True  # <= 2 s + 2 s flush
    assert figures["latency_80_p99_s"]["met"] is False  # > 3 x 4 s
    assert figures["bytes_per_open_session"]["met"] is False
    assert figures["replay_server_events_per_s"]["met"] is None  # not measured
    table = format_table(res)
    for figure in res["figures"]:
        assert figure["figure"] in table
        if figure["target"]:
            assert figure["target"] in table


def test_auto_latency_rates_follow_the_measured_throughput() -> None:
    """``--latency-rate auto`` runs at 50% and 80% of the worker phase; without it, fails."""
    assert _latency_rates("auto", {"events_per_s": 20_000.0, "errors": {}}) == [
        (0.5, 10_000.0),
        (0.8, 16_000.0),
    ]
    assert _latency_rates(5000.0, {"errors": {}}) == [(None, 5000.0)]
    missing: dict[str, Any] = {"errors": {}}
    assert _latency_rates("auto", missing) == []
    assert "latency" in missing["errors"]


def test_soak_figures_and_minutes_table() -> None:
    """The soak's worst minute is judged against 2 s + its flush; its minutes are tabled."""
    minutes = [
        {"minute": 1, "events": 900, "p50_s": 1.5, "p99_s": 3.0, "unseen": 0,
         "rss_bytes": 300 * 2**20, "open_sessions": 50_000, "bytes_per_open_session": 900.0},
        {"minute": 2, "events": 950, "p50_s": 1.7, "p99_s": 6.5, "unseen": 0,
         "rss_bytes": 400 * 2**20, "open_sessions": 100_000, "bytes_per_open_session": 1000.0},
    ]  # fmt: skip
    res = result(
        soak={"rate": 6_000.0, "share": 0.5, "flush_interval_s": 3.0, "minutes": minutes},
        soak_worst_p99_s=6.5, soak_bytes_per_open_session=1000.0,
    )  # fmt: skip
    figures = by_key(res)
    assert figures["soak_worst_p99_s"]["target"] == "<= 5.0 s (2 s + flush)"
    assert figures["soak_worst_p99_s"]["met"] is False  # 6.5 > 2 + 3
    assert figures["soak_bytes_per_open_session"]["met"] is True
    assert "2 min, 50% of capacity" in figures["soak_worst_p99_s"]["figure"]
    table = format_table(res)
    assert "| 2 | 1.700 s | 6.500 s | 400 MiB | 100,000 | 1,000 B |" in table
