"""Every ClickHouse query of every dashboard runs on chdb 26.x and on the 18.16 server.

Queries are expanded exactly as the Grafana ClickHouse plugin would send them (see
``grafana_queries``) for two selections of the template variables: All, and one concrete
value of each (the first option the variable query returns), over replayed traffic.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from grafana_queries import (
    ALL,
    CLICKHOUSE_TYPE,
    PanelQuery,
    TimeRange,
    expand_clickhouse,
    queries,
    variables,
)

from streams.clickhouse.backend import ClickHouse
from streams.clickhouse.embedded import EmbeddedBackend
from streams.clickhouse.server import ServerBackend
from streams.clickhouse.summary import compute_summary

pytestmark = pytest.mark.integration

#: The dashboard time range: around the replayed traffic (10:00 to about 10:08 UTC).
TIME = TimeRange.of("2026-11-20T09:00:00+00:00", "2026-11-20T12:00:00+00:00", interval_s=60)
#: A range a year before the traffic: every filtered figure must come out empty or zero.
EMPTY_TIME = TimeRange.of("2025-11-20T09:00:00+00:00", "2025-11-20T12:00:00+00:00", 60)
PANEL_QUERIES = queries(CLICKHOUSE_TYPE)
VARIABLE_QUERIES = variables(CLICKHOUSE_TYPE)
VARIABLE_NAMES = [v.panel.lstrip("$") for v in VARIABLE_QUERIES]


def run(backend: ClickHouse, sql: str) -> list[tuple[Any, ...]]:
    """Run one expanded query, failing with the SQL when the backend refuses it."""
    try:
        return backend.query(sql)
    except Exception as exc:
        pytest.fail(f"{backend.name} refused the dashboard query:\n{sql}\n{exc}")


@pytest.fixture(scope="module")
def options(replayed: ClickHouse) -> dict[str, list[str]]:
    """The options each template variable offers on this backend (its query's rows)."""
    found: dict[str, list[str]] = {}
    for var in VARIABLE_QUERIES:
        sql = expand_clickhouse(var.text, TIME, {}, {})
        found[var.panel.lstrip("$")] = [str(row[0]) for row in run(replayed, sql)]
    return found


def selection(kind: str, options: Mapping[str, Sequence[str]]) -> dict[str, Sequence[str] | str]:
    """All for every variable, or the first option of each."""
    if kind == "all":
        return dict.fromkeys(VARIABLE_NAMES, ALL)
    return {name: [options[name][0]] for name in VARIABLE_NAMES}


def test_dashboards_have_clickhouse_queries_and_variables() -> None:
    """The overview dashboard's panels and its channel and device variables are found."""
    assert len(PANEL_QUERIES) >= 15
    assert {"channel", "device"} <= set(VARIABLE_NAMES)


@pytest.mark.parametrize("var", VARIABLE_QUERIES, ids=lambda q: q.id)
def test_variable_query_returns_options(replayed: ClickHouse, var: PanelQuery) -> None:
    """Each template variable query runs on this backend and offers at least one value."""
    sql = expand_clickhouse(var.text, TIME, {}, {})
    rows = run(replayed, sql)
    assert rows, f"{var.id} returned no options on {replayed.name}:\n{sql}"
    assert all(isinstance(row[0], str) and row[0] for row in rows)


@pytest.mark.parametrize("kind", ["all", "one"])
@pytest.mark.parametrize("query", PANEL_QUERIES, ids=lambda q: q.id)
def test_panel_query_returns_rows(
    replayed: ClickHouse, options: dict[str, list[str]], query: PanelQuery, kind: str
) -> None:
    """Each panel query, with All or one value selected, runs and returns rows."""
    sql = expand_clickhouse(query.text, TIME, selection(kind, options), options)
    rows = run(replayed, sql)
    assert rows, f"{query.id} returned no rows on {replayed.name}:\n{sql}"


@pytest.mark.parametrize("query", PANEL_QUERIES, ids=lambda q: q.id)
def test_time_range_filters_every_panel(
    replayed: ClickHouse, options: dict[str, list[str]], query: PanelQuery
) -> None:
    """A range with no traffic gives no rows or only zero counts: every panel is time-bound."""
    sql = expand_clickhouse(query.text, EMPTY_TIME, selection("all", options), options)
    rows = run(replayed, sql)
    numbers = [v for row in rows for v in row if isinstance(v, int | float)]
    assert all(v == 0 or (isinstance(v, float) and math.isnan(v)) for v in numbers), (
        f"{query.id} shows data outside its time range on {replayed.name}: {rows[:3]}"
    )


def _numbers(rows: Sequence[Sequence[Any]]) -> list[float]:
    return [float(v) for row in rows for v in row if isinstance(v, int | float)]


@pytest.mark.parametrize("query", PANEL_QUERIES, ids=lambda q: q.id)
def test_both_backends_show_the_same_figures(
    replayed_folder: Path, replayed_server_url: str, query: PanelQuery
) -> None:
    """chdb and the 18.16 server return the same rows and numbers for each panel."""
    embedded = EmbeddedBackend(replayed_folder)
    server = ServerBackend(replayed_server_url)
    try:
        opts = {v.panel.lstrip("$"): [] for v in VARIABLE_QUERIES}
        sql = expand_clickhouse(query.text, TIME, selection("all", opts), opts)
        left, right = run(embedded, sql), run(server, sql)
    finally:
        embedded.close()
        server.close()
    assert len(left) == len(right), f"{query.id}: {len(left)} rows on chdb, {len(right)} on server"
    for a, b in zip(_numbers(left), _numbers(right), strict=True):
        assert math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-6), f"{query.id}: {a} != {b}"


def _panel(title: str) -> PanelQuery:
    (found,) = [q for q in PANEL_QUERIES if q.panel == title]
    return found


def test_customer_panels_show_the_summary_figures(
    replayed: ClickHouse, options: dict[str, list[str]]
) -> None:
    """The customer funnel, cohort and CLV panels agree with journey summary for the range."""
    everything = selection("all", options)
    summary = compute_summary(replayed, TIME.from_ms, TIME.to_ms)
    funnel = run(
        replayed, expand_clickhouse(_panel("Customer funnel").text, TIME, everything, options)
    )
    assert [int(v) for v in funnel[0]] == list(summary["customer_funnel"].values())
    assert summary["customer_funnel"]["advocacy"] > 0, "the traffic should have advocates"
    # The cohort of the traffic's week (Monday 2026-11-16) overlaps the range but starts
    # before it: the panel shows it, the summary of all time up to the range's end lists it.
    cohort_sql = expand_clickhouse(
        _panel("Weekly purchase cohorts").text, TIME, everything, options
    )
    (cohort,) = run(replayed, cohort_sql)
    (listed,) = compute_summary(replayed, None, TIME.to_ms)["cohorts"]
    assert (cohort[0], int(cohort[1])) == (listed["week"], listed["customers"])
    assert [float(v) for v in cohort[2:]] == [
        round(100 * n / listed["customers"], 1) for n in listed["retained"][1:]
    ]
    clv_sql = expand_clickhouse(_panel("Customer lifetime value").text, TIME, everything, options)
    (clv,) = run(replayed, clv_sql)
    assert round(float(clv[0]), 2) == summary["clv_avg"]
