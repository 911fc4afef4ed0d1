"""JOURNEY_RETENTION_DAYS on both backends: chdb gets TTLs, the 18.16 server gets deletes.

Rows are written 100 days and 1 day before "now"; with a 30-day retention the old ones
must be gone from sessions, orders and raw_events (after the merge that applies a TTL, or
the mutation that deletes), and the recent ones kept. The rollup is not touched.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from conftest import open_server

from streams.clickhouse.backend import ClickHouse
from streams.clickhouse.embedded import EmbeddedBackend
from streams.clickhouse.process import WriterProcess
from streams.clickhouse.retention import RETAINED_TABLES, apply_retention, supports_ttl
from streams.clickhouse.server import ServerBackend

pytestmark = pytest.mark.integration

DAY_MS = 86_400_000
NOW_MS = int(time.time() * 1000)
OLD_MS = NOW_MS - 100 * DAY_MS
RECENT_MS = NOW_MS - 1 * DAY_MS
#: Longest wait for the server's delete mutations.
MUTATION_TIMEOUT_S = 30.0


def write_old_and_recent(backend: ClickHouse) -> None:
    """One old and one recent row in every table that expires, and a rollup row."""
    backend.insert(
        "sessions",
        ("session_id", "visitor_key", "start_ms", "end_ms", "version"),
        [("s-old", "v1", OLD_MS, OLD_MS, 1), ("s-new", "v1", RECENT_MS, RECENT_MS, 1)],
    )
    backend.insert(
        "orders",
        ("order_key", "session_id", "ts_ms", "revenue", "version"),
        [("o-old", "s-old", OLD_MS, 10.0, 1), ("o-new", "s-new", RECENT_MS, 20.0, 1)],
    )
    backend.insert(
        "raw_events",
        ("event_id", "event_type", "ts_ms", "version"),
        [("e-old", "purchase", OLD_MS, 1), ("e-new", "purchase", RECENT_MS, 1)],
    )
    backend.insert(
        "session_minutes",
        ("minute_ms", "minute", "sessions", "version"),
        [(OLD_MS // 60_000 * 60_000, OLD_MS // 60_000 * 60, 1, 1)],
    )


def times_left(backend: ClickHouse) -> dict[str, list[int]]:
    """The time column of every row left in each expiring table, merged first."""
    left = {}
    for table, column in RETAINED_TABLES:
        backend.execute(f"OPTIMIZE TABLE {table} FINAL")  # a TTL applies in merges
        left[table] = sorted(int(r[0]) for r in backend.query(f"SELECT {column} FROM {table}"))
    return left


def wait_for_mutations(backend: ClickHouse) -> None:
    """Until the server has no unfinished mutation in this database (bounded)."""
    deadline = time.monotonic() + MUTATION_TIMEOUT_S
    sql = "SELECT count() FROM system.mutations WHERE database = currentDatabase() AND is_done = 0"
    while backend.query(sql)[0][0]:
        assert time.monotonic() < deadline, "the delete mutations did not finish"
        time.sleep(0.1)


def test_retention_keeps_recent_rows_and_drops_old_ones(backend: ClickHouse) -> None:
    write_old_and_recent(backend)
    enforced = apply_retention(backend, 30)
    # chdb (26.x) has TTLs; the 18.16 server deletes.
    assert enforced == ("ttl" if isinstance(backend, EmbeddedBackend) else "delete")
    wait_for_mutations(backend)
    left = times_left(backend)
    assert left == {"sessions": [RECENT_MS], "orders": [RECENT_MS], "raw_events": [RECENT_MS]}
    # The rollup holds counts only: kept.
    assert backend.query("SELECT count() FROM session_minutes")[0][0] == 1


def test_no_retention_keeps_everything(backend: ClickHouse) -> None:
    write_old_and_recent(backend)
    assert apply_retention(backend, None) == "none"
    left = times_left(backend)
    assert left == {t: [OLD_MS, RECENT_MS] for t, _ in RETAINED_TABLES}


def test_unsetting_the_retention_removes_the_ttl(embedded: EmbeddedBackend) -> None:
    assert supports_ttl(embedded)
    apply_retention(embedded, 30)
    apply_retention(embedded, 30)  # idempotent
    sql = "SELECT name, engine_full FROM system.tables WHERE database = currentDatabase()"
    engines = dict(embedded.query(sql))
    for table, column in RETAINED_TABLES:
        assert f"TTL toDateTime(intDiv({column}, 1000)) + toIntervalDay(30)" in engines[table]
    assert " TTL " not in engines["session_minutes"]
    apply_retention(embedded, None)
    write_old_and_recent(embedded)
    assert times_left(embedded) == {t: [OLD_MS, RECENT_MS] for t, _ in RETAINED_TABLES}


def test_the_writer_process_deletes_on_the_server_at_start(server_url: str) -> None:
    """The worker's writer applies the retention when it starts (18.16: deletes)."""
    server = open_server(server_url)
    try:
        writer = WriterProcess(server_url)  # migrates
        writer.close()
        write_old_and_recent(server)
        writer = WriterProcess(server_url, retention_days=30)
        writer.close()
        wait_for_mutations(server)
        assert times_left(server) == {t: [RECENT_MS] for t, _ in RETAINED_TABLES}
    finally:
        server.close()


def test_the_writer_process_sets_ttls_in_chdb(tmp_path: Path) -> None:
    folder = str(tmp_path / "ch")
    writer = WriterProcess(folder, retention_days=7)
    writer.close()
    backend = EmbeddedBackend(folder)
    try:
        sql = "SELECT name, engine_full FROM system.tables WHERE database = currentDatabase()"
        engine = dict(backend.query(sql))["orders"]
        assert "TTL toDateTime(intDiv(ts_ms, 1000)) + toIntervalDay(7)" in engine
    finally:
        backend.close()


def test_server_version_decides_ttl(server: ServerBackend) -> None:
    assert server.query("SELECT version()")[0][0].startswith("18.16")
    assert not supports_ttl(server)
