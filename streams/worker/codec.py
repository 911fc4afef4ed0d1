"""Wire formats of the worker's own topics: forwarded events and dead-letter records."""

from __future__ import annotations

import base64
from dataclasses import fields
from operator import attrgetter
from typing import Any

import orjson

from streams.engine.events import Event, new_event
from streams.engine.intake import Rejection

#: Field order of a forwarded event: a JSON array in Event's declaration order.
EVENT_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Event))
_as_tuple = attrgetter(*EVENT_FIELDS)


def encode_forwarded(event: Event) -> bytes:
    """One accepted event as a compact JSON array (no re-validation needed downstream)."""
    return orjson.dumps(_as_tuple(event))


def decode_forwarded(value: bytes) -> list[Event]:
    """A forwarded batch (JSON array of encoded events) back into events."""
    # new_event builds the same frozen Event without the per-field frozen-setattr cost.
    return [new_event(*row) for row in orjson.loads(value)]


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
