"""Shared builders for the engine tests: events, configs and replays of outputs."""

from __future__ import annotations

from collections.abc import Iterable

from streams.engine.events import Event
from streams.engine.rows import OrderRow, SessionRow
from streams.engine.sessionizer import EngineOutput

T0 = 1_700_000_000_000  # 2023-11-14T22:13:20Z
SECOND = 1000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE


def ev(
    event_id: str,
    ts_ms: int,
    event_type: str = "page_view",
    visitor: str = "v1",
    **fields: object,
) -> Event:
    """An accepted event of visitor ``visitor`` (its anonymous_id) with the given fields."""
    fields.setdefault("anonymous_id", visitor)
    if "page_path" not in fields and event_type in ("page_view", "product_view"):
        fields["page_path"] = f"/{event_id}"
    return Event(event_id, event_type, ts_ms, visitor, **fields)  # type: ignore[arg-type]


def apply_outputs(
    outputs: Iterable[EngineOutput],
) -> tuple[dict[str, SessionRow], dict[str, OrderRow]]:
    """Apply outputs in order as a downstream table would: latest row wins, tombstones delete."""
    sessions: dict[str, SessionRow] = {}
    orders: dict[str, OrderRow] = {}
    for out in outputs:
        for sid in out.removed_session_ids:
            sessions.pop(sid, None)
        for row in out.sessions:
            sessions[row.session_id] = row
        for order in out.orders:
            orders[order.order_key] = order
    return sessions, orders
