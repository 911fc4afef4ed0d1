"""Writing one session's events with a moving event-time clock.

``SessionWriter`` is what persona scripts talk to: it stamps events with ids and times,
keeps the visitor's identity (``user_id`` appears from the login or signup on), draws
dwell times and adds the heartbeat ``page_ping`` events a tracker with activity tracking
sends while a page stays open.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

from streams.generator.catalog import CURRENCY, SITE, Product
from streams.generator.channels import Touchpoint

Event = dict[str, Any]

#: Snowplow-style activity tracking: first ping after 30 s on a page, then every 10 s.
PING_FIRST_S = 30.0
PING_EVERY_S = 10.0
PING_MAX = 6
#: Dwell times are log-normal and capped well below the 30-minute session timeout, so a
#: planned session is exactly one session for the engine.
MAX_DWELL_S = 600.0


def new_id(rng: random.Random) -> str:
    """A UUID-shaped id from the seeded generator (deterministic, unlike uuid4)."""
    h = f"{rng.getrandbits(128):032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


@dataclass(slots=True)
class Visitor:
    """One device (cookie) and the person behind it, across all of their sessions."""

    seq: int
    persona: str
    anonymous_id: str
    context: dict[str, str]
    account_id: str | None  # the customer id if the person has an account
    logged_in: bool  # whether the tracker already knows ``user_id`` when a session starts
    pings: bool  # tracker with activity tracking (page_ping heartbeats)
    sends_campaign: bool  # tracker fills ``campaign``, not only ``utm_*`` in the URL
    epoch_ms: bool  # tracker sends integer epoch-millisecond timestamps
    sessions_left: int
    sessions_done: int = 0
    # The engine's view of the visitor so far (events emitted after the run's start): the
    # time of their last event and of the first event of their current session.
    last_ms: int | None = None
    session_first_ms: int = 0
    purchases: int = 0
    viewed: list[Product] = field(default_factory=list)


@dataclass(slots=True)
class PlannedEvent:
    """An event waiting for its time; ``timestamp`` is filled in when it is emitted."""

    ts_ms: int
    event: Event
    first_in_session: bool


class PastHorizon(Exception):  # a signal to stop writing, not an error
    """Raised by :class:`SessionWriter` for an event after its horizon: stop the script."""


class SessionWriter:
    """Appends one session's events, advancing the session's own event-time clock.

    An event after ``horizon_ms`` (the run's last possible event time) raises
    :class:`PastHorizon`: the rest of the session would never be sent, so a script is cut
    short there instead of being planned to its end. The events before it are kept.
    """

    def __init__(
        self, rng: random.Random, visitor: Visitor, start_ms: int, horizon_ms: float = math.inf
    ) -> None:
        """Start a session of ``visitor`` at ``start_ms`` (epoch milliseconds, UTC)."""
        self.rng = rng
        self.visitor = visitor
        self.horizon_ms = horizon_ms
        self.now_ms = start_ms
        self.events: list[PlannedEvent] = []
        self.last_url: str | None = None
        self.cart_id: str | None = None
        self.cart: dict[str, tuple[Product, int]] = {}

    # --- time -------------------------------------------------------------------------

    def wait(self, median_s: float, sigma: float = 0.8, cap_s: float = MAX_DWELL_S) -> float:
        """Advance the clock by a log-normal pause (at least 0.2 s); return its length."""
        # exp(gauss) rather than lognormvariate: same distribution, several times faster.
        pause = min(cap_s, max(0.2, math.exp(self.rng.gauss(0.0, sigma)) * median_s))
        self.now_ms += int(pause * 1000)
        return pause

    def read_page(self, median_s: float) -> None:
        """Stay on the current page, sending heartbeat pings when the tracker does."""
        page_start = self.now_ms
        dwell = self.wait(median_s, sigma=0.9)
        if not self.visitor.pings or dwell < PING_FIRST_S or self.last_url is None:
            return
        at, sent = PING_FIRST_S, 0
        page = {"url": self.last_url}
        while at < dwell and sent < PING_MAX:
            self._append("page_ping", page_start + int(at * 1000), page, None, None)
            at += PING_EVERY_S
            sent += 1

    # --- events -----------------------------------------------------------------------

    def page_view(
        self,
        path: str,
        title: str,
        touch: Touchpoint | None = None,
        properties: dict[str, Any] | None = None,
        event_type: str = "page_view",
    ) -> None:
        """A page (or product page) loads; the landing page carries referrer and UTM."""
        if touch is not None:
            url = touch.landing_url(SITE, path)
            page: dict[str, str] = {"url": url, "path": path, "title": title}
            if touch.referrer:
                page["referrer"] = touch.referrer
            campaign = touch.campaign() if self.visitor.sends_campaign else None
        else:
            url = f"{SITE}{path}"
            page = {"url": url, "path": path, "title": title}
            if self.last_url:
                page["referrer"] = self.last_url
            campaign = None
        self.last_url = url
        self._append(event_type, self.now_ms, page, campaign, properties)

    def product_view(self, product: Product, touch: Touchpoint | None = None) -> None:
        """A product detail page loads."""
        self.visitor.viewed.append(product)
        self.page_view(
            product.path, product.name, touch, product_properties(product), "product_view"
        )

    def action(
        self,
        event_type: str,
        properties: dict[str, Any] | None = None,
        path: str | None = None,
        campaign: dict[str, str] | None = None,
    ) -> None:
        """A non-page event on the current page (or at ``path``) at the current time."""
        page: dict[str, str] | None = None
        if path is not None:
            page = {"url": f"{SITE}{path}", "path": path}
        elif self.last_url is not None:
            page = {"url": self.last_url}
        self._append(event_type, self.now_ms, page, campaign, properties)

    def identify(self, event_type: str) -> None:
        """Login or signup: from this event on, events carry ``user_id`` (identity link)."""
        if self.visitor.account_id is None:
            self.visitor.account_id = f"cust_{self.rng.randrange(10**9):09d}"
        self.visitor.logged_in = True
        self.action(event_type, None, "/account/login" if event_type == "login" else "/signup")

    def add_to_cart(self, product: Product, quantity: int) -> None:
        """Put a product line in the session's cart (one cart id per session)."""
        if self.cart_id is None:
            self.cart_id = f"cart_{self.rng.getrandbits(48):012x}"
        _, held = self.cart.get(product.product_id, (product, 0))
        self.cart[product.product_id] = (product, held + quantity)
        self.action("add_to_cart", self._line(product, quantity))

    def remove_from_cart(self, product: Product) -> None:
        """Take a whole line out of the cart."""
        _, quantity = self.cart.pop(product.product_id)
        self.action("remove_from_cart", self._line(product, quantity))

    def cart_total_cents(self) -> int:
        """Sum of the cart's lines (unit price times quantity), in cents."""
        return sum(product.price_cents * quantity for product, quantity in self.cart.values())

    def cart_items(self) -> int:
        """Units in the cart."""
        return sum(quantity for _, quantity in self.cart.values())

    def _line(self, product: Product, quantity: int) -> dict[str, Any]:
        props = product_properties(product)
        props["quantity"] = quantity
        props["cart_id"] = self.cart_id
        return props

    def _append(
        self,
        event_type: str,
        ts_ms: int,
        page: dict[str, str] | None,
        campaign: dict[str, str] | None,
        properties: dict[str, Any] | None,
    ) -> None:
        if ts_ms > self.horizon_ms:
            raise PastHorizon
        visitor = self.visitor
        # Key order is the order a reader expects; id and time are set at emission, so
        # events dropped before the start (warm-up) cost no id and ids follow send order.
        event: Event = {
            "event_id": None,
            "event_type": event_type,
            "timestamp": None,
            "anonymous_id": visitor.anonymous_id,
        }
        if visitor.logged_in and visitor.account_id is not None:
            event["user_id"] = visitor.account_id
        if page is not None:
            event["page"] = page
        if campaign is not None:
            event["campaign"] = campaign
        if properties is not None:
            event["properties"] = properties
        event["context"] = visitor.context
        self.events.append(PlannedEvent(ts_ms, event, not self.events))
        # Keep times strictly increasing within a visitor: events at the same
        # millisecond would make "next event with a later timestamp" ambiguous to read.
        self.now_ms = max(self.now_ms, ts_ms) + 1


def product_properties(product: Product) -> dict[str, Any]:
    """The contract's product fields for ``product``."""
    return {
        "product_id": product.product_id,
        "category": product.category,
        "price": product.price,
        "currency": CURRENCY,
    }
