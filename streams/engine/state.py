"""Per-visitor sessionizer state and its compact byte form (a Faust table value).

A visitor's state is small: the events of its still-open sessions (typically one session
of 5-15 events) plus a few visitor-level facts that outlive sessions (how many sessions
closed, whether one had a purchase, the last known user_id, recent order keys). Only the
event fields the engine reads are serialised; ``tests/unit/engine/test_state.py`` checks
that a round trip yields identical rows and measures the bytes per open session.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from streams.engine.events import Event

if TYPE_CHECKING:
    from streams.engine.summary import SessionAcc

_FORMAT = 1
#: Order keys of closed sessions remembered per visitor, so a repeated purchase event of an
#: already-written order (a retry arriving in a later session) is not written again.
MAX_REMEMBERED_ORDERS = 32
#: Serialised states from this size on are zlib-compressed (see ``VisitorState.to_bytes``).
COMPRESS_FROM = 1024


@dataclass(slots=True)
class OpenSession:
    """Bookkeeping for one open session: its first event, last event time, stages announced.

    ``acc`` is the session's running summary, kept in memory only (rebuilt from the events
    when missing, as after a restart) so that an event appended to the session costs one
    step of the summary.
    """

    first_ts: int
    first_id: str
    last_ts: int
    announced: int  # bit set of STAGE_BITS already emitted as transitions
    acc: SessionAcc | None = field(default=None, compare=False, repr=False)


@dataclass(slots=True)
class VisitorState:
    """Everything the sessionizer keeps about one visitor key between calls.

    ``events`` holds the open sessions' events sorted by (ts_ms, event_id); ``sessions``
    mirrors the open sessions in time order. The other fields summarise closed sessions.
    """

    visitor_key: str
    events: list[Event] = field(default_factory=list)
    sessions: list[OpenSession] = field(default_factory=list)
    closed_sessions: int = 0
    purchased: bool = False  # a closed session had a conversion
    user_id: str = ""  # last user_id seen in the closed sessions (identity stitching)
    order_keys: list[str] = field(default_factory=list)

    def to_bytes(self) -> bytes:
        """Compact serialisation: orjson of trimmed event tuples, zlib-compressed when large.

        Checkpoints are written for every changed visitor, and with live traffic nearly
        every event changes a different visitor, so this runs about once per event. zlib
        costs 10-30 us even on a few hundred bytes (``zlib.compress`` sets up a 32 KiB window
        and 256 KiB of hash tables per call; level 1 with a 4 KiB window and small tables is
        the cheapest setting with the same ratio), several times the JSON itself. So a
        document under ``COMPRESS_FROM`` bytes (a visitor with a few events; ~300 bytes
        raw, ~180 compressed) is stored as it is, and larger ones compressed.
        ``from_bytes`` tells them apart by the first byte: ``[`` never starts a zlib stream.
        """
        base = self.events[0].ts_ms if self.events else 0
        events = [_pack(ev, base) for ev in self.events]
        sessions = [[s.first_ts - base, s.first_id, s.last_ts - base, s.announced]
                    for s in self.sessions]  # fmt: skip
        doc = [_FORMAT, self.visitor_key, base, self.closed_sessions, int(self.purchased),
               self.user_id, self.order_keys, sessions, events]  # fmt: skip
        raw = orjson.dumps(doc)
        if len(raw) < COMPRESS_FROM:
            return raw
        compressor = zlib.compressobj(1, zlib.DEFLATED, 12, 4)
        return compressor.compress(raw) + compressor.flush()

    @classmethod
    def from_bytes(cls, data: bytes) -> VisitorState:
        """Inverse of ``to_bytes``."""
        doc = orjson.loads(data if data[:1] == b"[" else zlib.decompress(data))
        if doc[0] != _FORMAT:
            raise ValueError(f"unknown visitor state format {doc[0]!r}")
        _, key, base, closed, purchased, user_id, order_keys, sessions, events = doc
        return cls(
            visitor_key=key,
            events=[_unpack(row, key, base) for row in events],
            sessions=[OpenSession(f + base, i, last + base, m) for f, i, last, m in sessions],
            closed_sessions=closed,
            purchased=bool(purchased),
            user_id=user_id,
            order_keys=list(order_keys),
        )


# Field order (after ts, id, type) puts the usually-present fields first so that trailing
# defaults can be trimmed; _DEFAULTS lists the default of every field after event_type.
_DEFAULTS: tuple[Any, ...] = (
    "",
    "",
    "",
    0,
    "",
    "",
    "",
    "",
    "",
    None,
    None,
    "",
    "",
    None,
    None,
    None,
)


def _is_default(value: Any, default: Any) -> bool:
    if default is None:
        return value is None
    return type(value) is type(default) and value == default


def _pack(ev: Event, base: int) -> list[Any]:
    values: list[Any] = [ev.ts_ms - base, ev.event_id, ev.event_type, ev.page_path, ev.user_id,
                         ev.device, 1 if ev.anonymous_id else 0, ev.referrer,
                         ev.campaign_source, ev.campaign_medium, ev.campaign_name,
                         ev.product_id, ev.price, ev.quantity, ev.currency, ev.order_id,
                         ev.revenue, ev.score, ev.scale]  # fmt: skip
    while len(values) > 3 and _is_default(values[-1], _DEFAULTS[len(values) - 4]):
        values.pop()
    return values


def _unpack(row: list[Any], key: str, base: int) -> Event:
    ts, event_id, event_type, *rest = row
    rest.extend(_DEFAULTS[len(rest) :])
    (path, user_id, device, anon, referrer, src, med, camp, product_id, price, quantity,
     currency, order_id, revenue, score, scale) = rest  # fmt: skip
    return Event(
        event_id=event_id, event_type=event_type, ts_ms=ts + base, visitor_key=key,
        anonymous_id=key if anon else "", user_id=user_id, page_path=path, referrer=referrer,
        campaign_source=src, campaign_medium=med, campaign_name=camp, product_id=product_id,
        price=price, quantity=quantity, currency=currency, order_id=order_id, revenue=revenue,
        score=score, scale=scale, device_type=device,
    )  # fmt: skip
