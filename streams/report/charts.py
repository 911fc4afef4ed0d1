"""Inline SVG charts for the journey report, drawn from numbers with no library or network.

Every function returns one ``<svg>`` element as text. Text and attribute values are
escaped here (:func:`esc`), so callers may pass store data (channel names, devices) as
they are. Marks carry ``data-*`` attributes with the numbers they draw, which the tests
read back to check the picture against ``journey summary``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from streams.report.timeaxis import time_ticks

#: Colours of the funnel stages and of drop-offs (colour-blind safe, Tableau 10 based).
STAGE_COLOURS = {
    "awareness": "#4c78a8",
    "consideration": "#72b7b2",
    "purchase": "#f58518",
    "converted": "#54a24b",
}
DROP_COLOUR = "#e45756"
PALETTE = (
    "#4c78a8",
    "#f58518",
    "#54a24b",
    "#b279a2",
    "#72b7b2",
    "#eeca3b",
    "#ff9da6",
    "#9d755d",
    "#bab0ac",
    "#e45756",
    "#439894",
)
INK = "#1f2933"
MUTED = "#616e7c"
GRID = "#e4e7eb"


def esc(text: object) -> str:
    """``text`` escaped for HTML/SVG text and double-quoted attribute values."""
    return escape(str(text), quote=True)


def fmt_int(value: int) -> str:
    """An integer with thousands separators."""
    return f"{value:,}"


def fmt_pct(part: int | float, whole: int | float, digits: int = 1) -> str:
    """``part / whole`` as a percentage, or an en dash when ``whole`` is zero."""
    if not whole:
        return "–"
    return f"{100 * part / whole:.{digits}f}%"


def _svg(width: int, height: int, title: str, body: Sequence[str], kind: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" data-chart="{esc(kind)}"'
        f' viewBox="0 0 {width} {height}" width="100%" role="img"'
        f' preserveAspectRatio="xMidYMid meet"><title>{esc(title)}</title>'
        + "".join(body)
        + "</svg>"
    )


def _text(
    x: float,
    y: float,
    text: str,
    *,
    anchor: str = "start",
    size: int = 12,
    fill: str = INK,
    weight: str = "normal",
    halo: bool = False,
) -> str:
    # A white outline painted under the glyphs keeps labels readable over ribbons.
    outline = ' paint-order="stroke" stroke="#fff" stroke-width="3"' if halo else ""
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" font-size="{size}"'
        f' fill="{fill}" font-weight="{weight}"{outline}>{esc(text)}</text>'
    )


def empty_chart(title: str, kind: str, message: str = "No sessions in this period") -> str:
    """A placeholder chart saying there is nothing to draw."""
    return _svg(600, 80, title, [_text(300, 45, message, anchor="middle", fill=MUTED)], kind)


# ---------------------------------------------------------------- funnel


def funnel_chart(stages: Sequence[tuple[str, int]]) -> str:
    """A centred funnel: one bar per stage, width by sessions, with share and step rate."""
    width, row_h, top = 900, 58, 16
    height = top + row_h * len(stages) + 8
    total = stages[0][1] if stages else 0
    if not total:
        return empty_chart("Stage funnel", "funnel")
    centre, max_w = 420, 470
    body = []
    previous = total
    for i, (stage, count) in enumerate(stages):
        y = top + i * row_h
        w = max(2.0, max_w * count / total)
        colour = STAGE_COLOURS.get(stage, PALETTE[i % len(PALETTE)])
        body.append(
            f'<rect class="funnel-bar" data-stage="{esc(stage)}" data-count="{count}"'
            f' x="{centre - w / 2:.1f}" y="{y:.1f}" width="{w:.1f}" height="{row_h - 14}"'
            f' rx="4" fill="{colour}"/>'
        )
        body.append(_text(20, y + 27, stage.capitalize(), size=14, weight="600"))
        if w > 90:
            label = _text(
                centre, y + 27, fmt_int(count), anchor="middle", size=14, fill="#fff", weight="600"
            )
        else:
            label = _text(centre + w / 2 + 8, y + 27, fmt_int(count), size=14, weight="600")
        body.append(label)
        body.append(
            _text(
                width - 16,
                y + 20,
                f"{fmt_pct(count, total)} of sessions",
                anchor="end",
                size=13,
                weight="600",
            )
        )
        if i:
            body.append(
                _text(
                    width - 16,
                    y + 37,
                    f"{fmt_pct(count, previous)} of previous step",
                    anchor="end",
                    size=11,
                    fill=MUTED,
                )
            )
        previous = count
    return _svg(width, height, "Stage funnel", body, "funnel")


# ---------------------------------------------------------------- Sankey


@dataclass(frozen=True, slots=True)
class SankeyNode:
    """A box of the Sankey diagram: its column, label, colour and value (sessions)."""

    key: str
    label: str
    column: int
    value: int
    colour: str


@dataclass(frozen=True, slots=True)
class SankeyLink:
    """A ribbon from one node to another carrying ``value`` sessions."""

    source: str
    target: str
    value: int


def sankey_chart(nodes: Sequence[SankeyNode], links: Sequence[SankeyLink]) -> str:
    """Columns of nodes stacked top-down, ribbons between them with widths by value.

    Node heights share one scale (the largest column fills the plot height), ribbons
    leave and enter their nodes in the order given, and zero-valued links are left out.
    """
    width, height, top, bottom = 1100, 460, 20, 20
    node_w, gap = 16, 14
    columns = sorted({n.column for n in nodes})
    by_column = {c: [n for n in nodes if n.column == c] for c in columns}
    total = max((sum(n.value for n in col) for col in by_column.values()), default=0)
    if not total:
        return empty_chart("Journey flow", "sankey")
    max_nodes = max(len(col) for col in by_column.values())
    scale = (height - top - bottom - gap * (max_nodes - 1)) / total
    left, right = 150, width - 190
    step = (right - left - node_w) / max(1, len(columns) - 1)
    pos: dict[str, tuple[float, float, float]] = {}  # key -> (x, y, h)
    for c in columns:
        y = float(top)
        for node in by_column[c]:
            h = max(1.5, node.value * scale)
            pos[node.key] = (left + columns.index(c) * step, y, h)
            y += h + gap
    out_used = dict.fromkeys(pos, 0.0)
    in_used = dict.fromkeys(pos, 0.0)
    colours = {n.key: n.colour for n in nodes}
    ribbons, boxes = [], []
    for link in links:
        if link.value <= 0:
            continue
        sx, sy, _ = pos[link.source]
        tx, ty, _ = pos[link.target]
        h = link.value * scale
        y0, y1 = sy + out_used[link.source], ty + in_used[link.target]
        out_used[link.source] += h
        in_used[link.target] += h
        x0, x1 = sx + node_w, tx
        xm = (x0 + x1) / 2
        path = (
            f"M{x0:.1f},{y0:.1f} C{xm:.1f},{y0:.1f} {xm:.1f},{y1:.1f} {x1:.1f},{y1:.1f}"
            f" L{x1:.1f},{y1 + h:.1f} C{xm:.1f},{y1 + h:.1f} {xm:.1f},{y0 + h:.1f}"
            f" {x0:.1f},{y0 + h:.1f} Z"
        )
        ribbons.append(
            f'<path class="sankey-link" data-source="{esc(link.source)}"'
            f' data-target="{esc(link.target)}" data-value="{link.value}" d="{path}"'
            f' fill="{colours[link.target]}" fill-opacity="0.38">'
            f"<title>{esc(link.source)} → {esc(link.target)}: {fmt_int(link.value)}</title>"
            "</path>"
        )
    for node in nodes:
        x, y, h = pos[node.key]
        boxes.append(
            f'<rect class="sankey-node" data-node="{esc(node.key)}" data-value="{node.value}"'
            f' x="{x:.1f}" y="{y:.1f}" width="{node_w}" height="{h:.1f}" fill="{node.colour}"/>'
        )
        label = f"{node.label} · {fmt_int(node.value)}"
        if node.column == columns[0]:
            boxes.append(_text(x - 6, y + h / 2 + 4, label, anchor="end", size=12))
        else:
            boxes.append(
                _text(x + node_w + 6, y + h / 2 + 4, label, size=13, weight="600", halo=True)
            )
    return _svg(width, height, "Journey flow", ribbons + boxes, "sankey")


# ---------------------------------------------------------------- bars


@dataclass(frozen=True, slots=True)
class Bar:
    """One bar: its label, value, the note printed beside it, colour and data attributes."""

    label: str
    value: int
    note: str = ""
    colour: str = PALETTE[0]
    key: str = ""


def hbar_chart(title: str, kind: str, bars: Sequence[Bar], value_label: str = "") -> str:
    """Horizontal bars with labels on the left and value and note on the right."""
    if not bars or not any(b.value for b in bars):
        return empty_chart(title, kind)
    row_h, top = 30, 10
    width, height = 900, top + row_h * len(bars) + 6
    left, max_w = 190, 400
    peak = max(b.value for b in bars)
    body = []
    for i, bar in enumerate(bars):
        y = top + i * row_h
        w = max(1.0, max_w * bar.value / peak) if bar.value else 0.0
        body.append(_text(left - 10, y + 17, bar.label, anchor="end", size=13))
        body.append(
            f'<rect class="bar" data-kind="{esc(kind)}" data-key="{esc(bar.key or bar.label)}"'
            f' data-value="{bar.value}" x="{left}" y="{y + 3:.1f}" width="{w:.1f}"'
            f' height="{row_h - 8}" rx="3" fill="{bar.colour}"/>'
        )
        text = f"{fmt_int(bar.value)}{value_label}"
        body.append(_text(left + w + 8, y + 17, text, size=12, weight="600"))
        if bar.note:
            body.append(_text(width - 12, y + 17, bar.note, anchor="end", fill=MUTED))
    return _svg(width, height, title, body, kind)


def vbar_chart(title: str, kind: str, bars: Sequence[Bar], y_label: str) -> str:
    """Vertical bars with a value above each bar and a label below."""
    if not bars or not any(b.value for b in bars):
        return empty_chart(title, kind)
    width, height, top, bottom, left = 560, 300, 24, 50, 56
    plot_h = height - top - bottom
    slot = (width - left - 20) / len(bars)
    peak = _nice_ceiling(max(b.value for b in bars))
    body = [_axis_y(left, top, plot_h, width - 20, peak, y_label)]
    for i, bar in enumerate(bars):
        h = plot_h * bar.value / peak if peak else 0
        x = left + i * slot + slot * 0.15
        y = top + plot_h - h
        body.append(
            f'<rect class="bar" data-kind="{esc(kind)}" data-key="{esc(bar.key or bar.label)}"'
            f' data-value="{bar.value}" x="{x:.1f}" y="{y:.1f}" width="{slot * 0.7:.1f}"'
            f' height="{h:.1f}" rx="3" fill="{bar.colour}"/>'
        )
        body.append(
            _text(x + slot * 0.35, y - 6, fmt_int(bar.value), anchor="middle", weight="600")
        )
        body.append(_text(x + slot * 0.35, top + plot_h + 18, bar.label, anchor="middle"))
        if bar.note:
            body.append(
                _text(
                    x + slot * 0.35,
                    top + plot_h + 34,
                    bar.note,
                    anchor="middle",
                    fill=MUTED,
                    size=11,
                )
            )
    return _svg(width, height, title, body, kind)


def _nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 times a power of ten that is at least ``value``."""
    if value <= 0:
        return 1.0
    magnitude = 10 ** (len(str(int(value))) - 1) if value >= 1 else 1.0
    for factor in (1, 2, 2.5, 5, 10):
        if factor * magnitude >= value:
            return float(factor * magnitude)
    return float(10 * magnitude)


def _axis_y(left: float, top: float, plot_h: float, right: float, peak: float, label: str) -> str:
    parts = []
    for i in range(5):
        y = top + plot_h - plot_h * i / 4
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{right}" y2="{y:.1f}" stroke="{GRID}"/>')
        parts.append(
            _text(left - 6, y + 4, fmt_int(round(peak * i / 4)), anchor="end", size=10, fill=MUTED)
        )
    parts.append(
        f'<text x="14" y="{top + plot_h / 2:.1f}" font-size="11" fill="{MUTED}"'
        f' text-anchor="middle" transform="rotate(-90 14 {top + plot_h / 2:.1f})">'
        f"{esc(label)}</text>"
    )
    return "".join(parts)


# ---------------------------------------------------------------- trend


@dataclass(frozen=True, slots=True)
class TrendPoint:
    """Sessions and conversions of one time bucket, with its start and hover label."""

    start_ms: int
    label: str
    sessions: int
    converted: int


def trend_chart(points: Sequence[TrendPoint], bucket_ms: int, bucket_name: str) -> str:
    """Sessions per bucket as bars (left axis) and conversion rate as a line (right axis).

    The x axis is time: a bar stands where its bucket is (a bucket without sessions is a
    gap), and a few ticks at round times (:func:`~streams.report.timeaxis.time_ticks`)
    carry the labels, so they never run into each other whatever the number of buckets.
    """
    if not points or not any(p.sessions for p in points):
        return empty_chart("Sessions and conversion over time", "trend")
    width, height, top, bottom, left, right = 1100, 340, 24, 78, 64, 1040
    plot_h = height - top - bottom
    peak = _nice_ceiling(max(p.sessions for p in points))
    rates = [p.converted / p.sessions if p.sessions else 0.0 for p in points]
    rate_top = _nice_ceiling(max(rates) * 100) / 100 if max(rates) > 0 else 0.01
    first_ms, end_ms = points[0].start_ms, points[-1].start_ms + bucket_ms
    per_ms = (right - left) / (end_ms - first_ms)

    def x_of(ms: float) -> float:
        return left + (ms - first_ms) * per_ms

    slot = bucket_ms * per_ms
    body = [_axis_y(left, top, plot_h, right, peak, f"sessions per {bucket_name}")]
    line = []
    for point, rate in zip(points, rates, strict=True):
        h = plot_h * point.sessions / peak
        x = x_of(point.start_ms)
        body.append(
            f'<rect class="bar" data-kind="trend" data-key="{point.start_ms}"'
            f' data-value="{point.sessions}" data-converted="{point.converted}"'
            f' x="{x + slot * 0.12:.1f}" y="{top + plot_h - h:.1f}" width="{slot * 0.76:.1f}"'
            f' height="{h:.1f}" fill="{STAGE_COLOURS["awareness"]}" fill-opacity="0.75">'
            f"<title>{esc(point.label)}: {fmt_int(point.sessions)} sessions,"
            f" {fmt_pct(point.converted, point.sessions)} converted</title></rect>"
        )
        cx, cy = x + slot / 2, top + plot_h - plot_h * rate / rate_top
        line.append(f"{cx:.1f},{cy:.1f}")
    base = top + plot_h
    for tick in time_ticks(first_ms, end_ms):
        tx = x_of(tick.ms)
        body.append(
            f'<line class="tick" data-ms="{tick.ms}" x1="{tx:.1f}" y1="{base:.1f}"'
            f' x2="{tx:.1f}" y2="{base + 5:.1f}" stroke="{MUTED}"/>'
        )
        body.append(_text(tx, base + 18, tick.label, anchor="middle", size=11, fill=MUTED))
        if tick.context:
            body.append(_text(tx, base + 32, tick.context, anchor="middle", size=10, fill=MUTED))
    body.append(
        f'<polyline class="trend-line" points="{" ".join(line)}" fill="none"'
        f' stroke="{STAGE_COLOURS["converted"]}" stroke-width="2.5"/>'
    )
    for i in range(5):
        y = top + plot_h - plot_h * i / 4
        body.append(
            _text(
                right + 6,
                y + 4,
                f"{100 * rate_top * i / 4:.1f}%",
                size=10,
                fill=STAGE_COLOURS["converted"],
            )
        )
    legend_y = height - 12
    body.append(
        f'<rect x="{left}" y="{legend_y - 9}" width="12" height="10"'
        f' fill="{STAGE_COLOURS["awareness"]}"/>'
    )
    body.append(_text(left + 18, legend_y, "sessions started", size=11))
    body.append(
        f'<line x1="{left + 150}" y1="{legend_y - 4}" x2="{left + 170}" y2="{legend_y - 4}"'
        f' stroke="{STAGE_COLOURS["converted"]}" stroke-width="2.5"/>'
    )
    body.append(_text(left + 176, legend_y, "conversion rate (right axis)", size=11))
    return _svg(width, height, "Sessions and conversion over time", body, "trend")
