"""Wire formats of the worker's own topics: forwarded events and dead-letter records."""

from __future__ import annotations

import base64
from dataclasses import fields
from operator import attrgetter
from typing import Any

import orjson

from streams.engine.events import Event
from streams.engine.intake import Rejection

#: Field order of a forwarded event: a JSON array in Event's declaration order.
EVENT_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Event))
_as_tuple = attrgetter(*EVENT_FIELDS)


def encode_forwarded(event: Event) -> bytes:
    """One accepted event as a compact JSON array (no re-validation needed downstream)."""
    return orjson.dumps(_as_tuple(event))


def decode_forwarded(value: bytes) -> list[Event]:
    """A forwarded batch (JSON array of encoded events) back into events."""
    return [Event(*row) for row in orjson.loads(value)]


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
