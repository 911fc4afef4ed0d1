"""``journey report``: structure of the page and its numbers against ``compute_summary``.

The data is generated traffic replayed into an embedded (chdb) folder; the report is
rendered by the real command and read back with the standard library's HTML parser.
"""

from __future__ import annotations

import itertools
import json
import os
import re
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from streams.cli import main
from streams.clickhouse.embedded import EmbeddedBackend
from streams.clickhouse.summary import compute_summary
from streams.report.charts import esc
from streams.report.data import (
    ChannelRow,
    CurrencyRow,
    ReportData,
    StageFlow,
    TimeOnPageRow,
    TrendRow,
    trend_bucket_ms,
)
from streams.report.page import money_unit, render_html
from streams.summary import parse_instant_ms

#: 6,000 events at 1 event/s of event time: about 100 minutes, so trends have many buckets.
GENERATE = ("--events", "6000", "--seed", "3", "--start", "2026-11-20T09:30:00Z", "--sim-rate", "1")
CHARTS = {"funnel", "sankey", "dropoff", "time_on_page", "channels", "trend"}


@dataclass
class Page:
    """What the tests read from a rendered report."""

    html: str
    charts: list[str] = field(default_factory=list)
    kpis: dict[str, str] = field(default_factory=dict)
    units: dict[str, str] = field(default_factory=dict)
    marks: list[dict[str, str]] = field(default_factory=list)


class _Reader(HTMLParser):
    def __init__(self, page: Page) -> None:
        super().__init__()
        self.page = page

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "svg":
            self.page.charts.append(a.get("data-chart", ""))
        elif "data-key" in a and a.get("class") == "kpi":
            self.page.kpis[a["data-key"]] = a["data-value"]
            self.page.units[a["data-key"]] = a.get("data-unit", "")
        elif tag in ("rect", "path", "line"):
            self.page.marks.append({"tag": tag, **a})


def read_page(path: Path) -> Page:
    """Parse the report at ``path``."""
    page = Page(path.read_text(encoding="utf-8"))
    _Reader(page).feed(page.html)
    return page


def _clear_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("JOURNEY_") and not name.startswith("JOURNEY_TEST_"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """An embedded folder holding generated traffic replayed by ``journey replay``."""
    base = tmp_path_factory.mktemp("report")
    events, folder = base / "events.jsonl", base / "clickhouse"
    with pytest.MonkeyPatch.context() as monkeypatch:
        _clear_settings(monkeypatch)
        assert main(["generate", *GENERATE, "--out", str(events)]) == 0
        assert main(["replay", str(events), "--embedded", str(folder)]) == 0
        yield folder


@pytest.fixture(scope="module")
def page(replayed: Path, tmp_path_factory: pytest.TempPathFactory) -> Page:
    """The report of every replayed session, rendered once for the module."""
    return report(replayed, tmp_path_factory.mktemp("page") / "report.html")


@pytest.fixture(scope="module")
def summary(replayed: Path) -> Any:
    """``compute_summary`` of every replayed session."""
    return summary_of(replayed)


def report(folder: Path, out: Path, *extra: str) -> Page:
    """Run ``journey report`` on ``folder`` and parse what it wrote."""
    assert main(["report", "--embedded", str(folder), "--out", str(out), *extra]) == 0
    return read_page(out)


def summary_of(folder: Path, from_ms: int | None = None, to_ms: int | None = None) -> Any:
    """``compute_summary`` over the folder (the figures ``journey summary`` prints)."""
    backend = EmbeddedBackend(folder)
    try:
        return compute_summary(backend, from_ms, to_ms)
    finally:
        backend.close()


def marks(page: Page, cls: str, **match: str) -> list[dict[str, str]]:
    """The marks of class ``cls`` whose data attributes equal ``match``."""
    return [
        m
        for m in page.marks
        if m.get("class") == cls and all(m.get(f"data-{k}") == v for k, v in match.items())
    ]


def values(page: Page, kind: str) -> dict[str, int]:
    """Bar values of one chart by key."""
    return {m["data-key"]: int(m["data-value"]) for m in marks(page, "bar", kind=kind)}


def test_report_draws_every_chart_as_inline_svg(page: Page) -> None:
    """The page holds the six charts as inline SVG and loads nothing from anywhere."""
    assert sorted(page.charts) == sorted(CHARTS)
    assert page.html.startswith("<!DOCTYPE html>")
    lowered = page.html.lower()
    for banned in ("<script", "<link", "<img", "@import", "url(", "<iframe"):
        assert banned not in lowered, banned
    addresses = set(re.findall(r"(?:https?:)?//[\w.-]+", page.html))
    assert addresses <= {"http://www.w3.org"}, addresses


def test_kpis_equal_the_summary(page: Page, summary: Any) -> None:
    """Every headline figure is exactly what ``journey summary`` computes."""
    assert summary["sessions"] > 500
    assert len(page.kpis) >= 10
    for key, shown in page.kpis.items():
        expected = summary[key]
        assert shown == ("" if expected is None else str(expected)), key


def test_funnel_and_dropoff_equal_the_summary(page: Page, summary: Any) -> None:
    """Funnel bars and drop-off bars carry the summary's funnel and dropoff counts."""
    funnel = {m["data-stage"]: int(m["data-count"]) for m in marks(page, "funnel-bar")}
    assert funnel == summary["funnel"]
    assert values(page, "dropoff") == summary["dropoff"]


def test_sankey_matches_the_summary_and_conserves_sessions(page: Page, summary: Any) -> None:
    """Sankey nodes equal the funnel; each stage node passes on exactly what flows in."""
    nodes = {m["data-node"]: int(m["data-value"]) for m in marks(page, "sankey-node")}
    funnel, drop = summary["funnel"], summary["dropoff"]
    assert nodes["awareness"] == funnel["awareness"] == summary["sessions"]
    assert nodes["consideration"] == funnel["consideration"]
    assert nodes["purchase"] == funnel["purchase"]
    assert nodes["converted"] == funnel["converted"]
    assert nodes["left_awareness"] == drop["awareness"]
    assert nodes["left_consideration"] == drop["consideration"]
    assert nodes["abandoned_purchase"] == drop["purchase"]
    inflow: dict[str, int] = defaultdict(int)
    outflow: dict[str, int] = defaultdict(int)
    for link in marks(page, "sankey-link"):
        inflow[link["data-target"]] += int(link["data-value"])
        outflow[link["data-source"]] += int(link["data-value"])
    for key in ("awareness", "consideration", "purchase"):
        assert inflow[key] == nodes[key] == outflow[key], key
    channels = [k for k in nodes if k.startswith("channel:")]
    assert sum(nodes[k] for k in channels) == summary["sessions"]
    assert all(outflow[k] == nodes[k] for k in channels)


def test_channels_trend_and_time_on_page_cover_every_session(page: Page, summary: Any) -> None:
    """Channel bars and trend bars add up to the sessions; trend buckets are ordered."""
    assert sum(values(page, "channels").values()) == summary["sessions"]
    trend = [(int(m["data-key"]), int(m["data-value"])) for m in marks(page, "bar", kind="trend")]
    assert len(trend) >= 6, "100 minutes of traffic should give several trend buckets"
    assert [t for t, _ in trend] == sorted(t for t, _ in trend)
    assert sum(n for _, n in trend) == summary["sessions"]
    converted = sum(int(m["data-converted"]) for m in marks(page, "bar", kind="trend"))
    assert converted == summary["funnel"]["converted"]
    time_on_page = values(page, "time_on_page")
    assert 0 < sum(time_on_page.values()) <= summary["sessions"]


def test_period_report_equals_the_period_summary(replayed: Path, tmp_path: Path) -> None:
    """With --from/--to the figures are those of ``compute_summary`` over that period."""
    start, end = "2026-11-20T10:00:00Z", "2026-11-20T10:30:00Z"
    page = report(replayed, tmp_path / "period.html", "--from", start, "--to", end)
    summary = summary_of(replayed, parse_instant_ms(start, "--from"), parse_instant_ms(end, "--to"))
    assert 0 < summary["sessions"] < summary_of(replayed)["sessions"]  # a real sub-period
    assert page.kpis["sessions"] == str(summary["sessions"])
    assert page.kpis["revenue"] == str(summary["revenue"])
    assert "2026-11-20 10:00 UTC" in page.html


def test_empty_folder_gives_an_empty_report(tmp_path: Path) -> None:
    """An empty folder renders a page that says there is nothing to show."""
    (tmp_path / "nothing").mkdir()
    page = report(tmp_path / "nothing", tmp_path / "empty.html")
    assert page.kpis["sessions"] == "0"
    assert page.kpis["conversion_rate"] == ""
    assert "No sessions in this period" in page.html


def test_from_not_before_to_is_refused(tmp_path: Path) -> None:
    """--from at or after --to exits with status 2 and writes nothing."""
    out = tmp_path / "never.html"
    status = main(["report", "--embedded", str(tmp_path / "db"), "--out", str(out),
                   "--from", "2026-11-21", "--to", "2026-11-20"])  # fmt: skip
    assert status == 2
    assert not out.exists()


def _hostile_data() -> ReportData:
    evil = '<script>alert("x")</script>&'
    summary: dict[str, Any] = {
        "sessions": 3, "visitors": 2, "page_views": 3, "events": 5, "bounce_rate": 0.5,
        "engagement_rate": 0.5, "conversion_rate": 0.25, "cart_abandonment_rate": None,
        "avg_time_on_page_s": 3.0, "avg_session_duration_s": 4.0, "orders": 1,
        "revenue": 9.5, "funnel": {"awareness": 3, "consideration": 2, "purchase": 1,
                                   "converted": 1},
        "dropoff": {"awareness": 1, "consideration": 1, "purchase": 0}, "clv_avg": 9.5,
        "csat": None, "nps": None,
    }  # fmt: skip
    return ReportData(
        from_ms=None,
        to_ms=None,
        first_start_ms=0,
        last_start_ms=60_000,
        summary=summary,
        flow=StageFlow(1, 1, 0, 1),
        channels=(ChannelRow(evil, 3, 2, 1, 1, 1, 950),),
        time_on_page=(TimeOnPageRow("< 5 s", 2),),
        devices=(),
        trend_bucket_ms=60_000,
        trend=(TrendRow(0, 2, 1), TrendRow(60_000, 1, 0)),
    )


def test_every_text_is_escaped() -> None:
    """A hostile channel name and title appear escaped, never as markup."""
    title = "Q4 <b>report</b>"
    html = render_html(_hostile_data(), title=title, generated_at=datetime(2026, 1, 1, tzinfo=UTC))
    assert "<script" not in html
    assert "<b>" not in html
    assert esc('<script>alert("x")</script>&') in html
    assert esc(title) in html


def test_trend_bucket_grows_with_the_span() -> None:
    """Minutes for half an hour of data, hours for a day, days for a month."""
    hour, day = 3_600_000, 86_400_000
    assert trend_bucket_ms(0, hour // 2) == 60_000
    assert trend_bucket_ms(0, day - 1) == hour
    assert trend_bucket_ms(0, 30 * day) == day


def test_trend_axis_has_few_round_ticks_far_apart(page: Page, summary: Any) -> None:
    """About 100 minutes of sessions: at most 8 ticks, 15 minutes apart, 100+ px apart."""
    ticks = marks(page, "tick")
    assert 3 <= len(ticks) <= 8
    times = [int(t["data-ms"]) for t in ticks]
    assert all(t % (15 * 60_000) == 0 for t in times), times  # whole quarter hours
    xs = [float(t["x1"]) for t in ticks]
    assert min(b - a for a, b in itertools.pairwise(xs)) >= 100
    bars = marks(page, "bar", kind="trend")
    assert len(bars) > len(ticks)  # one label per bucket would have crowded the axis


def test_csat_tile_and_the_currency_of_money(page: Page, summary: Any) -> None:
    """The CSAT tile shows the summary's figure; revenue and CLV carry the events' USD."""
    assert summary["csat"] is not None
    assert page.kpis["csat"] == str(summary["csat"])
    assert f"{summary['csat']:.1f}%" in page.html
    assert page.units["revenue"] == page.units["clv_avg"] == "USD"  # the generator's currency
    assert "Revenue (USD)" in page.html  # the channel table's column


def _purchase(n: int, currency: str | None, revenue: float, minute: int) -> str:
    properties: dict[str, Any] = {"order_id": f"o{n}", "revenue": revenue}
    if currency is not None:
        properties["currency"] = currency
    return json.dumps({
        "event_id": f"e{n}", "event_type": "purchase", "anonymous_id": f"v{n}",
        "timestamp": f"2026-11-20T10:{minute:02d}:00Z", "properties": properties,
    })  # fmt: skip


def test_several_currencies_are_shown_apart(tmp_path: Path) -> None:
    """Orders in USD and EUR: no single unit, and the revenue of each currency is listed."""
    events = tmp_path / "orders.jsonl"
    lines = [
        _purchase(1, "USD", 10.25, 1),
        _purchase(2, "EUR", 7.5, 2),
        _purchase(3, "USD", 2.0, 3),
        _purchase(4, "EUR", 100.0, 4),
    ]
    events.write_text("\n".join(lines) + "\n", encoding="utf-8")
    folder = tmp_path / "clickhouse"
    with pytest.MonkeyPatch.context() as monkeypatch:
        _clear_settings(monkeypatch)
        assert main(["replay", str(events), "--embedded", str(folder)]) == 0
    page = report(folder, tmp_path / "mixed.html")
    assert page.units["revenue"] == page.units["clv_avg"] == ""
    assert "EUR 107.50 · USD 12.25" in page.html  # 7.50 + 100.00 and 10.25 + 2.00
    assert "mixed currencies, added up unconverted: EUR, USD" in page.html
    assert "Revenue (mixed currencies)" in page.html


def test_money_unit_rules() -> None:
    """One currency is the unit; several or a missing one give none, several a note."""
    assert money_unit(["USD"]) == ("USD", "")
    assert money_unit(["EUR", "EUR"]) == ("EUR", "")
    assert money_unit([]) == ("", "")
    assert money_unit([""]) == ("", "")
    assert money_unit(["USD", "EUR"]) == ("", "mixed currencies, added up unconverted: EUR, USD")
    assert money_unit(["USD", ""]) == ("", "mixed currencies, added up unconverted: (none), USD")


def test_hand_made_report_shows_the_unit_and_csat() -> None:
    """A report of one currency shows its code after revenue and the CSAT percentage."""
    data = _hostile_data()
    summary = dict(data.summary, csat=75.0)
    html = render_html(
        ReportData(**{
            **{f: getattr(data, f) for f in ReportData.__slots__},
            "summary": summary,
            "currencies": (CurrencyRow("GBP", 1, 950),),
            "lifetime_currencies": ("GBP",),
        }),
        generated_at=datetime(2026, 1, 1, tzinfo=UTC),
    )  # fmt: skip
    page = Page(html)
    _Reader(page).feed(html)
    assert page.units == {**dict.fromkeys(page.kpis, ""), "revenue": "GBP", "clv_avg": "GBP"}
    assert page.kpis["csat"] == "75.0"
    assert "75.0%" in html
