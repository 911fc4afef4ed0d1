"""The ``journey summary`` figures (SPEC sections 5 and 6), computed by SQL over the tables.

The period is the half-open interval ``[from_ms, to_ms)`` of epoch milliseconds; ``None``
leaves that side open. Session figures cover sessions that *started* in the period;
``orders``/``revenue`` cover orders whose time (earliest purchase event) is in the
period; ``clv_avg`` covers all orders before ``to_ms``. SQL returns only integer counts
and sums (money as integer cents), and :func:`finish` does every division and rounding,
so both backends print byte-identical JSON. Read ``docs/metrics.md`` for the definitions.

Customer figures (SPEC section 5b) stitch identities at query time: a visitor's customer
key is the user_id of its earliest identity link (the ``link_*`` columns of its live
sessions, each a session's earliest event carrying an anonymous_id and a user_id) before
``to_ms``, else the visitor key. A session's earliest link is before ``to_ms`` exactly when
one of its link events is, so the earliest of those is the visitor's earliest link event
of the period. Nothing about it is kept per visitor: stream and replay, in any arrival
order and batching, write the same session rows and so get the same customers.
"""

from __future__ import annotations

from datetime import date, timedelta
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
    "customers",
    "customer_funnel",
    "repeat_purchase_rate",
    "advocacy_rate",
    "cohorts",
)

#: Keys of ``customer_funnel``, in order.
CUSTOMER_FUNNEL_KEYS = (
    "awareness",
    "consideration",
    "purchase",
    "converted",
    "retention",
    "advocacy",
)
#: Weeks after the cohort week that ``retained`` covers (k = 0 .. COHORT_WEEKS - 1).
COHORT_WEEKS = 12
DAY_MS = 86_400_000

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

# A visitor's linked user_id: of its earliest identity link ((link_ms, link_event_id) order)
# among its live sessions, before the period's end ({links_before} is filled in).
_LINKS = (
    "SELECT visitor_key, argMin(link_user_id, (link_ms, link_event_id)) AS linked_user"
    f" FROM sessions {FINAL} WHERE deleted = 0 AND link_user_id != ''{{links_before}}"
    " GROUP BY visitor_key"
)
_CUSTOMER = "if(linked_user != '', linked_user, visitor_key)"


def _stitched(rows: str) -> str:
    """``rows`` (a SELECT with a visitor_key column) joined to the visitor's linked user."""
    return f"({rows}) AS stitched_rows ANY LEFT JOIN ({_LINKS}) AS links USING visitor_key"


_CLV_SQL = f"SELECT sum({_CENTS}), uniqExact({_CUSTOMER}) FROM " + _stitched(
    f"SELECT visitor_key, revenue FROM orders {FINAL} WHERE deleted = 0{{orders_before}}"
)

# One row per customer with a session started before the period's end ({in_period} is the
# condition on start_ms for "started in the period"), then counted.
_CUSTOMER_SQL = (
    "SELECT countIf(in_period = 1), countIf(period_rank >= 2), countIf(period_rank >= 3),"
    " countIf(period_converted = 1), countIf(period_retention = 1), countIf(period_advocacy = 1),"
    " countIf(buying_sessions >= 1), countIf(buying_sessions >= 2),"
    " countIf(buying_sessions >= 1 AND ever_advocacy = 1)"
    f" FROM (SELECT {_CUSTOMER} AS customer,"
    " max({in_period}) AS in_period,"
    " maxIf(furthest_stage_rank, {in_period}) AS period_rank,"
    " maxIf(converted, {in_period}) AS period_converted,"
    " maxIf(retention, {in_period}) AS period_retention,"
    " maxIf(advocacy, {in_period}) AS period_advocacy,"
    " sum(converted) AS buying_sessions, max(advocacy) AS ever_advocacy FROM "
    + _stitched(
        "SELECT visitor_key, start_ms, furthest_stage_rank, converted, retention, advocacy"
        f" FROM sessions {FINAL} WHERE deleted = 0{{starts_before}}"
    )
    + " GROUP BY customer)"
)


def _week(column: str) -> str:
    """SQL for the number of the UTC ISO week (Monday-based) of an epoch-ms column.

    Week n starts on day 7n - 3 after 1970-01-01 (a Thursday): integer arithmetic, free
    of time zones and identical on both versions; :func:`week_monday` turns it into a date.
    """
    return f"intDiv(intDiv({column}, {DAY_MS}) + 3, 7)"


# Per customer: the week of their earliest purchase event (the cohort) and every week with
# a purchase event. A session's purchase events lie in the weeks of its first and last one
# (a session is shorter than a week). Then customers per (cohort, weeks after it).
_COHORT_SQL = (
    f"SELECT cohort, week - cohort, count() FROM (SELECT {_CUSTOMER} AS customer,"
    " min(first_week) AS cohort,"
    " arrayConcat(groupUniqArray(first_week), groupUniqArray(last_week)) AS weeks FROM "
    + _stitched(
        f"SELECT visitor_key, {_week('first_purchase_ms')} AS first_week,"
        f" {_week('last_purchase_ms')} AS last_week"
        f" FROM sessions {FINAL} WHERE deleted = 0 AND converted = 1{{starts_before}}"
    )
    + f" GROUP BY customer) ARRAY JOIN arrayDistinct(weeks) AS week"
    f" WHERE week - cohort < {COHORT_WEEKS} GROUP BY cohort, week ORDER BY cohort, week"
)


def _period(column: str, from_ms: int | None, to_ms: int | None) -> str:
    clauses = []
    if from_ms is not None:
        clauses.append(f" AND {column} >= {{from_ms}}")
    if to_ms is not None:
        clauses.append(f" AND {column} < {{to_ms}}")
    return "".join(clauses)


#: Names of the customer counts, in the column order of the customer query.
_CUSTOMER_FIGURES = (
    "customers",
    "customers_consideration",
    "customers_purchase",
    "customers_converted",
    "customers_retention",
    "customers_advocacy",
    "buyers",
    "repeat_buyers",
    "advocate_buyers",
)


def _fill(sql: str, from_ms: int | None, to_ms: int | None) -> str:
    """``sql`` with the period's conditions on links, history and the period itself."""
    return (
        sql.replace("{links_before}", _period("link_ms", None, to_ms))
        .replace("{starts_before}", _period("start_ms", None, to_ms))
        .replace("{orders_before}", _period("ts_ms", None, to_ms))
        .replace("{in_period}", "start_ms >= {from_ms}" if from_ms is not None else "1")
    )


def raw_figures(
    backend: ClickHouse, from_ms: int | None = None, to_ms: int | None = None
) -> dict[str, Any]:
    """The integer counts and sums the summary is built from (five queries).

    ``cohort_rows`` holds (cohort week number, weeks after it, customers) for every cohort
    (:func:`finish` keeps those of the period).
    """
    params = {"from_ms": from_ms, "to_ms": to_ms}
    names = [name for name, _ in _SESSION_FIGURES]
    (session_row,) = backend.query(_SESSION_SQL + _period("start_ms", from_ms, to_ms), params)
    figures: dict[str, Any] = {
        name: int(value) for name, value in zip(names, session_row, strict=True)
    }
    (order_row,) = backend.query(_ORDER_SQL + _period("ts_ms", from_ms, to_ms), params)
    figures["orders"], figures["revenue_cents"] = int(order_row[0]), int(order_row[1])
    (clv_row,) = backend.query(_fill(_CLV_SQL, from_ms, to_ms), params)
    figures["clv_revenue_cents"], figures["clv_customers"] = int(clv_row[0]), int(clv_row[1])
    (customer_row,) = backend.query(_fill(_CUSTOMER_SQL, from_ms, to_ms), params)
    for name, value in zip(_CUSTOMER_FIGURES, customer_row, strict=True):
        figures[name] = int(value)
    figures["cohort_rows"] = [
        (int(cohort), int(k), int(n))
        for cohort, k, n in backend.query(_fill(_COHORT_SQL, from_ms, to_ms), params)
    ]
    figures["from_ms"], figures["to_ms"] = from_ms, to_ms
    return figures


def week_monday(week: int) -> date:
    """The Monday (UTC) that starts week number ``week`` of :func:`_week`."""
    return _EPOCH + timedelta(days=7 * week - 3)


_EPOCH = date(1970, 1, 1)


def cohorts(
    rows: list[tuple[int, int, int]], from_ms: int | None, to_ms: int | None
) -> list[dict[str, Any]]:
    """The ``cohorts`` list: one entry per cohort week starting in ``[from_ms, to_ms)``."""
    retained: dict[int, list[int]] = {}
    for cohort, k, n in rows:
        start_ms = (7 * cohort - 3) * DAY_MS
        if (from_ms is None or start_ms >= from_ms) and (to_ms is None or start_ms < to_ms):
            retained.setdefault(cohort, [0] * COHORT_WEEKS)[k] = n
    return [
        {"week": week_monday(c).isoformat(), "customers": counts[0], "retained": counts}
        for c, counts in sorted(retained.items())
    ]


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


def finish(f: dict[str, Any]) -> dict[str, Any]:
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
        "customers": f["customers"],
        "customer_funnel": {
            "awareness": f["customers"],
            "consideration": f["customers_consideration"],
            "purchase": f["customers_purchase"],
            "converted": f["customers_converted"],
            "retention": f["customers_retention"],
            "advocacy": f["customers_advocacy"],
        },
        "repeat_purchase_rate": _ratio(f["repeat_buyers"], f["buyers"]),
        "advocacy_rate": _ratio(f["advocate_buyers"], f["buyers"]),
        "cohorts": cohorts(f["cohort_rows"], f["from_ms"], f["to_ms"]),
    }


def compute_summary(
    backend: ClickHouse, from_ms: int | None = None, to_ms: int | None = None
) -> dict[str, Any]:
    """The summary of sessions started in ``[from_ms, to_ms)`` read back from ClickHouse."""
    return finish(raw_figures(backend, from_ms, to_ms))
