"""Summarise one session's events into its ``SessionRow`` (SPEC section 5), incrementally.

``SessionAcc`` is fed a session's events in order and gives its row at any point; the
sessionizer keeps one per open session. This is the per-event hot path of both the
streaming worker and replay, so it reads ``StoredEvent`` attributes directly and uses
precompiled rule lookups.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from functools import lru_cache

import msgspec

from streams.engine.channels import Touchpoint, touchpoint
from streams.engine.rows import FUNNEL_STAGES, SessionRow
from streams.engine.stages import FLAG_ADVOCACY, FLAG_CONVERSION, FLAG_RETENTION, StageRules
from streams.engine.state import StoredEvent

#: Transition bits, in the order a session can announce them.
BIT_AWARENESS = 1
BIT_CONSIDERATION = 2
BIT_PURCHASE = 4
BIT_RETENTION = 8
BIT_ADVOCACY = 16
BIT_CONVERTED = 32
BIT_NAMES: dict[int, str] = {
    BIT_AWARENESS: "awareness",
    BIT_CONSIDERATION: "consideration",
    BIT_PURCHASE: "purchase",
    BIT_RETENTION: "retention",
    BIT_ADVOCACY: "advocacy",
    BIT_CONVERTED: "converted",
}
_RANK_BIT = (0, BIT_AWARENESS, BIT_CONSIDERATION, BIT_PURCHASE)
_NO_ORDERS: dict[str, tuple[int, str, float, str, str]] = {}  # shared; never mutated
_PAGE_VIEWS = frozenset({"page_view", "product_view"})
_NO_LINK = (0, "", "")  # a session without an identity link


def session_id(visitor_key: str, first_ts: int, first_event_id: str) -> str:
    """Deterministic id of the session whose first event is (first_ts, first_event_id)."""
    raw = f"{visitor_key}\x1f{first_ts}\x1f{first_event_id}".encode()
    return hashlib.sha256(raw).hexdigest()[:32]


@lru_cache(maxsize=4096)
def _touchpoint(source: str, medium: str, campaign: str, referrer: str) -> Touchpoint:
    return touchpoint(source, medium, campaign, referrer)


class Prior(msgspec.Struct, frozen=True, gc=False):
    """What the visitor's earlier sessions say about the next one.

    A msgspec Struct without a garbage-collector header (one per open session).
    """

    returning: bool  # the visitor had an earlier session
    purchased: bool  # an earlier session converted
    user_id: str  # last user_id known from earlier sessions


class SessionSummary(msgspec.Struct, gc=False):
    """A session's row plus what the sessionizer needs for transitions, orders and carts.

    Made once per changed session per call, and read at once: ``orders`` and ``cart`` are
    the running summary's own (not copies), valid until it is fed again. ``reached_bits``
    holds every bit in ``reached``, so a caller skips ``reached`` when it announced them all.
    """

    row: SessionRow
    reached: tuple[tuple[int, int, str], ...]  # (bit, ts_ms, stage before) in reach order
    reached_bits: int
    # order_key -> (ts_ms, event_id, revenue, currency, order_id) of its earliest purchase
    orders: dict[str, tuple[int, str, float, str, str]]
    cart: Sequence[tuple[str, int, float]]
    last_user_id: str


class SessionAcc(msgspec.Struct, gc=False):
    """A session's running summary: fed its events in order, it gives the row at any point.

    The sessionizer keeps one per open session, so an event appended to a session costs
    one step of the summary instead of summarising the whole session again. ``feed``
    continues exactly where the previous call stopped (``last_key`` is the sort key of
    the last event fed), so feeding events in one call or many gives the same summary.

    Made as ``SessionAcc(key, first, prior)``; the other fields start empty. A msgspec
    Struct without a garbage-collector header, like the states that hold it (nothing it
    refers to refers back to it): as a slotted class it was tracked, and each young
    collection walked its 34 references for every summary made since the last one (a
    seventh of a live event's cost went to the collector, mostly to these).
    """

    key: str
    first: StoredEvent
    prior: Prior
    session_id: str = ""
    touchpoint: Touchpoint | None = None
    count: int = 0
    page_views: int = 0
    interactions: int = 0
    dwell_sum: int = 0
    dwell_count: int = 0
    pend_n: int = 0
    pend_ts: int = 0
    landing: str = ""
    exit_page: str = ""
    user_id: str = ""
    last_user: str = ""
    device: str = ""
    anonymous_id: str = ""
    rank: int = 1
    flags: int = 0
    # Tuples and None until needed: fewer objects to allocate.
    reached: tuple[tuple[int, int, str], ...] = ()
    reached_bits: int = 0
    cart: list[tuple[str, int, float]] | None = None
    cart_value: float = 0.0
    purchases: int = 0
    #: Revenue of the distinct orders, summed in the order they were first seen.
    revenue: float = 0.0
    orders: dict[str, tuple[int, str, float, str, str]] | None = None
    csat_n: int = 0
    csat_ok: int = 0
    nps_n: int = 0
    nps_pro: int = 0
    nps_det: int = 0
    last_ts: int = 0
    last_id: str = ""
    #: (ts_ms, event_id, user_id) of the first event carrying an anonymous_id and a user_id.
    link: tuple[int, str, str] | None = None
    first_purchase_ms: int = 0
    last_purchase_ms: int = 0

    def __post_init__(self) -> None:
        """The fields that follow from the first event and the prior."""
        first, prior = self.first, self.prior
        self.session_id = session_id(self.key, first.ts_ms, first.event_id)
        self.touchpoint = _touchpoint(first.campaign_source, first.campaign_medium,
                                      first.campaign_name, first.referrer)  # fmt: skip
        self.last_ts = first.ts_ms
        self.last_id = first.event_id
        if prior.purchased:
            self.flags = FLAG_RETENTION
            self.reached = (
                (BIT_AWARENESS, first.ts_ms, ""),
                (BIT_RETENTION, first.ts_ms, FUNNEL_STAGES[0]),
            )
            self.reached_bits = BIT_AWARENESS | BIT_RETENTION
        else:
            self.reached = ((BIT_AWARENESS, first.ts_ms, ""),)
            self.reached_bits = BIT_AWARENESS

    @property
    def last_key(self) -> tuple[int, str]:
        """Sort key (ts_ms, event_id) of the last event fed."""
        return (self.last_ts, self.last_id)

    def feed(self, events: Sequence[StoredEvent], lo: int, hi: int, rules: StageRules) -> None:
        """Add ``events[lo:hi]``, which follow every event fed so far in (ts, id) order."""
        if lo >= hi:
            return
        classify = rules.classify
        page_views, interactions = self.page_views, self.interactions
        dwell_sum, dwell_count = self.dwell_sum, self.dwell_count
        pend_n, pend_ts = self.pend_n, self.pend_ts
        landing, exit_page, user_id = self.landing, self.exit_page, self.user_id
        last_user, device, anonymous_id = self.last_user, self.device, self.anonymous_id
        link, first_purchase, last_purchase = (
            self.link,
            self.first_purchase_ms,
            self.last_purchase_ms,
        )
        rank, flags, reached = self.rank, self.flags, self.reached
        cart, cart_value, purchases, orders = (
            self.cart,
            self.cart_value,
            self.purchases,
            self.orders,
        )
        revenue = self.revenue
        csat_n, csat_ok = self.csat_n, self.csat_ok
        nps_n, nps_pro, nps_det = self.nps_n, self.nps_pro, self.nps_det
        for i in range(lo, hi):
            ev = events[i]
            ts = ev.ts_ms
            etype = ev.event_type
            if pend_n and ts > pend_ts:
                dwell_sum += (ts - pend_ts) * pend_n
                dwell_count += pend_n
                pend_n = 0
            if etype in _PAGE_VIEWS:
                page_views += 1
                pend_n += 1
                pend_ts = ts
                if not landing:
                    landing = ev.page_path
                exit_page = ev.page_path
            elif etype != "page_ping":
                interactions += 1
            if ev.user_id:
                last_user = ev.user_id
                if not user_id:
                    user_id = ev.user_id
                if link is None and ev.anonymous:
                    link = (ts, ev.event_id, ev.user_id)
            if not device:
                device = ev.device
            if not anonymous_id and ev.anonymous:
                anonymous_id = self.key
            ev_rank, ev_flags = classify(ev)
            if ev_rank > rank:
                for r in range(rank + 1, ev_rank + 1):
                    reached += ((_RANK_BIT[r], ts, FUNNEL_STAGES[r - 2]),)
                rank = ev_rank
            if ev_flags:
                if ev_flags & FLAG_RETENTION and not flags & FLAG_RETENTION:
                    reached += ((BIT_RETENTION, ts, FUNNEL_STAGES[rank - 1]),)
                if ev_flags & FLAG_ADVOCACY and not flags & FLAG_ADVOCACY:
                    reached += ((BIT_ADVOCACY, ts, FUNNEL_STAGES[rank - 1]),)
                if ev_flags & FLAG_CONVERSION:
                    if not purchases:
                        reached += ((BIT_CONVERTED, ts, FUNNEL_STAGES[rank - 1]),)
                        first_purchase = ts
                    purchases += 1
                    last_purchase = ts
                    order_key = ev.order_id or f"event:{ev.event_id}"
                    if orders is None:
                        orders = {}
                    if order_key not in orders:
                        order_revenue = ev.revenue or 0.0
                        orders[order_key] = (ts, ev.event_id, order_revenue, ev.currency,
                                             ev.order_id)  # fmt: skip
                        revenue += order_revenue
                flags |= ev_flags
            if etype == "add_to_cart":
                qty = 1 if ev.quantity is None else ev.quantity
                price = ev.price or 0.0
                if cart is None:
                    cart = []
                cart.append((ev.product_id, qty, price))
                cart_value += price * qty
            elif etype == "survey_response" and ev.score is not None:
                if ev.scale == 5:
                    csat_n += 1
                    csat_ok += ev.score >= 4
                elif ev.scale == 10:
                    nps_n += 1
                    nps_pro += ev.score >= 9
                    nps_det += ev.score <= 6
        last = events[hi - 1]
        self.count += hi - lo
        self.last_ts, self.last_id = last.ts_ms, last.event_id
        self.page_views, self.interactions = page_views, interactions
        self.dwell_sum, self.dwell_count = dwell_sum, dwell_count
        self.pend_n, self.pend_ts = pend_n, pend_ts
        self.landing, self.exit_page, self.user_id = landing, exit_page, user_id
        self.last_user, self.device, self.anonymous_id = last_user, device, anonymous_id
        self.link, self.first_purchase_ms, self.last_purchase_ms = (
            link,
            first_purchase,
            last_purchase,
        )
        if reached is not self.reached:
            for bit, _, _ in reached[len(self.reached) :]:
                self.reached_bits |= bit
        self.rank, self.flags, self.reached = rank, flags, reached
        self.revenue = revenue
        self.cart, self.cart_value, self.purchases, self.orders = (
            cart,
            cart_value,
            purchases,
            orders,
        )
        self.csat_n, self.csat_ok = csat_n, csat_ok
        self.nps_n, self.nps_pro, self.nps_det = nps_n, nps_pro, nps_det

    def summary(self, closed: bool) -> SessionSummary:
        """The session's row and what the sessionizer needs, as of the events fed."""
        first, prior = self.first, self.prior
        rank, flags, page_views = self.rank, self.flags, self.page_views
        session_user = self.user_id or prior.user_id
        tp = self.touchpoint
        assert tp is not None  # set in __post_init__
        duration = self.last_ts - first.ts_ms
        converted = self.purchases > 0
        orders = self.orders or _NO_ORDERS
        cart = self.cart or ()
        key = self.key
        link = self.link or _NO_LINK
        row = SessionRow(
            self.session_id,
            key, self.anonymous_id, session_user, session_user or key,
            first.ts_ms, self.last_ts, duration, self.count, page_views, self.interactions,
            self.dwell_sum, self.dwell_count, self.landing, self.exit_page, first.referrer,
            tp.channel, tp.source, tp.medium, tp.campaign, self.device,
            FUNNEL_STAGES[rank - 1], rank, int(rank >= 2), int(rank >= 3),
            int(bool(flags & FLAG_RETENTION)), int(bool(flags & FLAG_ADVOCACY)),
            int(prior.returning), int(page_views == 1 and self.interactions == 0),
            int(duration >= 10_000 or page_views >= 2 or converted), int(converted),
            int(bool(cart)), len(cart), self.cart_value, self.purchases, len(orders),
            self.revenue,
            self.csat_n, self.csat_ok, self.nps_n, self.nps_pro, self.nps_det, int(closed),
            link[2], link[0], link[1], self.first_purchase_ms, self.last_purchase_ms,
        )  # fmt: skip
        return SessionSummary(row, self.reached, self.reached_bits, orders, cart, self.last_user)
