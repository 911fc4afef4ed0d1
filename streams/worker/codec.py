"""Wire formats of the worker's own topics: forwarded events and dead-letter records.

A message of the by-visitor topic is a JSON object:

* ``"t"``: the input topic the events were read from;
* ``"e"``: the forwarded events, each a compact JSON array: its source in the input (input
  partition, offset of the input message, index of the event in the message's batch
  envelope, 0 for a single event) followed by the event as the array of its fields in
  declaration order (``Event``'s msgspec form), which msgspec decodes straight into events;
* ``"r"`` (optional, applied after the events): the sending intake's event-time progress
  report, ``{"n": input partition count, "p": [[input partition, progress ms], ...]}``
  (see ``streams.engine.progress``).

The earlier forms still decode: event fields inline after the source (before events were
msgspec structs), and a plain JSON array of events without sources (before sources and
reports existed).

Anything else, or any field of the wrong type, is ``Corrupt``: the decoder never raises,
and the worker dead-letters such a message with :func:`internal_rejection_record` and goes
on with the next one.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import msgspec
import orjson

from streams.engine.events import Event
from streams.engine.intake import MAX_TS_MS, Rejection
from streams.engine.progress import ProgressReport
from streams.engine.state import Corrupt

#: A forwarded event's source: (input partition, input offset, index in the message).
Source = tuple[int, int, int]
#: Dead-letter reason of a record of an internal topic (by-visitor, changelog) that cannot
#: be decoded.
CORRUPT_INTERNAL_MESSAGE = "corrupt_internal_message"
#: Most input partitions a progress report may name: a watermark is the minimum over all of
#: them, computed per message, so a forged count in the billions would hold the worker.
MAX_INPUT_PARTITIONS = 100_000


class _Report(msgspec.Struct, frozen=True, gc=False):
    n: int
    p: list[tuple[int, int]]


class _Message(msgspec.Struct, frozen=True, gc=False):
    e: list[tuple[int, int, int, Event]]
    t: str | None = None
    r: _Report | None = None


class _EarlierMessage(msgspec.Struct, frozen=True):
    e: list[list[Any]]
    t: str | None = None
    r: _Report | None = None


_decode_message = msgspec.json.Decoder(_Message).decode
_decode_earlier_message = msgspec.json.Decoder(_EarlierMessage).decode
_decode_plain_events = msgspec.json.Decoder(list[Event]).decode
_encode = msgspec.json.Encoder().encode


@dataclass(frozen=True, slots=True)
class Forwarded:
    """One decoded by-visitor message: events with their sources, then a progress report."""

    events: list[Event]
    #: The source of each event, in the same order; empty for a message without sources.
    sources: list[Source]
    report: ProgressReport | None = None
    #: The input topic of the sources (None for a message without sources).
    topic: str | None = None


#: A message without events nor report: what a corrupt message is applied as (skipped).
NOTHING = Forwarded([], [])


def encode_forwarded(event: Event, partition: int, offset: int, index: int) -> bytes:
    """One accepted event and its source as a compact JSON array (no re-validation needed)."""
    return b"[%d,%d,%d,%b]" % (partition, offset, index, _encode(event))


def encode_report(report: ProgressReport) -> bytes:
    """The JSON form of a progress report (the value of a message's ``"r"``)."""
    return orjson.dumps({"n": report.partitions, "p": report.progress})


def encode_topic(topic: str) -> bytes:
    """The JSON form of the input topic's name (the value of a message's ``"t"``)."""
    return orjson.dumps(topic)


def forwarded_message(topic: bytes, chunk: bytes, report: bytes | None = None) -> bytes:
    """A by-visitor message: encoded topic, a chunk from :func:`chunk_forwarded`, a report."""
    head = b'{"t":' + topic + b',"e":' + chunk
    if report is None:
        return head + b"}"
    return head + b',"r":' + report + b"}"


def decode_forwarded(value: bytes | None) -> Forwarded | Corrupt:
    """A by-visitor message back into events, their sources and the progress report.

    ``Corrupt`` (never an exception) for anything that is not a message of this topic:
    no value, not JSON, a field of the wrong type, an event without a visitor key.
    """
    if not value:
        return Corrupt("no value")
    try:
        message = _decode_message(value)
    except msgspec.ValidationError:
        forwarded = _decode_earlier(value)
    except msgspec.DecodeError as exc:
        return Corrupt(f"not JSON: {exc}")
    else:
        rows = message.e
        raw = message.r
        forwarded = Forwarded(
            [row[3] for row in rows],
            [row[:3] for row in rows],
            None if raw is None else ProgressReport(raw.n, tuple(raw.p)),
            message.t,
        )
    if isinstance(forwarded, Corrupt):
        return forwarded
    for ev in forwarded.events:
        # What the intake guarantees and the tables need: a visitor, a time ClickHouse stores.
        if not ev.visitor_key or not 0 <= ev.ts_ms <= MAX_TS_MS:
            return Corrupt(f"event {ev.event_id!r}: visitor {ev.visitor_key!r}, time {ev.ts_ms}")
    report = forwarded.report
    if report is not None and not report_in_bounds(report.partitions, report.progress):
        return Corrupt(f"a progress report of {report.partitions} input partitions")
    return forwarded


def report_in_bounds(partitions: int, progress: Iterable[tuple[int, int]]) -> bool:
    """True when a progress report (or a checkpointed one) names sane input partitions."""
    return 0 <= partitions <= MAX_INPUT_PARTITIONS and all(
        0 <= partition < partitions for partition, _ in progress
    )


def _decode_earlier(value: bytes) -> Forwarded | Corrupt:
    """A message in an earlier form (see the module docstring), left by an older worker."""
    try:
        if value.lstrip()[:1] == b"[":
            return Forwarded(_decode_plain_events(value), [])
        message = _decode_earlier_message(value)
        sources: list[Source] = []
        events: list[Event] = []
        for row in message.e:
            sources.append(msgspec.convert(row[:3], Source))
            events.append(msgspec.convert(row[3:], Event))
    except msgspec.DecodeError as exc:  # ValidationError included
        return Corrupt(f"not a by-visitor message: {exc}")
    raw = message.r
    report = None if raw is None else ProgressReport(raw.n, tuple(raw.p))
    return Forwarded(events, sources, report, message.t)


def chunk_forwarded(encoded: list[bytes], max_bytes: int) -> list[bytes]:
    """JSON arrays of the encoded events, each at most ``max_bytes`` (one event may exceed)."""
    chunks: list[bytes] = []
    start, size = 0, 2
    for i, item in enumerate(encoded):
        if size + len(item) + 1 > max_bytes and i > start:
            chunks.append(b"[" + b",".join(encoded[start:i]) + b"]")
            start, size = i, 2
        size += len(item) + 1
    chunks.append(b"[" + b",".join(encoded[start:]) + b"]")
    return chunks


def rejection_record(rejection: Rejection, message: Any, now_ms: int) -> bytes:
    """The dead-letter record: reason, the raw payload and where it came from.

    The payload is kept as text when it is valid UTF-8 (readable with any console
    consumer) and base64 otherwise, so nothing about the bad input is lost; under
    ``JOURNEY_PII`` it is the rewritten payload, or ``null`` when withheld.
    ``payload_bytes`` is the size of the payload as it came in.
    """
    return orjson.dumps(_record(rejection, message.topic, message.partition, message.offset,
                                now_ms))  # fmt: skip


def internal_rejection_record(
    topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None,
    corrupt: Corrupt, now_ms: int, *, withhold: bool = False,
) -> bytes:  # fmt: skip
    """The dead-letter record of an internal topic's record that cannot be decoded.

    The same record as an input event's (:func:`rejection_record`), with reason
    ``corrupt_internal_message``, plus ``detail`` (what the decoder found wrong) and, in
    ``source``, the record's ``key`` (for a changelog record: the visitor it was for),
    as text with undecodable bytes escaped. ``withhold`` (``JOURNEY_PII`` hash or drop)
    leaves the value out: a record that cannot be decoded cannot be searched for ids.
    """
    rejection = Rejection(CORRUPT_INTERNAL_MESSAGE, value or b"", None, withheld=withhold)
    record = _record(rejection, topic, partition, offset, now_ms)
    record["detail"] = corrupt.detail
    record["source"]["key"] = None if key is None else key.decode("utf-8", "backslashreplace")
    return orjson.dumps(record)


def _record(
    rejection: Rejection, topic: str, partition: int, offset: int, now_ms: int
) -> dict[str, Any]:
    payload: str | None
    encoding: str | None
    if rejection.withheld:
        payload = encoding = None
    else:
        try:
            payload = rejection.payload.decode("utf-8")
            encoding = "utf-8"
        except UnicodeDecodeError:
            payload = base64.b64encode(rejection.payload).decode("ascii")
            encoding = "base64"
    size = len(rejection.payload) if rejection.size is None else rejection.size
    return {
        "reason": rejection.reason,
        "payload": payload,
        "payload_encoding": encoding,
        "payload_bytes": size,
        "batch_index": rejection.index,
        "source": {"topic": topic, "partition": partition, "offset": offset},
        "rejected_at_ms": now_ms,
    }
