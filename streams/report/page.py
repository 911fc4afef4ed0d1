"""The journey report as one self-contained HTML page: inline CSS, inline SVG, no scripts.

Nothing is loaded from the network (no CDN, fonts or images), so the file can be mailed
or attached to a ticket and opened anywhere. Every number comes from
:class:`~streams.report.data.ReportData`; every text is escaped.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from streams.report.charts import (
    DROP_COLOUR,
    PALETTE,
    STAGE_COLOURS,
    Bar,
    SankeyLink,
    SankeyNode,
    TrendPoint,
    esc,
    fmt_int,
    fmt_pct,
    funnel_chart,
    hbar_chart,
    sankey_chart,
    trend_chart,
    vbar_chart,
)
from streams.report.data import ReportData

#: Channels drawn as their own Sankey sources; the rest are merged into "Other channels".
SANKEY_CHANNELS = 7

_CSS = """
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { margin: 0; background: #f5f7fa; color: #1f2933;
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
  sans-serif; }
header { background: #1f2933; color: #fff; padding: 28px 40px 24px; }
header h1 { margin: 0 0 6px; font-size: 26px; font-weight: 650; }
header p { margin: 0; color: #cbd2d9; }
main { max-width: 1240px; margin: 0 auto; padding: 24px 32px 40px; }
.kpis { display: grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr)); gap: 12px;
  margin-bottom: 22px; }
.kpi { background: #fff; border-radius: 8px; padding: 12px 14px;
  box-shadow: 0 1px 2px rgba(31,41,51,.08); border-top: 3px solid #4c78a8; }
.kpi .label { color: #616e7c; font-size: 12px; text-transform: uppercase;
  letter-spacing: .04em; }
.kpi .value { font-size: 22px; font-weight: 650; margin-top: 2px; }
.kpi .value .unit { font-size: 14px; font-weight: 600; color: #616e7c; }
.kpi .note { color: #616e7c; font-size: 11px; margin-top: 2px; }
section { background: #fff; border-radius: 8px; padding: 18px 22px 14px; margin-bottom: 20px;
  box-shadow: 0 1px 2px rgba(31,41,51,.08); }
section h2 { margin: 0 0 4px; font-size: 18px; }
section p.note { margin: 0 0 12px; color: #616e7c; }
.pair { display: grid; grid-template-columns: 1fr 1fr; gap: 20px; }
.pair section { margin-bottom: 0; }
.pair + section, .pair + .pair { margin-top: 20px; }
svg.chart { display: block; max-width: 100%; height: auto; }
svg.chart text { font-family: inherit; }
details { margin-top: 8px; color: #3e4c59; }
summary { cursor: pointer; color: #616e7c; font-size: 12px; }
table { border-collapse: collapse; margin-top: 6px; font-size: 13px; }
th, td { padding: 3px 12px 3px 0; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { color: #616e7c; font-weight: 600; border-bottom: 1px solid #e4e7eb; }
footer { color: #7b8794; font-size: 12px; text-align: center; padding: 0 0 28px; }
"""


def _iso(ms: int | None) -> str:
    if ms is None:
        return "…"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _period_text(data: ReportData) -> str:
    if data.from_ms is not None or data.to_ms is not None:
        text = f"Sessions started from {_iso(data.from_ms)} to {_iso(data.to_ms)} (exclusive)"
    else:
        text = "All sessions"
    if data.first_start_ms is not None:
        text += f"; first {_iso(data.first_start_ms)}, last {_iso(data.last_start_ms)}"
    return text


def _rate(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def _seconds(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.1f} s" if value < 120 else f"{value / 60:.1f} min"


def _percent(value: float | None) -> str:
    """A figure already in percent (CSAT), one decimal."""
    return "–" if value is None else f"{value:.1f}%"


def _number(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _money(value: float | None) -> str:
    return "–" if value is None else f"{value:,.2f}"


def money_unit(currencies: Sequence[str]) -> tuple[str, str]:
    """(unit shown after an amount, note under it) for money in ``currencies``.

    One currency: its code, no note. Several: no unit and a note saying the amount adds
    them up unconverted (the summary's figure does exactly that). None given ("", a
    tracker that sends no ``currency``) or no money at all: nothing.
    """
    named = sorted({c for c in currencies if c})
    if len(named) == 1 and len(set(currencies)) == 1:
        return named[0], ""
    if len(set(currencies)) > 1:
        shown = ", ".join(c or "(none)" for c in sorted(set(currencies)))
        return "", f"mixed currencies, added up unconverted: {shown}"
    return "", ""


def _revenue_note(data: ReportData) -> str:
    """Per-currency revenue when the period's orders use several currencies."""
    if len({row.currency for row in data.currencies}) < 2:
        return ""
    return " · ".join(
        f"{row.currency or '(none)'} {_money(row.revenue_cents / 100)}" for row in data.currencies
    )


def _kpis(data: ReportData) -> str:
    summary = data.summary

    def get(key: str) -> float | None:
        value = summary.get(key)
        return float(value) if isinstance(value, int | float) else None

    revenue_unit, revenue_mixed = money_unit([row.currency for row in data.currencies])
    clv_unit, clv_mixed = money_unit(data.lifetime_currencies)
    notes = {
        "revenue": _revenue_note(data) or revenue_mixed,
        "clv_avg": clv_mixed,
        "csat": "answers of 4 or 5 on a 1-5 scale",
    }
    units = {"revenue": revenue_unit, "clv_avg": clv_unit}
    cards = [
        ("sessions", "Sessions", fmt_int(int(get("sessions") or 0))),
        ("visitors", "Visitors", fmt_int(int(get("visitors") or 0))),
        ("conversion_rate", "Conversion rate", _rate(get("conversion_rate"))),
        ("bounce_rate", "Bounce rate", _rate(get("bounce_rate"))),
        ("engagement_rate", "Engagement rate", _rate(get("engagement_rate"))),
        ("cart_abandonment_rate", "Cart abandonment", _rate(get("cart_abandonment_rate"))),
        ("avg_time_on_page_s", "Avg time on page", _seconds(get("avg_time_on_page_s"))),
        ("avg_session_duration_s", "Avg session", _seconds(get("avg_session_duration_s"))),
        ("orders", "Orders", fmt_int(int(get("orders") or 0))),
        ("revenue", "Revenue", _money(get("revenue"))),
        ("clv_avg", "Avg customer value", _money(get("clv_avg"))),
        ("csat", "CSAT", _percent(get("csat"))),
        ("nps", "NPS", _number(get("nps"))),
    ]
    html = []
    for key, label, shown in cards:
        raw = summary.get(key)
        value = "" if raw is None else raw
        unit = units.get(key, "") if raw is not None else ""
        unit_html = f' <span class="unit">{esc(unit)}</span>' if unit else ""
        note = notes.get(key, "") if raw is not None else ""
        note_html = f'<div class="note">{esc(note)}</div>' if note else ""
        html.append(
            f'<div class="kpi" data-key="{esc(key)}" data-value="{esc(value)}"'
            f' data-unit="{esc(unit)}"><div class="label">{esc(label)}</div>'
            f'<div class="value">{esc(shown)}{unit_html}</div>{note_html}</div>'
        )
    return '<div class="kpis">' + "".join(html) + "</div>"


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows)
    return (
        "<details><summary>Show the numbers</summary>"
        f"<table><tr>{head}</tr>{body}</table></details>"
    )


def _section(title: str, note: str, chart: str, table: str = "", kind: str = "") -> str:
    return (
        f'<section data-section="{esc(kind)}"><h2>{esc(title)}</h2>'
        f'<p class="note">{esc(note)}</p>{chart}{table}</section>'
    )


def _funnel(data: ReportData) -> str:
    funnel = data.summary["funnel"]
    stages = [(s, int(funnel[s])) for s in ("awareness", "consideration", "purchase", "converted")]
    table = _table(
        ["Stage", "Sessions", "Of all sessions"],
        [(s, fmt_int(n), fmt_pct(n, stages[0][1])) for s, n in stages],
    )
    return _section(
        "Stage funnel",
        "Sessions whose furthest stage is at least awareness, consideration and purchase, "
        "and sessions with a purchase (converted).",
        funnel_chart(stages),
        table,
        "funnel",
    )


def _sankey(data: ReportData) -> str:
    flow = data.flow
    shown = list(data.channels[:SANKEY_CHANNELS])
    rest = data.channels[SANKEY_CHANNELS:]
    nodes = [
        SankeyNode(
            f"channel:{c.channel}", c.channel or "(none)", 0, c.sessions, PALETTE[i % len(PALETTE)]
        )
        for i, c in enumerate(shown)
    ]
    links = [SankeyLink(n.key, "awareness", n.value) for n in nodes]
    if rest:
        other = sum(c.sessions for c in rest)
        nodes.append(SankeyNode("channel:other", "Other channels", 0, other, "#bab0ac"))
        links.append(SankeyLink("channel:other", "awareness", other))
    nodes += [
        SankeyNode("awareness", "Awareness", 1, flow.sessions, STAGE_COLOURS["awareness"]),
        SankeyNode(
            "consideration", "Consideration", 2, flow.consideration, STAGE_COLOURS["consideration"]
        ),
        SankeyNode("left_awareness", "Left at awareness", 2, flow.left_at_awareness, DROP_COLOUR),
        SankeyNode("purchase", "Purchase", 3, flow.purchase, STAGE_COLOURS["purchase"]),
        SankeyNode(
            "left_consideration",
            "Left at consideration",
            3,
            flow.left_at_consideration,
            DROP_COLOUR,
        ),
        SankeyNode("converted", "Converted", 4, flow.converted, STAGE_COLOURS["converted"]),
        SankeyNode("abandoned_purchase", "No purchase", 4, flow.abandoned_at_purchase, DROP_COLOUR),
    ]
    links += [
        SankeyLink("awareness", "consideration", flow.consideration),
        SankeyLink("awareness", "left_awareness", flow.left_at_awareness),
        SankeyLink("consideration", "purchase", flow.purchase),
        SankeyLink("consideration", "left_consideration", flow.left_at_consideration),
        SankeyLink("purchase", "converted", flow.converted),
        SankeyLink("purchase", "abandoned_purchase", flow.abandoned_at_purchase),
    ]
    return _section(
        "Journey flow",
        "From the channel of each session's first event through the stages; ribbons are "
        "as wide as the sessions they carry, red boxes are where sessions ended.",
        sankey_chart(nodes, links),
        kind="sankey",
    )


def _dropoff(data: ReportData) -> str:
    drop = data.summary["dropoff"]
    sessions = int(data.summary["sessions"])
    rows = [
        ("awareness", "Awareness", int(drop["awareness"])),
        ("consideration", "Consideration", int(drop["consideration"])),
        ("purchase", "Purchase (no order)", int(drop["purchase"])),
    ]
    bars = [
        Bar(label, n, f"{fmt_pct(n, sessions)} of sessions", DROP_COLOUR, key)
        for key, label, n in rows
    ]
    return _section(
        "Drop-off by stage",
        "Sessions that went no further: furthest stage awareness or consideration, or the "
        "purchase stage reached without a purchase.",
        vbar_chart("Drop-off by stage", "dropoff", bars, "sessions"),
        kind="dropoff",
    )


def _channels(data: ReportData) -> str:
    bars = [
        Bar(
            c.channel or "(none)",
            c.sessions,
            f"{fmt_pct(c.converted, c.sessions)} converted · {fmt_pct(c.bounced, c.sessions)}"
            " bounced",
            PALETTE[i % len(PALETTE)],
            c.channel,
        )
        for i, c in enumerate(data.channels)
    ]
    unit, mixed = money_unit([row.currency for row in data.currencies])
    revenue = f"Revenue ({unit})" if unit else "Revenue (mixed currencies)" if mixed else "Revenue"
    table = _table(
        ["Channel", "Sessions", "Consideration", "Purchase", "Converted", revenue],
        [
            (
                c.channel,
                fmt_int(c.sessions),
                fmt_int(c.consideration),
                fmt_int(c.purchase),
                fmt_int(c.converted),
                _money(c.revenue_cents / 100),
            )
            for c in data.channels
        ],
    )
    return _section(
        "Channel mix",
        "Sessions by the channel of their first event (GA4-style default channel grouping).",
        hbar_chart("Channel mix", "channels", bars),
        table,
        "channels",
    )


def _time_on_page(data: ReportData) -> str:
    bars = [
        Bar(r.label, r.sessions, colour=STAGE_COLOURS["consideration"], key=r.label)
        for r in data.time_on_page
    ]
    table = _table(
        ["Device", "Sessions", "Avg time on page"],
        [
            (
                d.device or "(unknown)",
                fmt_int(d.sessions),
                _seconds(d.dwell_sum_ms / d.dwell_count / 1000 if d.dwell_count else None),
            )
            for d in data.devices
        ],
    )
    avg = data.summary.get("avg_time_on_page_s")
    return _section(
        "Time on page",
        f"Sessions by their mean time on page (overall mean {_seconds(avg)}): time from a "
        "page view to the session's next later event.",
        vbar_chart("Time on page", "time_on_page", bars, "sessions"),
        table,
        "time_on_page",
    )


_BUCKET_NAMES = {
    60_000: "minute",
    300_000: "5 minutes",
    900_000: "15 minutes",
    3_600_000: "hour",
    6 * 3_600_000: "6 hours",
    86_400_000: "day",
    7 * 86_400_000: "week",
}


def _trend(data: ReportData) -> str:
    bucket = data.trend_bucket_ms
    fmt = "%Y-%m-%d" if bucket >= 86_400_000 else "%Y-%m-%d %H:%M"
    points = [
        TrendPoint(
            r.start_ms,
            datetime.fromtimestamp(r.start_ms / 1000, UTC).strftime(fmt),
            r.sessions,
            r.converted,
        )
        for r in data.trend
    ]
    name = _BUCKET_NAMES.get(bucket, f"{bucket // 1000} s")
    return _section(
        "Trends",
        f"Sessions started per {name} (UTC) and the share of them that converted.",
        trend_chart(points, bucket, name),
        kind="trend",
    )


def render_html(
    data: ReportData,
    *,
    title: str = "Customer journey report",
    generated_at: datetime | None = None,
) -> str:
    """The complete report page for ``data``."""
    moment = (generated_at or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M UTC")
    body = [
        _kpis(data),
        _funnel(data),
        _sankey(data),
        '<div class="pair">',
        _dropoff(data),
        _time_on_page(data),
        "</div>",
        _channels(data),
        _trend(data),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>"
        f"<header><h1>{esc(title)}</h1><p>{esc(_period_text(data))}</p></header>"
        f"<main>{''.join(body)}</main>"
        f"<footer>journey-streams · figures as defined in docs/metrics.md · generated "
        f"{esc(moment)}</footer></body></html>\n"
    )
