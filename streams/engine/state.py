"""Per-visitor sessionizer state and its compact byte form (a Faust table value).

A visitor's state is small: the events of its still-open sessions (typically one session
of 5-15 events) plus a few visitor-level facts that outlive sessions (how many sessions
closed, whether one had a purchase, the last known user_id, recent order keys). Events are
kept as ``StoredEvent``: only the fields the engine reads, with the strings that repeat
across events (types, paths, referrers, campaigns, devices, currencies, products) shared,
in memory and in the byte form (msgpack, lz4) alike; ``tests/unit/engine/test_state.py``
checks that a round trip yields identical rows and measures the bytes per open session.
"""

from __future__ import annotations

import itertools
import sys
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import lz4.block
import msgspec

from streams.engine.events import Event
from streams.engine.intake import MAX_TS_MS

if TYPE_CHECKING:
    from streams.engine.summary import SessionAcc

#: The byte form written now (msgpack, see ``to_bytes``); 1 is the earlier form, still read.
_FORMAT = 3
#: Order keys of closed sessions remembered per visitor, so a repeated purchase event of an
#: already-written order (a retry arriving in a later session) is not written again.
MAX_REMEMBERED_ORDERS = 32
#: Serialised states from this size on are lz4-compressed (see ``VisitorState.to_bytes``).
COMPRESS_FROM = 128
#: Largest decompressed state a record may hold. A record is one Kafka message (1 MiB by
#: the broker's default), and lz4 or zlib of a state's msgpack or JSON shrinks it 2-4 times,
#: so no record the worker writes comes near; a record claiming more (a decompression bomb
#: written to the changelog) is rejected before anything is allocated for it.
MAX_STATE_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Corrupt:
    """A record of the worker's own topics that cannot be decoded, and why (``detail``).

    Decoders of internal records (visitor states, the partition's record, by-visitor
    messages) return this instead of raising: anyone who can write to those topics could
    otherwise stop the worker with one bad record.
    """

    detail: str


class StoredEvent(msgspec.Struct, frozen=True, gc=False, array_like=True, omit_defaults=True):
    """An accepted event as a visitor's state keeps it: the fields the engine reads.

    ``anonymous`` says whether the event carried an ``anonymous_id`` (which is then the
    visitor key); ``device`` is ``Event.device``. In the byte form it is the array of its
    fields without the trailing defaults. A msgspec Struct without a garbage-collector
    header: it holds only strings and numbers.
    """

    ts_ms: int
    event_id: str
    event_type: str
    page_path: str = ""
    user_id: str = ""
    device: str = ""
    anonymous: bool = False
    referrer: str = ""
    campaign_source: str = ""
    campaign_medium: str = ""
    campaign_name: str = ""
    product_id: str = ""
    price: float | None = None
    quantity: int | None = None
    currency: str = ""
    order_id: str = ""
    revenue: float | None = None
    score: float | None = None
    scale: int | None = None


def stored(ev: Event) -> StoredEvent:
    """The part of ``ev`` the sessionizer keeps; repeating strings are shared (interned).

    Interned strings are freed like any other once nothing refers to them, so hostile
    input cannot grow memory through them.
    """
    intern = sys.intern
    return StoredEvent(
        ev.ts_ms, ev.event_id, intern(ev.event_type), intern(ev.page_path), ev.user_id,
        intern(ev.device), bool(ev.anonymous_id), intern(ev.referrer),
        intern(ev.campaign_source), intern(ev.campaign_medium), intern(ev.campaign_name),
        intern(ev.product_id), ev.price, ev.quantity, intern(ev.currency), ev.order_id,
        ev.revenue, ev.score, ev.scale,
    )  # fmt: skip


class OpenSession(msgspec.Struct, gc=False):
    """Bookkeeping for one open session: its first event, last event time, stages announced.

    ``acc`` is the session's running summary, kept in memory only (rebuilt from the events
    when missing, as after a restart) so that an event appended to the session costs one
    step of the summary; equality ignores it. Like ``VisitorState``, a msgspec Struct
    without a garbage-collector header (nothing it refers to refers back to it): the
    worker keeps the states of recently active visitors in memory, and every tracked
    object among them is walked by each young collection.
    """

    first_ts: int
    first_id: str
    last_ts: int
    announced: int  # bit set of STAGE_BITS already emitted as transitions
    acc: SessionAcc | None = None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, OpenSession):
            return NotImplemented
        return (self.first_ts, self.first_id, self.last_ts, self.announced) == (
            other.first_ts, other.first_id, other.last_ts, other.announced
        )  # fmt: skip

    __hash__ = None  # type: ignore[assignment]


class VisitorState(msgspec.Struct, gc=False):
    """Everything the sessionizer keeps about one visitor key between calls.

    ``events`` holds the open sessions' events sorted by (ts_ms, event_id); ``sessions``
    mirrors the open sessions in time order. The other fields summarise closed sessions.
    A msgspec Struct without a garbage-collector header (see ``OpenSession``).
    """

    visitor_key: str
    events: list[StoredEvent] = msgspec.field(default_factory=list)
    sessions: list[OpenSession] = msgspec.field(default_factory=list)
    closed_sessions: int = 0
    purchased: bool = False  # a closed session had a conversion
    user_id: str = ""  # last user_id seen in the closed sessions (identity stitching)
    order_keys: list[str] = msgspec.field(default_factory=list)

    def to_bytes(self) -> bytes:
        """Compact serialisation: a msgpack document, lz4-compressed from ``COMPRESS_FROM``.

        ``[3, closed sessions, purchased, user_id, order keys, sessions, events]`` (the
        visitor key is the record's key, given back to ``from_bytes``), each session
        ``[index of its first event, announced]`` (the open sessions split the events in
        order, so the rest follows from them), each event a
        ``StoredEvent`` array, after a marker byte: ``_MSGPACK`` or ``_LZ4`` (then the lz4
        block of that document). Checkpoints are written for every changed visitor, and
        with live traffic nearly every event changes a different visitor, so this runs
        about once per event, and idle visitors are held in memory as these bytes (see
        ``TieredStore``). msgpack + lz4 of an 8-event visitor: ~650 bytes in ~2 us; the
        JSON + zlib of earlier versions took ~9 us (zlib sets up its window and tables per
        call) for ~540 bytes. Neither marker can start an earlier record (``[`` or a zlib
        header, whose first byte has 8 in its low four bits), so those still load.
        """
        sessions: list[tuple[int, int]] = []
        events = self.events
        if len(self.sessions) == 1 and events[0].event_id == self.sessions[0].first_id:
            sessions = [(0, self.sessions[0].announced)]  # the usual case: one open session
        elif self.sessions:
            firsts = {(ev.ts_ms, ev.event_id): i for i, ev in enumerate(events)}
            sessions = [(firsts[s.first_ts, s.first_id], s.announced) for s in self.sessions]
        raw = _encode((_FORMAT, self.closed_sessions, self.purchased, self.user_id,
                       self.order_keys, sessions, events))  # fmt: skip
        if len(raw) < COMPRESS_FROM:
            return _MSGPACK + raw
        compressed: bytes = lz4.block.compress(raw)
        return _LZ4 + compressed

    @classmethod
    def from_bytes(cls, data: bytes, visitor_key: str) -> VisitorState:
        """Inverse of ``to_bytes`` for the record of ``visitor_key`` (also format 1).

        Raises ``ValueError`` for a record that cannot be decoded (see :func:`decode_state`).
        """
        state = decode_state(data, visitor_key)
        if isinstance(state, Corrupt):
            raise ValueError(f"visitor record of {visitor_key!r}: {state.detail}")
        return state


_MSGPACK = b"\x03"
_LZ4 = b"\x04"
_encode = msgspec.msgpack.Encoder().encode
_decode_state = msgspec.msgpack.Decoder(
    tuple[int, int, bool, str, list[str], list[tuple[int, int]], list[StoredEvent]]
).decode
#: lz4 block size header: the uncompressed size, 4 bytes little-endian.
_LZ4_SIZE = 4


def decode_state(data: bytes, visitor_key: str) -> VisitorState | Corrupt:
    """The state a record's bytes hold (``to_bytes``, or format 1), or why it cannot be had.

    Never raises: garbage, truncated documents, wrong types, sessions that do not index
    the events, and records that would decompress beyond ``MAX_STATE_BYTES`` (lz4 by the
    size its header claims, zlib by decompressing at most that much) are all ``Corrupt``.
    """
    head = data[:1]
    if head == _LZ4:
        claimed = int.from_bytes(data[1 : 1 + _LZ4_SIZE], "little")
        if len(data) <= 1 + _LZ4_SIZE or claimed > MAX_STATE_BYTES:
            return Corrupt(f"lz4 block claims {claimed} bytes (limit {MAX_STATE_BYTES})")
        try:
            raw = lz4.block.decompress(data[1:])
        except lz4.block.LZ4BlockError as exc:
            return Corrupt(f"lz4: {exc}")
    elif head == _MSGPACK:
        raw = data[1:]
    elif head == b"[":
        return _from_format_1(data)
    else:
        inflated = _inflate(data)
        if isinstance(inflated, Corrupt):
            return inflated
        return _from_format_1(inflated)
    try:
        _, closed, purchased, user_id, order_keys, sessions, events = _decode_state(raw)
    except msgspec.DecodeError as exc:
        return Corrupt(f"msgpack: {exc}")
    firsts = [first for first, _ in sessions]
    if sessions and (
        firsts[0] < 0
        or firsts[-1] >= len(events)
        or any(a >= b for a, b in itertools.pairwise(firsts))
    ):
        return Corrupt(f"sessions start at {firsts[:5]} of {len(events)} events")
    if not _stored_times(events):
        return Corrupt("an event time outside what ClickHouse stores")
    ends = [*firsts[1:], len(events)] if sessions else []
    return VisitorState(
        visitor_key=visitor_key,
        events=events,
        sessions=[
            OpenSession(events[first].ts_ms, events[first].event_id, events[end - 1].ts_ms, mask)
            for (first, mask), end in zip(sessions, ends, strict=True)
        ],
        closed_sessions=closed,
        purchased=purchased,
        user_id=user_id,
        order_keys=order_keys,
    )


def _stored_times(events: list[StoredEvent]) -> bool:
    """True when every event time is one the intake accepts (and ClickHouse stores)."""
    return all(0 <= ev.ts_ms <= MAX_TS_MS for ev in events)


def _inflate(data: bytes) -> bytes | Corrupt:
    """A zlib stream decompressed, at most ``MAX_STATE_BYTES`` of it (a bomb is Corrupt)."""
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(data, MAX_STATE_BYTES)
    except zlib.error as exc:
        return Corrupt(f"zlib: {exc}")
    if inflater.unconsumed_tail:
        return Corrupt(f"zlib stream inflates beyond {MAX_STATE_BYTES} bytes")
    if not inflater.eof:
        return Corrupt("zlib stream truncated")
    return raw


class _Format1Event(msgspec.Struct, frozen=True, array_like=True):
    """A format-1 event row: time relative to the record's base, usually-present fields
    first so that trailing defaults could be trimmed (read only)."""

    ts: int
    event_id: str
    event_type: str
    page_path: str = ""
    user_id: str = ""
    device: str = ""
    anonymous: int = 0
    referrer: str = ""
    campaign_source: str = ""
    campaign_medium: str = ""
    campaign_name: str = ""
    product_id: str = ""
    price: float | None = None
    quantity: int | None = None
    currency: str = ""
    order_id: str = ""
    revenue: float | None = None
    score: float | None = None
    scale: int | None = None


#: Format 1: ``[1, key, base, closed, purchased, user_id, order keys, sessions, events]``,
#: each session ``[first ts, first id, last ts, announced]`` (times relative to ``base``).
_decode_format_1 = msgspec.json.Decoder(
    tuple[
        int, str, int, int, bool | int, str, list[str], list[tuple[int, str, int, int]],
        list[_Format1Event],
    ]
).decode  # fmt: skip


def _from_format_1(raw: bytes) -> VisitorState | Corrupt:
    """A record of the earlier form: JSON arrays with times relative to a base."""
    try:
        _, key, base, closed, purchased, user_id, order_keys, sessions, rows = _decode_format_1(raw)
    except msgspec.DecodeError as exc:
        return Corrupt(f"format 1: {exc}")
    intern = sys.intern
    events = []
    for row in rows:
        events.append(StoredEvent(
            row.ts + base, row.event_id, intern(row.event_type), intern(row.page_path),
            row.user_id, intern(row.device), bool(row.anonymous), intern(row.referrer),
            intern(row.campaign_source), intern(row.campaign_medium),
            intern(row.campaign_name), intern(row.product_id), row.price, row.quantity,
            intern(row.currency), row.order_id, row.revenue, row.score, row.scale,
        ))  # fmt: skip
    if not _stored_times(events):
        return Corrupt("format 1: an event time outside what ClickHouse stores")
    return VisitorState(
        visitor_key=key,
        events=events,
        sessions=[OpenSession(f + base, i, last + base, m) for f, i, last, m in sessions],
        closed_sessions=closed,
        purchased=bool(purchased),
        user_id=user_id,
        order_keys=list(order_keys),
    )
