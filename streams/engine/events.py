"""The accepted clickstream event: a flat, typed, immutable record.

Intake (``streams.engine.intake``) builds these from the v1 JSON contract; everything
downstream (sessionizer, stage rules, channel grouping) reads only these fields, so the
nested JSON is walked exactly once per event.
"""

from __future__ import annotations

from typing import Any

import msgspec

#: Event types counted as page views (SPEC section 5).
PAGE_VIEW_TYPES = frozenset({"page_view", "product_view"})
#: Event types that are neither page views nor interactions.
NON_INTERACTION_TYPES = frozenset({"page_view", "product_view", "page_ping"})


class Event(msgspec.Struct, frozen=True, gc=False, array_like=True):
    """One accepted clickstream event, flattened from the v1 contract.

    ``ts_ms`` is UTC epoch milliseconds. ``visitor_key`` is ``anonymous_id``, else
    ``user_id``. Missing strings are ``""`` and missing numbers ``None``. ``referrer`` is
    the external referrer only: a referrer on the page's own host is internal navigation and
    is blanked at intake. Campaign fields come from ``campaign``, else from ``utm_*`` in the
    page URL. ``product_id`` and ``order_id`` are strings even when sent as integers.

    A msgspec Struct: built in C (a frozen dataclass's ``__init__`` cost more than decoding
    the JSON), without a garbage-collector header (it holds only strings and numbers, so
    it can be in no cycle), and encoded by msgspec as a JSON array of its fields in
    declaration order (``array_like``), the form the by-visitor topic carries.
    """

    event_id: str
    event_type: str
    ts_ms: int
    visitor_key: str
    anonymous_id: str = ""
    user_id: str = ""
    page_url: str = ""
    page_path: str = ""
    page_title: str = ""
    referrer: str = ""
    campaign_source: str = ""
    campaign_medium: str = ""
    campaign_name: str = ""
    campaign_term: str = ""
    campaign_content: str = ""
    product_id: str = ""
    category: str = ""
    price: float | None = None
    quantity: int | None = None
    currency: str = ""
    order_id: str = ""
    revenue: float | None = None
    cart_id: str = ""
    score: float | None = None
    scale: int | None = None
    device_type: str = ""
    user_agent: str = ""
    locale: str = ""

    @property
    def sort_key(self) -> tuple[int, str]:
        """Event-time order with ties broken by ``event_id``, so order never depends on arrival."""
        return (self.ts_ms, self.event_id)

    @property
    def device(self) -> str:
        """``device_type`` from the context, else a guess from the user agent, else ``""``."""
        return self.device_type or device_from_user_agent(self.user_agent)

    def to_dict(self) -> dict[str, Any]:
        """Every field as a flat mapping (for debugging, JSONL dumps and the late topic)."""
        return {name: getattr(self, name) for name in EVENT_FIELDS}


#: Field names in declaration order (the order of the array form).
EVENT_FIELDS: tuple[str, ...] = Event.__struct_fields__


def device_from_user_agent(user_agent: str) -> str:
    """Classify a user agent as ``tablet``, ``mobile`` or ``desktop`` (``""`` when absent).

    A deliberately small heuristic: the worker must not depend on a UA database, and the
    producer is expected to send ``context.device_type`` when it knows better.
    """
    if not user_agent:
        return ""
    ua = user_agent.lower()
    if "ipad" in ua or "tablet" in ua or ("android" in ua and "mobile" not in ua):
        return "tablet"
    if "mobi" in ua or "iphone" in ua or "android" in ua:
        return "mobile"
    return "desktop"
