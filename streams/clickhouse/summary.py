"""The ``journey summary`` figures (SPEC sections 5 and 6), computed by SQL over the tables.

The period is the half-open interval ``[from_ms, to_ms)`` of epoch milliseconds; ``None``
leaves that side open. Session figures cover sessions that *started* in the period;
``orders``/``revenue`` cover orders whose time (earliest purchase event) is in the
period; ``clv_avg`` covers all orders before ``to_ms``. SQL returns only integer counts
and sums (money as integer cents), and :func:`finish` does every division and rounding,
so both backends print byte-identical JSON. Read ``docs/metrics.md`` for the definitions.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from streams.clickhouse.backend import ClickHouse
from streams.clickhouse.dialect import FINAL

#: Decimal places of rates, percentages and seconds; of money.
RATE_DIGITS = 6
MONEY_DIGITS = 2

#: Top-level keys of the summary, in the order SPEC section 6 lists them.
SUMMARY_KEYS: tuple[str, ...] = (
    "sessions",
    "visitors",
    "page_views",
    "events",
    "bounce_rate",
    "engagement_rate",
    "conversion_rate",
    "cart_abandonment_rate",
    "avg_time_on_page_s",
    "avg_session_duration_s",
    "orders",
    "revenue",
    "funnel",
    "dropoff",
    "clv_avg",
    "csat",
    "nps",
)

# Money is summed as integer cents so the total does not depend on summation order.
_CENTS = "toInt64(round(revenue * 100))"

# (figure, SQL) pairs. No aliases in the SQL: ClickHouse substitutes an alias wherever its
# name appears, so `sum(converted) AS converted` breaks any other use of `converted`.
_SESSION_FIGURES: tuple[tuple[str, str], ...] = (
    ("sessions", "count()"),
    ("visitors", "uniqExact(visitor_key)"),
    ("page_views", "sum(page_views)"),
    ("events", "sum(events)"),
    ("bounced", "sum(bounced)"),
    ("engaged", "sum(engaged)"),
    ("converted", "sum(converted)"),
    ("carts", "sum(has_cart)"),
    ("abandoned", "countIf(has_cart = 1 AND converted = 0)"),
    ("dwell_sum_ms", "sum(dwell_sum_ms)"),
    ("dwell_count", "sum(dwell_count)"),
    ("duration_ms", "sum(duration_ms)"),
    ("funnel_consideration", "countIf(furthest_stage_rank >= 2)"),
    ("funnel_purchase", "countIf(furthest_stage_rank >= 3)"),
    ("drop_awareness", "countIf(furthest_stage_rank = 1)"),
    ("drop_consideration", "countIf(furthest_stage_rank = 2)"),
    ("drop_purchase", "countIf(furthest_stage_rank = 3 AND converted = 0)"),
    ("csat_responses", "sum(csat_responses)"),
    ("csat_satisfied", "sum(csat_satisfied)"),
    ("nps_responses", "sum(nps_responses)"),
    ("nps_promoters", "sum(nps_promoters)"),
    ("nps_detractors", "sum(nps_detractors)"),
)

_SESSION_SQL = (
    "SELECT "
    + ", ".join(sql for _, sql in _SESSION_FIGURES)
    + f" FROM sessions {FINAL} WHERE deleted = 0"
)

_ORDER_SQL = f"SELECT count(), sum({_CENTS}) FROM orders {FINAL} WHERE deleted = 0"

_CLV_SQL = f"SELECT sum({_CENTS}), uniqExact(customer_key) FROM orders {FINAL} WHERE deleted = 0"


def _period(column: str, from_ms: int | None, to_ms: int | None) -> str:
    clauses = []
    if from_ms is not None:
        clauses.append(f" AND {column} >= {{from_ms}}")
    if to_ms is not None:
        clauses.append(f" AND {column} < {{to_ms}}")
    return "".join(clauses)


def raw_figures(
    backend: ClickHouse, from_ms: int | None = None, to_ms: int | None = None
) -> dict[str, int]:
    """The integer counts and sums the summary is built from (three queries)."""
    params = {"from_ms": from_ms, "to_ms": to_ms}
    names = [name for name, _ in _SESSION_FIGURES]
    (session_row,) = backend.query(_SESSION_SQL + _period("start_ms", from_ms, to_ms), params)
    figures = {name: int(value) for name, value in zip(names, session_row, strict=True)}
    (order_row,) = backend.query(_ORDER_SQL + _period("ts_ms", from_ms, to_ms), params)
    figures["orders"], figures["revenue_cents"] = int(order_row[0]), int(order_row[1])
    (clv_row,) = backend.query(_CLV_SQL + _period("ts_ms", None, to_ms), params)
    figures["clv_revenue_cents"], figures["clv_customers"] = int(clv_row[0]), int(clv_row[1])
    return figures


def _round(numerator: int, denominator: int, digits: int) -> float:
    """The exact quotient rounded half-up to ``digits`` decimals, as a float.

    Decimal arithmetic on the integer figures: ``85.005`` becomes ``85.01`` (a float
    division would give 85.00499... and round down), identically on every backend.
    """
    quotient = Decimal(numerator) / Decimal(denominator)
    return float(quotient.quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP))


def _ratio(numerator: int, denominator: int, times: int = 1, per: int = 1) -> float | None:
    """``numerator * times / (denominator * per)`` rounded to RATE_DIGITS; None if undefined."""
    if denominator == 0:
        return None
    return _round(numerator * times, denominator * per, RATE_DIGITS)


def finish(f: dict[str, int]) -> dict[str, Any]:
    """Turn :func:`raw_figures` into the SPEC section 6 object: the one place that rounds."""
    n = f["sessions"]
    nps = _ratio(f["nps_promoters"] - f["nps_detractors"], f["nps_responses"], times=100)
    clv = None
    if f["clv_customers"]:
        clv = _round(f["clv_revenue_cents"], 100 * f["clv_customers"], MONEY_DIGITS)
    return {
        "sessions": n,
        "visitors": f["visitors"],
        "page_views": f["page_views"],
        "events": f["events"],
        "bounce_rate": _ratio(f["bounced"], n),
        "engagement_rate": _ratio(f["engaged"], n),
        "conversion_rate": _ratio(f["converted"], n),
        "cart_abandonment_rate": _ratio(f["abandoned"], f["carts"]),
        "avg_time_on_page_s": _ratio(f["dwell_sum_ms"], f["dwell_count"], per=1000),
        "avg_session_duration_s": _ratio(f["duration_ms"], n, per=1000),
        "orders": f["orders"],
        "revenue": _round(f["revenue_cents"], 100, MONEY_DIGITS),
        "funnel": {
            "awareness": n,
            "consideration": f["funnel_consideration"],
            "purchase": f["funnel_purchase"],
            "converted": f["converted"],
        },
        "dropoff": {
            "awareness": f["drop_awareness"],
            "consideration": f["drop_consideration"],
            "purchase": f["drop_purchase"],
        },
        "clv_avg": clv,
        "csat": _ratio(f["csat_satisfied"], f["csat_responses"], times=100),
        "nps": nps,
    }


def compute_summary(
    backend: ClickHouse, from_ms: int | None = None, to_ms: int | None = None
) -> dict[str, Any]:
    """The summary of sessions started in ``[from_ms, to_ms)`` read back from ClickHouse."""
    return finish(raw_figures(backend, from_ms, to_ms))
