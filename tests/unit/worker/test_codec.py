"""By-visitor messages that cannot be decoded are Corrupt, never an exception; their DLQ record."""

from __future__ import annotations

import base64

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.engine.events import EVENT_FIELDS, Event
from streams.engine.progress import ProgressReport
from streams.engine.state import Corrupt
from streams.worker.codec import (
    MAX_INPUT_PARTITIONS,
    Forwarded,
    chunk_forwarded,
    decode_forwarded,
    encode_forwarded,
    encode_report,
    encode_topic,
    forwarded_message,
    internal_rejection_record,
)

T0 = 1_700_000_000_000


def _message(report: ProgressReport | None = None) -> bytes:
    events = [Event(f"e{n}", "page_view", T0 + n, f"v{n % 3}") for n in range(5)]
    (chunk,) = chunk_forwarded([encode_forwarded(ev, 0, n, 0) for n, ev in enumerate(events)],
                               1 << 20)  # fmt: skip
    encoded = None if report is None else encode_report(report)
    return forwarded_message(encode_topic("clickstream"), chunk, encoded)


@pytest.mark.parametrize(
    "value",
    [None, b"", b"garbage", b"\xff\xfe\x00", b"null", b"42", b'"text"', b"{}", b"[1, 2]",
     b'{"e": 1}', b'{"e": [[0, 1, 2]]}', b'{"e": [[0, 1, 2, ["id", "type", "ts", "v"]]]}',
     b'{"e": [], "r": {"n": "1", "p": []}}', b'{"e": [], "t": 5}'],
)  # fmt: skip
def test_garbage_and_wrong_shapes_are_corrupt(value: bytes | None) -> None:
    """Not JSON, or JSON of another shape or type, decodes to Corrupt with a reason."""
    result = decode_forwarded(value)
    assert isinstance(result, Corrupt), result
    assert result.detail


def test_every_truncation_of_a_message_is_corrupt() -> None:
    """A message cut short at any byte is Corrupt (never a partial list of events)."""
    value = _message(ProgressReport(2, ((0, T0), (1, T0))))
    assert isinstance(decode_forwarded(value), Forwarded)
    for end in range(len(value)):
        assert isinstance(decode_forwarded(value[:end]), Corrupt), value[:end]


def test_events_without_a_visitor_and_absurd_reports_are_corrupt() -> None:
    """Well-typed but impossible: no visitor, a time ClickHouse cannot store, absurd reports."""
    for fields in (["e1", "page_view", T0, ""], ["e1", "page_view", -1, "v"],
                   ["e1", "page_view", 10**16, "v"]):  # fmt: skip
        row = [0, 1, 0, fields]
        assert isinstance(decode_forwarded(orjson.dumps({"e": [row]})), Corrupt), fields
    huge = _message(ProgressReport(MAX_INPUT_PARTITIONS + 1, ((0, T0),)))
    assert isinstance(decode_forwarded(huge), Corrupt)
    outside = _message(ProgressReport(2, ((5, T0),)))
    assert isinstance(decode_forwarded(outside), Corrupt)
    # The earlier inline form is checked field by field too.
    inline = [0, 1, 0, *(getattr(Event("e", "t", T0, "v"), f) for f in EVENT_FIELDS)]
    assert isinstance(decode_forwarded(orjson.dumps({"e": [inline]})), Forwarded)
    inline[3 + EVENT_FIELDS.index("ts_ms")] = "yesterday"
    assert isinstance(decode_forwarded(orjson.dumps({"e": [inline]})), Corrupt)


@given(st.binary(max_size=200))
@settings(max_examples=500, deadline=None)
def test_any_bytes_decode_to_a_message_or_corrupt(value: bytes) -> None:
    """decode_forwarded never raises."""
    assert isinstance(decode_forwarded(value), Forwarded | Corrupt)


def test_the_dead_letter_record_of_a_corrupt_internal_record() -> None:
    """Reason, raw payload (base64 when not UTF-8), where it was read, its key, the detail."""
    record = orjson.loads(
        internal_rejection_record(
            "app-events-by-visitor", 2, 41, b"2", b"\xffgarbage", Corrupt("not JSON"), 7
        )
    )
    assert record == {
        "reason": "corrupt_internal_message",
        "payload": base64.b64encode(b"\xffgarbage").decode(),
        "payload_encoding": "base64",
        "payload_bytes": 8,
        "batch_index": None,
        "source": {"topic": "app-events-by-visitor", "partition": 2, "offset": 41, "key": "2"},
        "rejected_at_ms": 7,
        "detail": "not JSON",
    }
    text = orjson.loads(internal_rejection_record("c", 0, 1, None, None, Corrupt("x"), 7))
    assert (text["payload"], text["payload_encoding"], text["source"]["key"]) == ("", "utf-8", None)


def test_a_withheld_internal_record_keeps_its_size_and_place() -> None:
    """JOURNEY_PII hash/drop: no value in the dead letter; reason, size, offset, key stay."""
    record = orjson.loads(
        internal_rejection_record(
            "app-visitors-changelog", 1, 9, b"k", b"raw-id-inside", Corrupt("x"), 7, withhold=True
        )
    )
    assert record["payload"] is None
    assert record["payload_encoding"] is None
    assert record["payload_bytes"] == len(b"raw-id-inside")
    assert record["source"] == {"topic": "app-visitors-changelog", "partition": 1, "offset": 9,
                                "key": "k"}  # fmt: skip
    assert record["reason"] == "corrupt_internal_message"
