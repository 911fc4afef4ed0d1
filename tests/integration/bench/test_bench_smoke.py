"""``journey bench`` on the real stack with tiny phases: it finishes and reports every figure.

No timing is asserted (the machine is shared and the figures are what the bench is for);
the test pins that every phase runs to completion, the JSON carries every documented key
with a number, and nothing the run created is left behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from streams.clickhouse.server import ServerBackend

with warnings.catch_warnings():
    # kafka-python 3.0 uses a deprecated importlib.resources call at import time.
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka import KafkaAdminClient

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BROKERS = os.environ.get("JOURNEY_TEST_BROKERS", "127.0.0.1:9092")
CLICKHOUSE_URL = os.environ.get(
    "JOURNEY_TEST_CLICKHOUSE_URL", "clickhouse://127.0.0.1:9000/default"
)
NUMERIC_KEYS = (
    "events_per_s",
    "naive_faust_events_per_s",
    "raw_consume_events_per_s",
    "replay_events_per_s",
    "replay_server_events_per_s",
    "latency_p50_s",
    "latency_p99_s",
    "prometheus_latency_p99_s",
    "bytes_per_open_session",
    "processes_events_per_s",
    "soak_worst_p99_s",
    "soak_bytes_per_open_session",
)


def leftover_topics(tag: str) -> list[str]:
    """Topics of the bench run ``tag`` still on the broker."""
    admin = KafkaAdminClient(bootstrap_servers=BROKERS, request_timeout_ms=15_000)
    try:
        return sorted(t for t in admin.list_topics() if t.startswith(f"jb-{tag}-"))
    finally:
        admin.close()


def leftover_databases(tag: str) -> list[str]:
    """Databases of the bench run ``tag`` still on the ClickHouse server."""
    backend = ServerBackend(CLICKHOUSE_URL)
    try:
        names = [row[0] for row in backend.query("SHOW DATABASES")]
        return sorted(n for n in names if n.startswith(f"jb_{tag}_"))
    finally:
        backend.close()


def test_bench_small_run_reports_every_figure(tmp_path: Path) -> None:
    """A 3,000-event bench with short phases and a 1-minute soak exits 0 with numeric figures."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOURNEY_")}
    env["TMPDIR"] = str(tmp_path)  # the bench's work folder lands here
    proc = subprocess.run(
        [sys.executable, "-m", "streams.cli", "bench",
         "--events", "3000", "--memory-sessions", "2000", "--processes", "2",
         "--latency-rate", "200", "--latency-seconds", "5", "--latency-warmup", "1",
         "--flush-interval", "1", "--phase-timeout", "240", "--soak-minutes", "1",
         "--brokers", BROKERS, "--clickhouse", CLICKHOUSE_URL, "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
        check=False,
    )  # fmt: skip
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-5000:]}"
    result = json.loads(proc.stdout)
    assert result["errors"] == {}
    for key in NUMERIC_KEYS:
        assert isinstance(result[key], int | float), f"{key} = {result[key]!r}"
        assert result[key] > 0, f"{key} = {result[key]!r}"
    assert set(result["versions"]) == {
        "python", "faust", "aiokafka", "kafka_broker", "clickhouse_server", "chdb"
    }  # fmt: skip
    assert result["machine"]["cores"] >= 1
    assert result["naive"]["complete"] is True
    assert result["naive"]["inserts"] > 0  # it stores the sessions it closes at the end
    assert result["workers"]["processes"] == 2
    assert result["workers"]["late"] == 0
    # Every figure sits next to its target in the JSON too.
    figures = {f["key"]: f for f in result["figures"]}
    assert figures["ratio_worker_to_raw"]["target"] == ">= 0.25x"
    assert isinstance(figures["ratio_worker_to_raw"]["met"], bool)
    # The input is in event-time order per partition: the worker must call nothing late.
    assert result["worker"]["late"] == 0
    assert result["memory"]["open_after"] - result["memory"]["open_before"] >= 2000
    # The soak ran at half the worker phase's throughput and measured its one minute.
    assert result["soak"]["rate"] == pytest.approx(result["events_per_s"] / 2)
    [minute] = result["soak"]["minutes"]
    assert minute["events"] > 0
    assert minute["unseen"] == 0
    assert minute["open_sessions"] > 0
    # Everything the run created is gone: topics, databases, the work folder.
    assert leftover_topics(result["run_tag"]) == []
    assert leftover_databases(result["run_tag"]) == []
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("journey-bench-")]
