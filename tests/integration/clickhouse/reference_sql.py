"""An independent reference: SPEC section 5 and 5b figures straight from ``raw_events``, in chdb.

Written from the SPEC, not from the engine or ``streams.clickhouse.summary``, so a test can
replay a file through ``journey replay`` and compare the two (e.g. the OTTO fixture).
Sessions are cut with ``lag() OVER`` (gap > 30 min, chdb has window functions); the
"more than 24 h after the session's first event" rule depends on where the previous cut
fell, so it is applied by a short Python pass over the gap-cut sessions.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from streams.clickhouse.backend import ClickHouse
from streams.clickhouse.summary import finish

GAP_MS = 30 * 60 * 1000
MAX_MS = 24 * 60 * 60 * 1000
CONSIDERATION = ("product_view", "search", "add_to_wishlist", "product_compare")
PURCHASE_STAGE = ("add_to_cart", "begin_checkout", "purchase")


def assign_sessions(backend: ClickHouse) -> None:
    """Fill ``ref_event_session(event_id, session_key, visitor_key, ts_ms)`` from raw_events."""
    rows = backend.query(
        "SELECT event_id, visitor_key, ts_ms,"
        " ts_ms - lag(ts_ms, 1, ts_ms) OVER (PARTITION BY visitor_key ORDER BY ts_ms, event_id)"
        " AS gap, row_number() OVER (PARTITION BY visitor_key ORDER BY ts_ms, event_id) AS n"
        " FROM raw_events FINAL ORDER BY visitor_key, ts_ms, event_id"
    )
    assigned: list[tuple[str, str, str, int]] = []
    start = 0
    key = ""
    for event_id, visitor, ts, gap, n in rows:
        if int(n) == 1 or int(gap) > GAP_MS or int(ts) - start > MAX_MS:
            start = int(ts)
            key = f"{visitor}@{start}"
        assigned.append((str(event_id), key, str(visitor), int(ts)))
    backend.execute("DROP TABLE IF EXISTS ref_event_session")
    backend.execute(
        "CREATE TABLE ref_event_session (event_id String, session_key String,"
        " visitor_key String, ts_ms UInt64) ENGINE = Memory"
    )
    backend.insert(
        "ref_event_session", ("event_id", "session_key", "visitor_key", "ts_ms"), assigned
    )


_PER_SESSION = f"""
SELECT
    m.session_key AS sk, any(m.visitor_key) AS vk, min(m.ts_ms) AS start_ms,
    max(m.ts_ms) - min(m.ts_ms) AS dur_ms, count() AS n_events,
    countIf(e.event_type IN ('page_view', 'product_view')) AS pv,
    countIf(e.event_type NOT IN ('page_view', 'product_view', 'page_ping')) AS inter,
    countIf(e.event_type = 'purchase') AS purchases,
    countIf(e.event_type = 'add_to_cart') AS carts,
    countIf(e.event_type IN {CONSIDERATION!r}) AS consider,
    countIf(e.event_type IN {PURCHASE_STAGE!r}) AS decide,
    countIf(e.event_type = 'survey_response' AND e.scale = 5) AS csat_n,
    countIf(e.event_type = 'survey_response' AND e.scale = 5 AND e.score >= 4) AS csat_ok,
    countIf(e.event_type = 'survey_response' AND e.scale = 10) AS nps_n,
    countIf(e.event_type = 'survey_response' AND e.scale = 10 AND e.score >= 9) AS nps_pro,
    countIf(e.event_type = 'survey_response' AND e.scale = 10 AND e.score <= 6) AS nps_det,
    countIf(e.event_type IN ('review_submitted', 'share', 'referral_sent')
        OR (e.event_type = 'survey_response' AND e.scale = 10 AND e.score >= 9)) AS advocates,
    countIf(e.event_type IN ('email_open', 'email_click') AND e.user_id != '') AS mails,
    groupArrayIf(m.ts_ms, e.event_type = 'purchase') AS purchase_times
FROM ref_event_session AS m
INNER JOIN (SELECT * FROM raw_events FINAL) AS e ON m.event_id = e.event_id
GROUP BY m.session_key
"""

# Time on page: from a page view to the first later timestamp in the same session.
_DWELL = """
SELECT session_key, sum(next_ts - ts_ms), count()
FROM (
    SELECT m.session_key AS session_key, m.ts_ms AS ts_ms, e.event_type AS event_type,
        min(m.ts_ms) OVER (PARTITION BY m.session_key ORDER BY m.ts_ms
            RANGE BETWEEN 1 FOLLOWING AND UNBOUNDED FOLLOWING) AS next_ts,
        count() OVER (PARTITION BY m.session_key ORDER BY m.ts_ms
            RANGE BETWEEN 1 FOLLOWING AND UNBOUNDED FOLLOWING) AS later
    FROM ref_event_session AS m
    INNER JOIN (SELECT * FROM raw_events FINAL) AS e ON m.event_id = e.event_id
)
WHERE event_type IN ('page_view', 'product_view') AND later > 0
GROUP BY session_key
"""

_ORDERS = """
SELECT order_key, argMin(revenue, (ts_ms, event_id)), min(ts_ms),
    argMin(visitor_key, (ts_ms, event_id))
FROM (SELECT * FROM raw_events FINAL WHERE event_type = 'purchase')
GROUP BY if(order_id != '', order_id, concat('event:', event_id)) AS order_key
"""

# Every event carrying both ids: the identity links, sorted so the first per visitor wins.
_LINK_EVENTS = """
SELECT anonymous_id, user_id, ts_ms FROM raw_events FINAL
WHERE anonymous_id != '' AND user_id != '' ORDER BY ts_ms, event_id
"""


def _monday(ts_ms: int) -> date:
    day = datetime.fromtimestamp(ts_ms / 1000, tz=UTC).date()
    return day - timedelta(days=day.weekday())


def _customer_figures(
    backend: ClickHouse, sessions: list[dict[str, Any]], lo: int, hi: int
) -> tuple[dict[str, int], list[dict[str, Any]], dict[str, str]]:
    """SPEC 5b over the reference sessions: counts, the cohorts list, the link of each visitor.

    ``sessions`` hold vk, start, rank, buys, advocates, mails and purchase_times.
    """
    links: dict[str, str] = {}
    for anonymous_id, user_id, ts in backend.query(_LINK_EVENTS):
        if int(ts) < hi:
            links.setdefault(str(anonymous_id), str(user_id))
    bought_before: set[str] = set()
    per_customer: dict[str, dict[str, Any]] = {}
    for s in sorted(sessions, key=lambda s: (s["vk"], s["start"])):
        retention = s["vk"] in bought_before or s["mails"] > 0
        if s["buys"]:
            bought_before.add(s["vk"])
        if s["start"] >= hi:
            continue
        c = per_customer.setdefault(
            links.get(s["vk"], s["vk"]),
            {"flags": set(), "buying": 0, "advocate": False, "buy_times": []},
        )
        if s["start"] >= lo:
            c["flags"] |= {"awareness"} | {
                name
                for name, on in (
                    ("consideration", s["rank"] >= 2), ("purchase", s["rank"] >= 3),
                    ("converted", s["buys"] > 0), ("retention", retention),
                    ("advocacy", s["advocates"] > 0),
                )
                if on
            }  # fmt: skip
        c["buying"] += s["buys"] > 0
        c["advocate"] = c["advocate"] or s["advocates"] > 0
        c["buy_times"].extend(s["purchase_times"])
    counts = {
        "customers": sum("awareness" in c["flags"] for c in per_customer.values()),
        "buyers": sum(c["buying"] >= 1 for c in per_customer.values()),
        "repeat_buyers": sum(c["buying"] >= 2 for c in per_customer.values()),
        "advocate_buyers": sum(c["buying"] >= 1 and c["advocate"] for c in per_customer.values()),
    }
    for name in ("consideration", "purchase", "converted", "retention", "advocacy"):
        counts[f"customers_{name}"] = sum(name in c["flags"] for c in per_customer.values())
    cohorts: dict[date, list[int]] = {}
    for c in per_customer.values():
        if not c["buy_times"]:
            continue
        first = _monday(min(c["buy_times"]))
        start_ms = int(datetime(first.year, first.month, first.day, tzinfo=UTC).timestamp()) * 1000
        if not lo <= start_ms < hi:
            continue
        retained = cohorts.setdefault(first, [0] * 12)
        for week in {_monday(t) for t in c["buy_times"]}:
            k = (week - first).days // 7
            if k < 12:
                retained[k] += 1
    cohort_list = [
        {"week": week.isoformat(), "customers": r[0], "retained": r}
        for week, r in sorted(cohorts.items())
    ]
    return counts, cohort_list, links


def reference_summary(
    backend: ClickHouse, from_ms: int | None = None, to_ms: int | None = None
) -> dict[str, Any]:
    """The SPEC section 6 object recomputed from raw_events (chdb only: window functions)."""
    assign_sessions(backend)
    lo = from_ms if from_ms is not None else 0
    hi = to_ms if to_ms is not None else 2**63
    dwell = {str(k): (int(s), int(c)) for k, s, c in backend.query(_DWELL)}
    f: dict[str, int] = dict.fromkeys(
        ("sessions", "page_views", "events", "bounced", "engaged", "converted", "carts",
         "abandoned", "dwell_sum_ms", "dwell_count", "duration_ms", "funnel_consideration",
         "funnel_purchase", "drop_awareness", "drop_consideration", "drop_purchase",
         "csat_responses", "csat_satisfied", "nps_responses", "nps_promoters", "nps_detractors"),
        0,
    )  # fmt: skip
    visitors = set()
    sessions: list[dict[str, Any]] = []
    for row in backend.query(_PER_SESSION):
        sk, vk, start, dur, n, pv, inter, buys, carts, consider, decide = row[:11]
        csat_n, csat_ok, nps_n, nps_pro, nps_det = (int(v) for v in row[11:16])
        advocates, mails, purchase_times = int(row[16]), int(row[17]), row[18]
        rank = 3 if decide else 2 if consider else 1
        sessions.append({
            "vk": str(vk), "start": int(start), "rank": rank, "buys": int(buys),
            "advocates": advocates, "mails": mails,
            "purchase_times": [int(t) for t in purchase_times],
        })  # fmt: skip
        if not lo <= int(start) < hi:
            continue
        visitors.add(vk)
        f["sessions"] += 1
        f["page_views"] += int(pv)
        f["events"] += int(n)
        f["bounced"] += int(pv) == 1 and int(inter) == 0
        f["engaged"] += int(dur) >= 10_000 or int(pv) >= 2 or int(buys) > 0
        f["converted"] += int(buys) > 0
        f["carts"] += int(carts) > 0
        f["abandoned"] += int(carts) > 0 and int(buys) == 0
        f["dwell_sum_ms"] += dwell.get(str(sk), (0, 0))[0]
        f["dwell_count"] += dwell.get(str(sk), (0, 0))[1]
        f["duration_ms"] += int(dur)
        f["funnel_consideration"] += rank >= 2
        f["funnel_purchase"] += rank >= 3
        f["drop_awareness"] += rank == 1
        f["drop_consideration"] += rank == 2
        f["drop_purchase"] += rank == 3 and int(buys) == 0
        f["csat_responses"] += csat_n
        f["csat_satisfied"] += csat_ok
        f["nps_responses"] += nps_n
        f["nps_promoters"] += nps_pro
        f["nps_detractors"] += nps_det
    f["visitors"] = len(visitors)
    orders = backend.query(_ORDERS)
    in_period = [o for o in orders if lo <= int(o[2]) < hi]
    before_end = [o for o in orders if int(o[2]) < hi]
    f["orders"] = len(in_period)
    f["revenue_cents"] = sum(round(float(o[1]) * 100) for o in in_period)
    f["clv_revenue_cents"] = sum(round(float(o[1]) * 100) for o in before_end)
    counts, cohorts, links = _customer_figures(backend, sessions, lo, hi)
    f.update(counts)
    f["clv_customers"] = len({links.get(str(o[3]), str(o[3])) for o in before_end})
    f.update(cohort_rows=[], from_ms=from_ms, to_ms=to_ms)
    summary = finish(f)
    summary["cohorts"] = cohorts  # computed above with calendar dates, not finish's week numbers
    return summary
