"""Insert throughput of 100k session rows into chdb and into the 18.16 server (reported only)."""

from __future__ import annotations

import time

import pytest
from chrows import T0, session_row

from streams.clickhouse.backend import ClickHouse
from streams.clickhouse.writer import ClickHouseWriter

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROWS = 100_000


def test_insert_throughput_100k_sessions(
    backend: ClickHouse, capsys: pytest.CaptureFixture[str]
) -> None:
    """100k session rows go in through one write() and all count; rows/s is printed only."""
    rows = [
        session_row(
            f"s{i:06d}",
            f"v{i % 40_000}",
            T0 + i * 1_000,
            channel=("Direct", "Email")[i % 2],
            events=1 + i % 7,
            page_views=1 + i % 5,
            revenue=(i % 1000) / 100,
        )
        for i in range(ROWS)
    ]
    writer = ClickHouseWriter(backend, rollups=False)
    started = time.perf_counter()
    writer.write(rows)
    elapsed = time.perf_counter() - started
    (count,) = backend.query("SELECT count() FROM sessions FINAL WHERE deleted = 0")[0]
    assert count == ROWS
    with capsys.disabled():
        print(
            f"\n{backend.name}: {ROWS} session rows in {elapsed:.2f}s"
            f" = {ROWS / elapsed:,.0f} rows/s"
        )
