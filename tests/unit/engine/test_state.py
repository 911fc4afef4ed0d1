"""Visitor state serialisation: lossless for the engine, and small."""

from __future__ import annotations

import uuid

from engine_support import SECOND, T0, apply_outputs, ev

from streams.engine.events import Event
from streams.engine.sessionizer import SessionConfig, Sessionizer
from streams.engine.stages import StageRules
from streams.engine.state import VisitorState

RULES = StageRules.default()
CFG = SessionConfig()


def typical_session(visitor: str, n: int) -> list[Event]:
    """A realistic open session: uuid event ids, a campaign landing, product views, a cart."""
    types = ["page_view", "product_view", "product_view", "search", "add_to_cart", "page_ping"]
    events = []
    for i in range(n):
        etype = types[i % len(types)]
        extra: dict[str, object] = {"device_type": "mobile", "page_path": f"/products/item-{i % 4}"}
        if i == 0:
            extra |= {"referrer": "https://www.google.com/", "campaign_source": "google",
                      "campaign_medium": "cpc", "campaign_name": "spring-sale"}  # fmt: skip
        if etype in ("product_view", "add_to_cart"):
            extra |= {"product_id": f"SKU-{1000 + i}", "price": 19.99, "currency": "EUR"}
        if etype == "add_to_cart":
            extra["quantity"] = 1
        event_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{visitor}/{i}"))
        anonymous_id = str(uuid.uuid5(uuid.NAMESPACE_URL, visitor))
        events.append(ev(event_id, T0 + i * 20 * SECOND, etype, anonymous_id, **extra))
    return events


def test_round_trip_gives_identical_rows() -> None:
    """A sessionizer restarted from serialised state produces the same rows as one that was not."""
    # score 0.0 must survive the trimming of default-valued trailing fields
    purchase = ev("x", T0, "purchase", "other", user_id="u1", order_id="o9", revenue=12.5,
                  score=0.0, scale=10)  # fmt: skip
    events = [*typical_session("a", 12), purchase]
    later = [ev("z", T0 + 300 * SECOND, "survey_response", "other", score=0.0, scale=10)]
    plain_store: dict[str, VisitorState] = {}
    plain = Sessionizer(CFG, RULES, plain_store)
    first = plain.process(events)
    restored_store = {k: VisitorState.from_bytes(v.to_bytes(), k) for k, v in plain_store.items()}
    restored = Sessionizer(CFG, RULES, restored_store)
    expected = apply_outputs([first, plain.process(later), plain.close_all()])
    actual = apply_outputs([first, restored.process(later), restored.close_all()])
    assert actual == expected


def test_bytes_per_typical_open_session_under_1_kib() -> None:
    """Serialised state of a visitor with one open 5-15 event session stays under 1 KiB."""
    sizes = {}
    for n in (5, 10, 15):
        store: dict[str, VisitorState] = {}
        Sessionizer(CFG, RULES, store).process(typical_session(f"visitor-{n}", n))
        (state,) = store.values()
        assert len(state.sessions) == 1
        sizes[n] = len(state.to_bytes())
    print(f"bytes per open session by events: {sizes}")
    assert max(sizes.values()) < 1024


def test_small_states_are_stored_raw_and_larger_ones_compressed() -> None:
    """Both byte forms round-trip: plain msgpack when tiny, lz4 from COMPRESS_FROM bytes."""
    import lz4.block
    import msgspec

    from streams.engine.state import COMPRESS_FROM

    tiny = VisitorState("t", closed_sessions=2, purchased=True, user_id="u")
    tiny_bytes = tiny.to_bytes()
    assert tiny_bytes[:1] == b"\x03"
    assert len(tiny_bytes) < COMPRESS_FROM
    assert VisitorState.from_bytes(tiny_bytes, "t") == tiny
    store: dict[str, VisitorState] = {}
    Sessionizer(CFG, RULES, store).process(typical_session("v-15", 15))
    (large,) = store.values()
    large_bytes = large.to_bytes()
    assert large_bytes[:1] == b"\x04"
    document = msgspec.msgpack.decode(lz4.block.decompress(large_bytes[1:]))
    assert len(document[-1]) == 15  # the events
    assert VisitorState.from_bytes(large_bytes, large.visitor_key) == large


def format_1(state: VisitorState) -> bytes:
    """The byte form workers wrote before format 2, written out by hand for the test.

    ``[1, key, base, closed, purchased, user_id, order_keys, sessions, events]`` with times
    relative to the first event's, each event ``[ts, id, type, path, user_id, device,
    anonymous 0/1, referrer, source, medium, campaign, product_id, price, quantity,
    currency, order_id, revenue, score, scale]`` (trailing defaults were trimmed; this
    writes them out, which the reader accepts the same).
    """
    import orjson

    base = state.events[0].ts_ms
    events = [[e.ts_ms - base, e.event_id, e.event_type, e.page_path, e.user_id, e.device,
               int(e.anonymous), e.referrer, e.campaign_source, e.campaign_medium,
               e.campaign_name, e.product_id, e.price, e.quantity, e.currency, e.order_id,
               e.revenue, e.score, e.scale] for e in state.events]  # fmt: skip
    sessions = [[s.first_ts - base, s.first_id, s.last_ts - base, s.announced]
                for s in state.sessions]  # fmt: skip
    return orjson.dumps([1, state.visitor_key, base, state.closed_sessions,
                         int(state.purchased), state.user_id, state.order_keys, sessions,
                         events])  # fmt: skip


def test_records_of_the_earlier_format_still_load() -> None:
    """A changelog record written by an earlier worker (format 1) restores the same state."""
    store: dict[str, VisitorState] = {}
    Sessionizer(CFG, RULES, store).process(typical_session("v-old", 9))
    (state,) = store.values()
    import zlib

    assert VisitorState.from_bytes(format_1(state), state.visitor_key) == state
    # Format 1 records of a few events were compressed with zlib; they load too.
    assert VisitorState.from_bytes(zlib.compress(format_1(state), 6), state.visitor_key) == state
    assert VisitorState.from_bytes(state.to_bytes(), state.visitor_key) == state
