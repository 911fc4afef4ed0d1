"""The hand-written customer fixture (``data/customers/events.jsonl``) and its hand figures.

Nothing here runs the engine: the figures below were worked out by hand from the events,
as the comments show, and the tests compare ``journey summary`` against them.

The events (UTC; weeks start on Monday: W1 = 2024-04-29, W2 = 2024-05-06, W3 = 2024-05-13),
cut into sessions at gaps over 30 minutes. Session: visitor, events, why it is there.

- A1: a1, Mon 04-29 10:00 page_view, 10:05 product_view; anonymous, before a1's login.
- A2: a1, Wed 05-01 10:00 page_view, 10:02 login u1, add_to_cart, 10:06 purchase o1 30.00;
  a1's link is u1.
- A3: a1, Thu 05-02 12:00 page_view; anonymous after the login; retention (a1 bought in A2).
- B1: b1, Tue 05-07 09:00 page_view u1, 09:10 purchase o2 20.00; u1's second device.
- C1: c1, Fri 05-03 15:00 page_view, 15:01 login u2, purchases o3 10.00 and o4 5.00; two
  purchases in one session.
- D1: d1, Wed 05-08 11:00 page_view, 11:01 review_submitted; an advocate who never buys.
- E1: e1, Sun 05-05 23:50 page_view u3, 23:55 purchase o5 40.00, Mon 05-06 00:05 purchase
  o6 15.00; one session with purchases in W1 and W2.
- E2: e1, Mon 05-06 10:00 share u3; advocacy, retention.
- F1: f1, Thu 05-09 14:00 page_view, 14:05 purchase o7 25.00; f1 never logs in.
- F2: f1, Tue 05-14 10:00 purchase o8 25.00; W3, retention.
- G1: g1, Thu 05-02 09:00 page_view, 09:05 purchase o9 50.00; an anonymous purchase.
- G2: g1, Fri 05-10 09:00 login u2; g1's link is u2, so G1 is u2's too (retroactively).
- H1: h1, Fri 05-03 08:00 page_view u4 (id h1-1a) and login u5 (id h1-1b) at the same
  time; the tie goes to h1-1a, so h1 is u4.

Customer keys with every link: a1, b1 -> u1; c1, g1 -> u2; e1 -> u3; h1 -> u4; d1, f1 their own.
Stages: A1 consideration (product_view); A2, B1, C1, E1, F1, F2, G1 purchase stage and
converted; A3, D1, E2, G2, H1 awareness. Retention flags: A3, E2, F2, G2 (the visitor bought
in an earlier session). Advocacy flags: D1, E2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

CUSTOMER_FILE = Path(__file__).resolve().parent / "data" / "customers" / "events.jsonl"

#: The keys the fixture pins, with the session count and clv_avg as anchors.
CUSTOMER_KEYS = (
    "sessions", "clv_avg", "customers", "customer_funnel", "repeat_purchase_rate",
    "advocacy_rate", "cohorts",
)  # fmt: skip


def _weeks(*counts: int) -> list[int]:
    return [*counts, *[0] * (12 - len(counts))]


#: ``journey summary`` arguments -> the hand figures of that period.
HAND_FIGURES: dict[tuple[str, ...], dict[str, Any]] = {
    # All time: 13 sessions; customers u1, u2, u3, u4, d1, f1.
    (): {
        "sessions": 13,
        # Orders 30 + 20 + 10 + 5 + 40 + 15 + 25 + 25 + 50 = 220.00 over buyers u1, u2, u3,
        # f1 (g1's o9 is u2's) = 55.00. Unstitched it would be 5 buyers (g1 apart).
        "clv_avg": 55.0,
        "customers": 6,
        "customer_funnel": {
            "awareness": 6,
            "consideration": 4,  # u1 (A1, A2, B1), u2 (C1, G1), u3 (E1), f1 (F1, F2)
            "purchase": 4,  # the same four
            "converted": 4,  # the same four
            "retention": 4,  # u1 (A3), u3 (E2), f1 (F2), u2 (G2)
            "advocacy": 2,  # d1 (D1), u3 (E2)
        },
        # Buyers u1 (A2, B1), u2 (C1, G1), u3 (E1 only), f1 (F1, F2): 3 of 4 repeat.
        "repeat_purchase_rate": 0.75,
        # Of the four buyers only u3 has an advocacy session (d1 never bought): 1 / 4.
        "advocacy_rate": 0.25,
        "cohorts": [
            # u1 (A2 W1; B1 W2), u2 (G1, C1 W1), u3 (E1: W1 and W2).
            {"week": "2024-04-29", "customers": 3, "retained": _weeks(3, 2)},
            # f1 (F1 W2; F2 W3).
            {"week": "2024-05-06", "customers": 1, "retained": _weeks(1, 1)},
        ],
    },
    # Up to 2024-05-10T00:00Z, before g1's login (05-10 09:00): g1 is its own customer.
    # F2 and G2 started later and are outside.
    ("--to", "2024-05-10T00:00:00Z"): {
        "sessions": 11,
        # Orders before the end: all but o8 = 195.00 over u1, u2 (o3, o4), u3, f1, g1 = 39.00.
        "clv_avg": 39.0,
        "customers": 7,  # u1, u2, u3, u4, d1, f1, g1
        "customer_funnel": {
            "awareness": 7,
            "consideration": 5,  # u1, u2 (C1), u3, f1 (F1), g1 (G1)
            "purchase": 5,
            "converted": 5,
            "retention": 2,  # u1 (A3), u3 (E2)
            "advocacy": 2,  # d1, u3
        },
        # Buyers u1 (A2, B1), u2 (C1), u3 (E1), f1 (F1), g1 (G1): only u1 repeats, 1 / 5.
        "repeat_purchase_rate": 0.2,
        "advocacy_rate": 0.2,  # u3 of 5
        "cohorts": [
            # u1 (W1, W2), u2 (W1), u3 (W1, W2), g1 (W1).
            {"week": "2024-04-29", "customers": 4, "retained": _weeks(4, 2)},
            # f1 (F1); F2 started after the end.
            {"week": "2024-05-06", "customers": 1, "retained": _weeks(1)},
        ],
    },
    # The week of 2024-05-06: sessions E2, B1, D1, F1, G2 (E1 started on Sunday).
    ("--from", "2024-05-06T00:00:00Z", "--to", "2024-05-13T00:00:00Z"): {
        "sessions": 5,
        # Orders before the end: 195.00 over u1, u2 (g1 linked by now), u3, f1 = 48.75.
        "clv_avg": 48.75,
        "customers": 5,  # u3 (E2), u1 (B1), d1, f1, u2 (G2)
        "customer_funnel": {
            "awareness": 5,
            "consideration": 2,  # u1 (B1), f1 (F1)
            "purchase": 2,
            "converted": 2,
            "retention": 2,  # u3 (E2), u2 (G2)
            "advocacy": 2,  # u3 (E2), d1 (D1)
        },
        # Sessions before the end: buyers u1 (A2, B1), u2 (C1, G1), u3 (E1), f1 (F1): 2 / 4.
        "repeat_purchase_rate": 0.5,
        "advocacy_rate": 0.25,  # u3 of 4
        # Only the cohort week starting in the period: f1's.
        "cohorts": [{"week": "2024-05-06", "customers": 1, "retained": _weeks(1)}],
    },
}
