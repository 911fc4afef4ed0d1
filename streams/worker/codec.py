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
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import msgspec
import orjson

from streams.engine.events import Event
from streams.engine.intake import Rejection
from streams.engine.progress import ProgressReport

#: A forwarded event's source: (input partition, input offset, index in the message).
Source = tuple[int, int, int]


class _Report(msgspec.Struct, frozen=True, gc=False):
    n: int
    p: list[tuple[int, int]]


class _Message(msgspec.Struct, frozen=True, gc=False):
    e: list[tuple[int, int, int, Event]]
    t: str | None = None
    r: _Report | None = None


_decode_message = msgspec.json.Decoder(_Message).decode
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


def decode_forwarded(value: bytes) -> Forwarded:
    """A by-visitor message back into events, their sources and the progress report."""
    try:
        message = _decode_message(value)
    except msgspec.ValidationError:
        return _decode_earlier(value)
    rows = message.e
    events = [row[3] for row in rows]
    sources: list[Source] = [row[:3] for row in rows]
    raw = message.r
    report = None if raw is None else ProgressReport(raw.n, tuple(raw.p))
    return Forwarded(events, sources, report, message.t)


def _decode_earlier(value: bytes) -> Forwarded:
    """A message in an earlier form (see the module docstring), left by an older worker."""
    obj = orjson.loads(value)
    if isinstance(obj, list):
        return Forwarded([Event(*row) for row in obj], [])
    rows = obj["e"]
    events = [Event(*row[3:]) for row in rows]
    sources: list[Source] = [(row[0], row[1], row[2]) for row in rows]
    raw = obj.get("r")
    report = None
    if raw is not None:
        report = ProgressReport(raw["n"], tuple((p, ms) for p, ms in raw["p"]))
    return Forwarded(events, sources, report, obj.get("t"))


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
    consumer) and base64 otherwise, so nothing about the bad input is lost.
    """
    try:
        payload: str = rejection.payload.decode("utf-8")
        encoding = "utf-8"
    except UnicodeDecodeError:
        payload = base64.b64encode(rejection.payload).decode("ascii")
        encoding = "base64"
    return orjson.dumps(
        {
            "reason": rejection.reason,
            "payload": payload,
            "payload_encoding": encoding,
            "batch_index": rejection.index,
            "source": {
                "topic": message.topic,
                "partition": message.partition,
                "offset": message.offset,
            },
            "rejected_at_ms": now_ms,
        }
    )
