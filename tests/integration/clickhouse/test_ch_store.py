"""Schema, writer and summary on both backends: chdb 26.x and the real 18.16 server."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import msgspec
import pytest
from chrows import DAY, T0, WORKED_EXAMPLE_SUMMARY, order_row, session_row, worked_example
from msgspec.structs import astuple
from support import open_server

from streams.clickhouse.backend import ClickHouse
from streams.clickhouse.embedded import EmbeddedBackend
from streams.clickhouse.migrations import (
    MIGRATIONS_DIR,
    applied_versions,
    apply_migrations,
    load_migrations,
)
from streams.clickhouse.server import ServerBackend
from streams.clickhouse.summary import SUMMARY_KEYS, compute_summary
from streams.clickhouse.writer import SESSION_COLUMNS, ClickHouseWriter

pytestmark = pytest.mark.integration

HOUR = 3_600_000
TABLES = ["customers", "orders", "raw_events", "schema_migrations", "session_minutes", "sessions"]


def _tables(backend: ClickHouse) -> list[tuple[str, str]]:
    return [
        (str(name), str(engine))
        for name, engine in backend.query(
            "SELECT name, engine FROM system.tables WHERE database = currentDatabase()"
            " ORDER BY name"
        )
    ]


def _columns(backend: ClickHouse, table: str) -> list[tuple[str, str]]:
    return [
        (str(n), str(t))
        for n, t in backend.query(
            "SELECT name, type FROM system.columns"
            " WHERE database = currentDatabase() AND table = {table} ORDER BY name",
            {"table": table},
        )
    ]


def test_both_backends_get_identical_tables_and_columns(
    embedded: EmbeddedBackend, server: ServerBackend
) -> None:
    """The same migrations create the same tables, engines and column types on chdb and 18.16."""
    assert [n for n, _ in _tables(embedded)] == TABLES
    assert _tables(embedded) == _tables(server)
    for table in TABLES:
        assert _columns(embedded, table) == _columns(server, table), table


def test_migrations_are_idempotent(backend: ClickHouse) -> None:
    """Re-applying migrations applies nothing and records each version once."""
    assert apply_migrations(backend) == []
    assert applied_versions(backend) == {m.version for m in load_migrations()}
    (count,) = backend.query("SELECT count() FROM schema_migrations")[0]
    assert count == len(load_migrations())


def test_worked_example_summary(backend: ClickHouse) -> None:
    """The docs/metrics.md worked example gives the hand-computed figures on each backend."""
    sessions, orders = worked_example()
    ClickHouseWriter(backend).write(sessions, [], orders)
    assert compute_summary(backend, T0, T0 + DAY) == WORKED_EXAMPLE_SUMMARY


def test_summary_keys_are_exactly_spec_section_6(backend: ClickHouse) -> None:
    """The summary object has exactly the SPEC section 6 keys, funnel/dropoff sub-keys too."""
    summary = compute_summary(backend)
    assert tuple(summary) == SUMMARY_KEYS
    assert list(summary["funnel"]) == ["awareness", "consideration", "purchase", "converted"]
    assert list(summary["dropoff"]) == ["awareness", "consideration", "purchase"]
    assert list(summary["customer_funnel"]) == [
        "awareness", "consideration", "purchase", "converted", "retention", "advocacy",
    ]  # fmt: skip


def test_empty_store_gives_zeros_and_nulls(backend: ClickHouse) -> None:
    """With no rows every count is 0, revenue 0.0 and every undefined ratio is null."""
    summary = compute_summary(backend)
    assert summary == {
        "sessions": 0,
        "visitors": 0,
        "page_views": 0,
        "events": 0,
        "bounce_rate": None,
        "engagement_rate": None,
        "conversion_rate": None,
        "cart_abandonment_rate": None,
        "avg_time_on_page_s": None,
        "avg_session_duration_s": None,
        "orders": 0,
        "revenue": 0.0,
        "funnel": {"awareness": 0, "consideration": 0, "purchase": 0, "converted": 0},
        "dropoff": {"awareness": 0, "consideration": 0, "purchase": 0},
        "clv_avg": None,
        "csat": None,
        "nps": None,
        "customers": 0,
        "customer_funnel": dict.fromkeys(
            ("awareness", "consideration", "purchase", "converted", "retention", "advocacy"), 0
        ),
        "repeat_purchase_rate": None,
        "advocacy_rate": None,
        "cohorts": [],
    }


def test_no_carts_no_surveys_no_page_views_give_nulls(backend: ClickHouse) -> None:
    """Sessions without carts, surveys or timed page views leave those three figures null."""
    ClickHouseWriter(backend).write([session_row("a", "v", T0, page_views=0, events=1)])
    summary = compute_summary(backend)
    assert summary["sessions"] == 1
    assert summary["bounce_rate"] == 0.0
    assert summary["cart_abandonment_rate"] is None
    assert summary["avg_time_on_page_s"] is None
    assert summary["csat"] is None
    assert summary["nps"] is None
    assert summary["avg_session_duration_s"] == 0.0


def test_period_is_half_open_on_session_start(backend: ClickHouse) -> None:
    """A session starting at `from` counts, one starting at `to` does not; orders by order time."""
    first = session_row("a", "v1", T0, converted=1, rank=3)
    last = session_row("b", "v2", T0 + DAY)
    # The order of `first` is placed after `to`: in the period by session, not by order time.
    ClickHouseWriter(backend).write([first, last], [], [order_row("o", first, T0 + DAY, 9.99)])
    inside = compute_summary(backend, T0, T0 + DAY)
    assert (inside["sessions"], inside["conversion_rate"], inside["orders"]) == (1, 1.0, 0)
    assert inside["revenue"] == 0.0
    assert inside["clv_avg"] is None  # the only order is not before `to`
    later = compute_summary(backend, T0 + DAY, None)
    assert (later["sessions"], later["orders"], later["revenue"], later["clv_avg"]) == (
        1,
        1,
        9.99,
        9.99,
    )
    assert compute_summary(backend)["sessions"] == 2


def test_rewriting_a_session_replaces_it(backend: ClickHouse) -> None:
    """Writing the same session_id again (new version) replaces the row: nothing doubles."""
    writer = ClickHouseWriter(backend)
    row = session_row("a", "v1", T0, events=1, page_views=1, bounced=1)
    writer.write([row])
    grown = msgspec.structs.replace(row, events=4, page_views=3, bounced=0, engaged=1)
    writer.write([grown])
    writer.write([grown])
    summary = compute_summary(backend)
    assert (summary["sessions"], summary["events"], summary["page_views"]) == (1, 4, 3)
    assert (summary["bounce_rate"], summary["engagement_rate"]) == (0.0, 1.0)


@pytest.mark.parametrize("with_starts", [False, True], ids=["scan", "by-start"])
def test_tombstone_removes_a_merged_session(backend: ClickHouse, with_starts: bool) -> None:
    """A removed session id is rewritten with deleted=1 and no longer counts anywhere.

    With the starts the engine gives, the stored row is found by the sort key; without,
    by scanning: the same result.
    """
    writer = ClickHouseWriter(backend)
    early = session_row("late-merge", "v1", T0 + 1_000)
    keep = session_row("keep", "v1", T0 + 120_000)
    writer.write([early, keep])
    merged = msgspec.structs.replace(keep, events=2, page_views=2)
    starts = {"late-merge": T0 + 1_000, "never-written": T0 + 7_000} if with_starts else None
    writer.write([merged], ["late-merge", "never-written"], [], starts)
    summary = compute_summary(backend)
    assert (summary["sessions"], summary["events"]) == (1, 2)
    rows = backend.query(
        "SELECT session_id, deleted, start_ms FROM sessions FINAL ORDER BY session_id"
    )
    assert [tuple(r) for r in rows] == [("keep", 0, T0 + 120_000), ("late-merge", 1, T0 + 1_000)]


def test_removed_id_also_written_keeps_the_live_row(backend: ClickHouse) -> None:
    """An id both written and removed in one call stays live (the engine re-created it)."""
    writer = ClickHouseWriter(backend)
    row = session_row("a", "v1", T0)
    writer.write([row])
    writer.write([row], ["a"])
    assert compute_summary(backend)["sessions"] == 1


def test_rewriting_an_order_replaces_it(backend: ClickHouse) -> None:
    """An order written twice (e.g. its time moved earlier) is one order, latest values."""
    writer = ClickHouseWriter(backend)
    row = session_row("a", "v1", T0, converted=1, rank=3)
    writer.write([row], [], [order_row("o1", row, T0 + 5_000, 10.0)])
    writer.write([row], [], [order_row("o1", row, T0 + 2_000, 12.5)])
    summary = compute_summary(backend)
    assert (summary["orders"], summary["revenue"], summary["clv_avg"]) == (1, 12.5, 12.5)


def _rollup(backend: ClickHouse) -> list[tuple[object, ...]]:
    return [
        tuple(r)
        for r in backend.query(
            "SELECT minute_ms, channel, device, furthest_stage, sessions, converted,"
            " toInt64(round(revenue * 100)), csat_responses, nps_promoters"
            " FROM session_minutes FINAL WHERE sessions > 0"
            " ORDER BY minute_ms, channel, device, furthest_stage"
        )
    ]


def test_rollups_follow_rewrites_and_tombstones(backend: ClickHouse) -> None:
    """session_minutes is recomputed for touched minutes: moved groups drop to zero, no doubles."""
    writer = ClickHouseWriter(backend)
    a = session_row("a", "v1", T0 + 5_000)
    b = session_row("b", "v2", T0 + 59_999, channel="Email")
    c = session_row("c", "v3", T0 + 60_000, converted=1, rank=3, revenue=3.5, nps_promoters=1)
    writer.write([a, b, c])
    assert _rollup(backend) == [
        (T0, "Direct", "desktop", "awareness", 1, 0, 0, 0, 0),
        (T0, "Email", "desktop", "awareness", 1, 0, 0, 0, 0),
        (T0 + 60_000, "Direct", "desktop", "purchase", 1, 1, 350, 0, 1),
    ]
    writer.write([msgspec.structs.replace(a, channel="Email")], ["c"])
    writer.refresh_rollups([T0, T0 + 60_000])  # re-running a refresh changes nothing
    assert _rollup(backend) == [(T0, "Email", "desktop", "awareness", 2, 0, 0, 0, 0)]


def test_deferred_rollups_wait_for_the_next_refreshing_write(backend: ClickHouse) -> None:
    """Writes that defer the refresh leave session_minutes as it was; the next write that
    does not defer refreshes their minutes (given back as also_refresh) with its own."""
    writer = ClickHouseWriter(backend)
    a = session_row("a", "v1", T0 + 5_000)
    writer.write([a])
    before = _rollup(backend)
    b = session_row("b", "v2", T0 + 60_000, channel="Email")
    touched = writer.write([msgspec.structs.replace(a, channel="Email"), b], defer_rollups=True)
    assert touched == {T0, T0 + 60_000}
    assert _rollup(backend) == before  # deferred: nothing recomputed yet
    c = session_row("c", "v3", T0 + 120_000, converted=1, rank=3, revenue=2.0)
    writer.write([c], also_refresh=touched)
    assert _rollup(backend) == [
        (T0, "Email", "desktop", "awareness", 1, 0, 0, 0, 0),
        (T0 + 60_000, "Email", "desktop", "awareness", 1, 0, 0, 0, 0),
        (T0 + 120_000, "Direct", "desktop", "purchase", 1, 1, 200, 0, 0),
    ]


def test_rollup_refresh_of_scattered_minutes_reads_each_of_them(backend: ClickHouse) -> None:
    """Minutes far apart (several start_ms ranges) are each recomputed; others left alone."""
    writer = ClickHouseWriter(backend)
    minutes = [T0, T0 + 60_000, T0 + 10 * 60_000, T0 + 300 * 60_000]
    rows = [session_row(f"s{i}", f"v{i}", minute + 30_000) for i, minute in enumerate(minutes)]
    writer.write(rows)
    assert [(r[0], r[4]) for r in _rollup(backend)] == [(m, 1) for m in minutes]
    # Grow the sessions of the 1st, 3rd and 4th minutes; the 2nd is not touched.
    grown = [msgspec.structs.replace(rows[i], channel="Email") for i in (0, 2, 3)]
    writer.write(grown)
    assert [(r[0], r[1]) for r in _rollup(backend)] == [
        (T0, "Email"), (T0 + 60_000, "Direct"), (T0 + 600_000, "Email"), (T0 + 18_000_000, "Email")
    ]  # fmt: skip


def test_rollup_totals_match_the_summary(backend: ClickHouse) -> None:
    """Summing session_minutes over the period gives the summary's session-based counts."""
    sessions, orders = worked_example()
    ClickHouseWriter(backend).write(sessions, [], orders)
    (row,) = backend.query(
        "SELECT sum(sessions), sum(page_views), sum(bounced), sum(converted),"
        " sum(abandoned_carts), sum(dwell_sum_ms), sum(dwell_count), sum(csat_satisfied)"
        " FROM session_minutes FINAL WHERE minute_ms >= {f} AND minute_ms < {t}",
        {"f": T0, "t": T0 + DAY},
    )
    assert tuple(int(v) for v in row) == (5, 8, 1, 2, 1, 115_000, 6, 1)


def test_customers_view_derives_clv_inputs(backend: ClickHouse) -> None:
    """customers has one row per customer: first seen, first purchase, orders and revenue."""
    sessions, orders = worked_example()
    ClickHouseWriter(backend).write(sessions, [], orders)
    rows = backend.query(
        "SELECT customer_key, first_seen_ms, sessions, first_purchase_ms, orders,"
        " toInt64(round(revenue * 100)) FROM customers WHERE orders > 0 ORDER BY customer_key"
    )
    assert [tuple(r) for r in rows] == [
        ("u1", T0 - 1, 3, T0 - 1, 2, 15_000),
        ("u4", T0 + DAY - 1, 1, T0 + DAY - 1, 1, 2_001),
    ]


def test_raw_events_accept_dicts_objects_and_dedupe(backend: ClickHouse) -> None:
    """write_raw_events takes dicts (nested properties/page) or objects; event_id dedupes."""

    @dataclasses.dataclass
    class Event:
        event_id: str
        event_type: str
        ts_ms: int
        visitor_key: str
        revenue: float

    writer = ClickHouseWriter(backend)
    writer.write_raw_events(
        [
            {
                "event_id": "e1",
                "event_type": "purchase",
                "ts_ms": T0,
                "anonymous_id": "a1",
                "properties": {"order_id": "o1", "revenue": 12.5},
                "page": {"path": "/checkout"},
            },
            Event("e2", "page_view", T0 + 1, "a2", 0.0),
        ]
    )
    sql = (
        "SELECT event_id, visitor_key, page_path, order_id, revenue"
        " FROM raw_events FINAL ORDER BY event_id"
    )
    assert [tuple(r) for r in backend.query(sql)] == [
        ("e1", "a1", "/checkout", "o1", 12.5),
        ("e2", "a2", "", "", 0.0),
    ]
    writer.write_raw_events([{"event_id": "e1", "event_type": "purchase", "ts_ms": T0}])
    assert tuple(backend.query(sql)[0]) == ("e1", "", "", "", 0.0)


@pytest.mark.parametrize("kind", ["embedded", "server"])
def test_a_version_1_database_migrates_to_customer_links(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """A database of schema 1 with rows, its migration 2 cut short, migrates and stitches."""
    first = tmp_path / "v1"
    first.mkdir()
    shutil.copy(MIGRATIONS_DIR / "0001_initial.sql", first)
    if kind == "embedded":
        backend: ClickHouse = EmbeddedBackend(tmp_path / "clickhouse")
    else:
        backend = open_server(request.getfixturevalue("server_url"))
    try:
        assert apply_migrations(backend, first) == [1]
        old = session_row("old", "a1", T0)  # an anonymous session written before version 2
        v1_columns = SESSION_COLUMNS[: SESSION_COLUMNS.index("link_user_id")]
        backend.insert(
            "sessions", (*v1_columns, "version", "deleted"), [(*astuple(old)[:-5], 1, 0)]
        )
        # Interrupted: the first column of migration 2 exists, the rest and the record do not.
        backend.execute("ALTER TABLE sessions ADD COLUMN link_user_id String AFTER closed")
        assert apply_migrations(backend) == [2]
        assert apply_migrations(backend) == []
        assert backend.query(
            "SELECT link_user_id, link_ms, link_event_id, first_purchase_ms, last_purchase_ms"
            " FROM sessions FINAL WHERE session_id = 'old'"
        ) == [("", 0, "", 0, 0)]
        # a1 logs in as u1 an hour later (its old session is u1's too); b1 logs in as u1 a
        # minute into its session, two hours later.
        login = session_row("login", "a1", T0 + HOUR, link_user_id="u1", link_ms=T0 + HOUR,
                            link_event_id="a1-login")  # fmt: skip
        other = session_row("other", "b1", T0 + 2 * HOUR, link_user_id="u1",
                            link_ms=T0 + 2 * HOUR + 60_000, link_event_id="b1-login")  # fmt: skip
        ClickHouseWriter(backend).write([login, other])
        assert compute_summary(backend)["customers"] == 1  # a1 and b1 are u1
        # Before b1's login its session is b1's own: customers u1 (a1) and b1.
        assert compute_summary(backend, None, T0 + 2 * HOUR + 1)["customers"] == 2
        assert [n for n, _ in _columns(backend, "sessions")] == sorted(SESSION_COLUMNS)
    finally:
        backend.close()
