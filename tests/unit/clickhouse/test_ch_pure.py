"""Pure parts of the ClickHouse layer: rounding, versions, raw-event mapping, options."""

from __future__ import annotations

import argparse
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from streams.clickhouse.migrations import apply_migrations, load_migrations
from streams.clickhouse.options import target_from_args
from streams.clickhouse.summary import SUMMARY_KEYS, cohorts, finish, week_monday
from streams.clickhouse.writer import RAW_EVENT_DEFAULTS, VersionClock, _raw_values
from streams.errors import ConfigError, StorageError
from streams.settings import Settings
from streams.summary import parse_instant_ms


def _figures(**overrides: Any) -> dict[str, Any]:
    names = [
        "sessions", "visitors", "page_views", "events", "bounced", "engaged", "converted",
        "carts", "abandoned", "dwell_sum_ms", "dwell_count", "duration_ms",
        "funnel_consideration", "funnel_purchase", "drop_awareness", "drop_consideration",
        "drop_purchase", "csat_responses", "csat_satisfied", "nps_responses", "nps_promoters",
        "nps_detractors", "orders", "revenue_cents", "clv_revenue_cents", "clv_customers",
        "customers", "customers_consideration", "customers_purchase", "customers_converted",
        "customers_retention", "customers_advocacy", "buyers", "repeat_buyers",
        "advocate_buyers",
    ]  # fmt: skip
    figures: dict[str, Any] = dict.fromkeys(names, 0)
    figures.update(cohort_rows=[], from_ms=None, to_ms=None)
    figures.update(overrides)
    return figures


def test_finish_rounds_half_up_on_exact_values() -> None:
    """85.005 (17001 cents / 2 customers) rounds to 85.01, and 2/3 to 0.666667."""
    out = finish(_figures(sessions=3, bounced=2, clv_revenue_cents=17_001, clv_customers=2))
    assert (out["clv_avg"], out["bounce_rate"]) == (85.01, 0.666667)


def test_finish_nulls_undefined_ratios_and_keeps_key_order() -> None:
    """Zero denominators give None, and keys come in SPEC section 6 order."""
    out = finish(_figures())
    assert tuple(out) == SUMMARY_KEYS
    assert [k for k, v in out.items() if v is None] == [
        "bounce_rate", "engagement_rate", "conversion_rate", "cart_abandonment_rate",
        "avg_time_on_page_s", "avg_session_duration_s", "clv_avg", "csat", "nps",
        "repeat_purchase_rate", "advocacy_rate",
    ]  # fmt: skip


def test_customer_rates_divide_by_buyers() -> None:
    """Repeat and advocacy rates are over customers with a purchase: 2 and 1 of 3."""
    out = finish(_figures(buyers=3, repeat_buyers=2, advocate_buyers=1, customers=5))
    assert (out["repeat_purchase_rate"], out["advocacy_rate"]) == (0.666667, 0.333333)
    assert out["customer_funnel"]["awareness"] == 5


def test_week_numbers_start_on_utc_mondays() -> None:
    """Week 2835 starts on Monday 2024-04-29, week 0 on Monday 1969-12-29 (before a Thursday)."""
    assert week_monday(2835) == date(2024, 4, 29)
    assert week_monday(0) == date(1969, 12, 29)
    for week in (0, 1, 2835, 3000):
        assert week_monday(week).weekday() == 0


def test_cohorts_keep_weeks_starting_in_the_period() -> None:
    """A cohort week starting at ``from`` is in, one starting at ``to`` is out; gaps are zeros."""
    monday = 1_714_348_800_000  # 2024-04-29T00:00:00Z, week 2835
    rows = [(2835, 0, 3), (2835, 1, 2), (2835, 11, 1), (2836, 0, 1)]
    assert cohorts(rows, monday, monday + 7 * 86_400_000) == [
        {"week": "2024-04-29", "customers": 3, "retained": [3, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]}
    ]
    assert [c["week"] for c in cohorts(rows, None, None)] == ["2024-04-29", "2024-05-06"]
    assert cohorts(rows, monday + 1, None)[0]["week"] == "2024-05-06"


class _RacingBackend:
    """Adds the column 'late' itself when asked to add it, as a second worker would first."""

    name = "racing"

    def __init__(self) -> None:
        self.columns = ["a"]
        self.executed: list[str] = []

    def execute(self, sql: str, params: object = None) -> None:
        self.executed.append(sql)
        if "ADD COLUMN" in sql:
            self.columns.append("late")
            raise StorageError("Code: 44. column late already exists")

    def query(self, sql: str, params: object = None) -> list[tuple[str]]:
        return [(c,) for c in self.columns] if sql.startswith("DESCRIBE") else []

    def insert(self, table: str, columns: object, rows: object) -> None:
        self.executed.append(f"insert into {table}")


def test_add_column_migration_skips_existing_columns_and_survives_a_race(
    tmp_path: Path,
) -> None:
    """ADD COLUMN IF NOT EXISTS runs as plain ADD COLUMN (18.16) only for a missing column,
    and a column another worker added meanwhile is no error."""
    (tmp_path / "0001_cols.sql").write_text(
        "ALTER TABLE t ADD COLUMN IF NOT EXISTS a String;\n"
        "ALTER TABLE t ADD COLUMN IF NOT EXISTS late UInt64 AFTER a;\n",
        encoding="utf-8",
    )
    backend = _RacingBackend()
    assert apply_migrations(backend, tmp_path) == [1]  # type: ignore[arg-type]
    added = [sql for sql in backend.executed if "ALTER" in sql]
    assert added == ["ALTER TABLE t ADD COLUMN late UInt64 AFTER a"]
    assert backend.executed[-1] == "insert into schema_migrations"


def test_nps_can_be_negative() -> None:
    """NPS is promoters% minus detractors%: 1 promoter, 3 detractors of 4 gives -50."""
    assert finish(_figures(nps_responses=4, nps_promoters=1, nps_detractors=3))["nps"] == -50.0


def test_version_clock_is_strictly_increasing_even_if_time_goes_back() -> None:
    """Versions rise within one millisecond and when the wall clock steps backwards."""
    times = iter([5, 5, 4, 6])
    clock = VersionClock(lambda: next(times))
    assert [clock.next() for _ in range(4)] == [5000, 5001, 5002, 6000]


def test_raw_values_fill_defaults_and_nested_fields() -> None:
    """Missing fields take defaults; properties/page are searched; visitor falls back to user."""
    values = dict(
        zip(
            RAW_EVENT_DEFAULTS,
            _raw_values(
                {
                    "event_id": "e",
                    "user_id": "u",
                    "properties": {"quantity": 2, "scale": 10, "score": 9},
                    "page": {"path": "/p", "referrer": "r"},
                }
            ),
            strict=True,
        )
    )
    assert (values["visitor_key"], values["quantity"], values["scale"], values["score"]) == (
        "u", 2, 10, 9.0,
    )  # fmt: skip
    assert (values["page_path"], values["referrer"], values["ts_ms"]) == ("/p", "r", 0)


def test_parse_instant_ms_forms() -> None:
    """ISO with Z, a naive date (UTC) and integer epoch ms all parse; junk is a ConfigError."""
    assert parse_instant_ms("2024-05-01T00:00:00Z", "--from") == 1_714_521_600_000
    assert parse_instant_ms("2024-05-01", "--from") == 1_714_521_600_000
    assert parse_instant_ms("1714521600000", "--to") == 1_714_521_600_000
    with pytest.raises(ConfigError, match="--to"):
        parse_instant_ms("soon", "--to")


def test_target_defaults_come_from_settings() -> None:
    """No option: JOURNEY_CLICKHOUSE_URL if set, else DATA_DIR/clickhouse; a bad URL is refused."""
    none = argparse.Namespace(embedded=None, clickhouse=None)
    assert target_from_args(none, Settings(data_dir="/d")) == str(Path("/d") / "clickhouse")
    url = "clickhouse://h:9000/db"
    assert target_from_args(none, Settings(clickhouse_url=url)) == url
    with pytest.raises(ConfigError, match="not a clickhouse://"):
        target_from_args(argparse.Namespace(embedded=None, clickhouse="http://h"))


def test_migrations_are_numbered_and_loaded_in_order(tmp_path: Path) -> None:
    """NNNN_name.sql files load sorted; other files are ignored; duplicates are refused."""
    assert [m.version for m in load_migrations()][:1] == [1]
    (tmp_path / "0002_b.sql").write_text("SELECT 2;")
    (tmp_path / "0001_a.sql").write_text("SELECT 1;")
    (tmp_path / "notes.txt").write_text("x")
    assert [(m.version, m.name) for m in load_migrations(tmp_path)] == [(1, "a"), (2, "b")]
    (tmp_path / "0002_c.sql").write_text("SELECT 3;")
    with pytest.raises(StorageError, match="two migrations numbered 0002"):
        load_migrations(tmp_path)


def test_bad_server_urls_are_refused() -> None:
    """A URL with another scheme or a bad database name is a StorageError saying the form."""
    from streams.clickhouse.address import ServerAddress, parse_server_url

    assert parse_server_url("clickhouse://h/db") == ServerAddress("h", 9000, "db")
    with pytest.raises(StorageError, match="clickhouse://host:9000/db"):
        parse_server_url("http://h/db")
    with pytest.raises(StorageError, match="letters, digits"):
        parse_server_url("clickhouse://h/db;drop")
