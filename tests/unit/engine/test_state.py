"""Visitor state serialisation: lossless for the engine, and small."""

from __future__ import annotations

import uuid

import lz4.block
import msgspec
import pytest
from engine_support import SECOND, T0, apply_outputs, ev
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.engine.events import Event
from streams.engine.sessionizer import SessionConfig, Sessionizer
from streams.engine.stages import StageRules
from streams.engine.state import MAX_STATE_BYTES, Corrupt, VisitorState, decode_state

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


# ---------------------------------------------------------------- corrupt records


def _state_bytes(n: int) -> tuple[VisitorState, bytes]:
    store: dict[str, VisitorState] = {}
    Sessionizer(CFG, RULES, store).process(typical_session(f"v-{n}", n))
    (state,) = store.values()
    return state, state.to_bytes()


@pytest.mark.parametrize(
    "data",
    [b"", b"\x00", b"garbage", b"\x03", b"\x03\xff\xfe", b"\x04", b"\x04\x01\x00\x00\x00",
     b"\x04\x10\x00\x00\x00garbage-not-lz4", b"[", b"[1, 2]", b"{}", b"x\x9cgarbage",
     bytes(range(256))],
)  # fmt: skip
def test_garbage_is_corrupt_never_an_exception(data: bytes) -> None:
    """Bytes that are no state decode to Corrupt with a reason; from_bytes raises ValueError."""
    result = decode_state(data, "v")
    assert isinstance(result, Corrupt), result
    assert result.detail
    with pytest.raises(ValueError, match="visitor record of 'v'"):
        VisitorState.from_bytes(data, "v")


@pytest.mark.parametrize("events", [2, 15])  # stored raw (msgpack) and lz4-compressed
def test_every_truncation_of_a_record_is_corrupt(events: int) -> None:
    """A record cut short at any byte is Corrupt (truncated msgpack or lz4 block)."""
    state, data = _state_bytes(events)
    assert decode_state(data, state.visitor_key) == state
    for end in range(len(data)):
        assert isinstance(decode_state(data[:end], state.visitor_key), Corrupt), end


def test_wrong_types_and_sessions_outside_the_events_are_corrupt() -> None:
    """A well-formed msgpack document with wrong types or session indexes is Corrupt."""
    state, _ = _state_bytes(3)
    encode = msgspec.msgpack.encode
    events = state.events
    good = [3, 0, False, "", [], [[0, 0]], events]
    assert isinstance(decode_state(b"\x03" + encode(good), "v"), VisitorState)
    for bad in (
        [3, "0", False, "", [], [[0, 0]], events],  # closed sessions as text
        [3, 0, False, "", [], [[0, 0]], [["x"]]],  # an event without its fields
        [3, 0, False, "", [], [[len(events), 0]], events],  # a session after the events
        [3, 0, False, "", [], [[-1, 0]], events],  # before them
        [3, 0, False, "", [], [[1, 0], [0, 0]], events],  # out of order
        [3, 0, False, "", [], [[0, 0]], []],  # a session of no events
        [3, 0, False, ""],  # too short
        [3, 0, False, "", [], [[0, 0]], [[-5, "e", "page_view"]]],  # a time before 1970
    ):
        assert isinstance(decode_state(b"\x03" + encode(bad), "v"), Corrupt), bad


def test_an_lz4_bomb_is_corrupt_before_it_is_decompressed() -> None:
    """An lz4 block whose header claims more than MAX_STATE_BYTES is refused up front."""
    bomb = lz4.block.compress(b"\x00" * (MAX_STATE_BYTES + 1))
    assert len(bomb) < MAX_STATE_BYTES // 100
    result = decode_state(b"\x04" + bomb, "v")
    assert isinstance(result, Corrupt)
    assert "claims" in result.detail
    # A header claiming 4 GiB - 1 with a few bytes behind it: no allocation is attempted.
    assert isinstance(decode_state(b"\x04\xff\xff\xff\xff" + b"\x00" * 8, "v"), Corrupt)
    # A header claiming more than the block holds is the library's error, still Corrupt.
    short = lz4.block.compress(b"a" * 1000)
    lying = (2000).to_bytes(4, "little") + short[4:]
    assert isinstance(decode_state(b"\x04" + lying, "v"), Corrupt)


def test_a_zlib_bomb_and_a_truncated_zlib_stream_are_corrupt() -> None:
    """Format-1 zlib records inflate to at most MAX_STATE_BYTES; more, or a cut, is Corrupt."""
    import zlib

    bomb = zlib.compress(b"[" + b" " * MAX_STATE_BYTES + b"]", 9)
    assert len(bomb) < MAX_STATE_BYTES // 100
    result = decode_state(bomb, "v")
    assert isinstance(result, Corrupt)
    assert "beyond" in result.detail
    state, _ = _state_bytes(4)
    record = zlib.compress(format_1(state), 6)
    assert decode_state(record, state.visitor_key) == state
    cut = decode_state(record[:-6], state.visitor_key)
    assert isinstance(cut, Corrupt)


def test_format_1_records_of_the_wrong_shape_are_corrupt() -> None:
    """JSON records with a wrong field type or arity are Corrupt, not crashes later."""
    import orjson

    state, _ = _state_bytes(4)
    good = orjson.loads(format_1(state))
    assert decode_state(orjson.dumps(good), state.visitor_key) == state
    for path, value in (((2,), "base"), ((8, 0, 0), "ts"), ((8, 0, 2), 5), ((7, 0), [1])):
        bad = orjson.loads(format_1(state))
        target = bad
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = value
        assert isinstance(decode_state(orjson.dumps(bad), state.visitor_key), Corrupt), path


@given(st.binary(max_size=300), st.sampled_from([b"", b"\x03", b"\x04", b"[", b"x\x9c"]))
@settings(max_examples=500, deadline=None)
def test_any_bytes_decode_to_a_state_or_corrupt(data: bytes, head: bytes) -> None:
    """decode_state never raises, whatever follows any of the markers."""
    result = decode_state(head + data, "v")
    assert isinstance(result, VisitorState | Corrupt)
