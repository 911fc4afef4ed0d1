"""Records the engine hands to the adapters: session rows, orders, stage transitions.

These are the contract between the pure engine (which builds them) and the ClickHouse
writer, the Kafka output topics and the Prometheus metrics (which consume them). Field
names are the ClickHouse column names. Times are integer epoch milliseconds (UTC), so the
same rows load into ClickHouse 18.16 (no DateTime64) and chdb without conversion loss.

They are msgspec Structs without a garbage-collector header (they hold only strings and
numbers): the worker makes about one session row per live event, and a Struct is built
in a third of a slotted dataclass's time and encoded to JSON (``encode_json``) in a
quarter of orjson's time for the dataclass, with the same JSON.
"""

from __future__ import annotations

from typing import Any

import msgspec

STAGE_AWARENESS = "awareness"
STAGE_CONSIDERATION = "consideration"
STAGE_PURCHASE = "purchase"
STAGE_RETENTION = "retention"
STAGE_ADVOCACY = "advocacy"

#: Funnel order of the three ordered stages; retention and advocacy are flags.
FUNNEL_STAGES: tuple[str, ...] = (STAGE_AWARENESS, STAGE_CONSIDERATION, STAGE_PURCHASE)
FUNNEL_RANK: dict[str, int] = {name: rank for rank, name in enumerate(FUNNEL_STAGES, start=1)}
ALL_STAGES: tuple[str, ...] = (*FUNNEL_STAGES, STAGE_RETENTION, STAGE_ADVOCACY)


class SessionRow(msgspec.Struct, gc=False):
    """One session as written to ClickHouse ``sessions``; rewritten (replaced) as it changes.

    Per-session fields follow SPEC section 5: ``page_views`` counts page_view and
    product_view events, ``interactions`` counts events that are none of page_view,
    product_view, page_ping; ``duration_ms`` is last minus first event time; the dwell
    fields hold the sum and count of time-on-page intervals (a page view to the session's
    next event with a strictly later timestamp, where one exists).
    """

    session_id: str
    visitor_key: str
    anonymous_id: str
    user_id: str  # the store's customer id once known in this session, else ""
    customer_key: str  # user_id when known, else visitor_key
    start_ms: int
    end_ms: int
    duration_ms: int
    events: int
    page_views: int
    interactions: int
    dwell_sum_ms: int
    dwell_count: int
    landing_page: str  # path of the first page_view/product_view, "" if none
    exit_page: str  # path of the last page_view/product_view, "" if none
    referrer: str  # referrer of the first event
    channel: str  # GA4-style default channel group of the first event
    source: str
    medium: str
    campaign: str
    device: str
    furthest_stage: str  # awareness | consideration | purchase
    furthest_stage_rank: int  # 1, 2, 3 (FUNNEL_RANK)
    reached_consideration: int  # 0/1: furthest_stage_rank >= 2
    reached_purchase: int  # 0/1: furthest_stage_rank >= 3
    retention: int  # 0/1 flag
    advocacy: int  # 0/1 flag
    returning: int  # 0/1: the visitor had a session before this one
    bounced: int  # 0/1: page_views == 1 and interactions == 0
    engaged: int  # 0/1: duration >= 10 s or page_views >= 2 or a purchase
    converted: int  # 0/1: at least one purchase event
    has_cart: int  # 0/1: at least one add_to_cart event
    cart_adds: int  # number of add_to_cart events
    cart_value: float  # sum of price*quantity over add_to_cart events (quantity defaults to 1)
    purchases: int  # number of purchase events
    orders: int  # distinct order keys among this session's purchase events
    revenue: float  # sum of revenue over this session's distinct orders
    csat_responses: int  # survey_response events with scale 5
    csat_satisfied: int  # ... of which score >= 4
    nps_responses: int  # survey_response events with scale 10
    nps_promoters: int  # ... of which score 9-10
    nps_detractors: int  # ... of which score 0-6
    closed: int  # 0 while open, 1 once the watermark passed end_ms + timeout
    # The session's identity link: its earliest event (ts, then event_id) carrying both an
    # anonymous_id and a user_id; the visitor's customer key is computed from these at query
    # time (streams.clickhouse.summary). "", 0, "" without one.
    link_user_id: str = ""
    link_ms: int = 0
    link_event_id: str = ""
    first_purchase_ms: int = 0  # time of the first purchase event, 0 without one
    last_purchase_ms: int = 0  # time of the last purchase event, 0 without one

    def as_dict(self) -> dict[str, Any]:
        """The row as a column-name mapping."""
        return msgspec.structs.asdict(self)

    @classmethod
    def columns(cls) -> tuple[str, ...]:
        """Column names in declaration order."""
        return cls.__struct_fields__


class OrderRow(msgspec.Struct, frozen=True, gc=False):
    """One order (distinct ``order_id`` over purchase events) for ClickHouse ``orders``.

    A purchase without ``order_id`` is an order of its own, keyed ``event:<event_id>``.
    When several purchase events carry the same order id, the earliest (event time, then
    event_id) defines the order's time and revenue.
    """

    order_key: str
    order_id: str
    session_id: str
    visitor_key: str
    customer_key: str
    ts_ms: int
    revenue: float
    currency: str

    def as_dict(self) -> dict[str, Any]:
        """The row as a column-name mapping."""
        return msgspec.structs.asdict(self)

    @classmethod
    def columns(cls) -> tuple[str, ...]:
        """Column names in declaration order."""
        return cls.__struct_fields__


class StageTransition(msgspec.Struct, frozen=True, gc=False):
    """A session reaching a stage (or abandoning a cart) at the moment it happens.

    ``kind`` is ``"stage"`` for a stage reached (``stage`` names it) or ``"cart_abandoned"``
    when a session with a cart closes without a purchase (``cart`` lists its items).
    """

    kind: str
    stage: str
    from_stage: str
    session_id: str
    visitor_key: str
    user_id: str
    ts_ms: int
    channel: str
    cart: tuple[tuple[str, int, float], ...] = ()  # (product_id, quantity, price)

    def as_dict(self) -> dict[str, Any]:
        """The record as a JSON-ready mapping."""
        return msgspec.structs.asdict(self)


#: JSON of a row or a transition (an object of its fields, in declaration order).
encode_json = msgspec.json.Encoder().encode
