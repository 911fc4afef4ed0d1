"""Turning generated messages into Kafka records: single events or batch envelopes.

Batches are per visitor, as a tracker on one device buffers its own events (Segment's
``analytics.js``, Snowplow's mobile trackers): a visitor's buffer is sent when it holds
``size`` events or its oldest event is ``max_age_ms`` old in event time. Keeping one
visitor per envelope keeps a visitor's events on one partition, which the sessionizer
needs. Raw broken bytes (invalid JSON) cannot sit inside an envelope and go alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from streams.generator.traffic import GeneratedMessage


@dataclass(slots=True)
class Record:
    """One Kafka message: key, encoded value, event time of sending, events inside."""

    key: bytes
    value: bytes
    ts_ms: int
    events: int


def single_records(messages: Iterable[GeneratedMessage]) -> Iterator[Record]:
    """One record per message (no envelopes)."""
    dumps = orjson.dumps
    for message in messages:
        value = message.raw if message.raw is not None else dumps(message.event)
        yield Record(message.key.encode(), value, message.ts_ms, 1)


def batch_records(
    messages: Iterable[GeneratedMessage], size: int, max_age_ms: int = 5_000
) -> Iterator[Record]:
    """Envelopes ``{"batch": [...]}`` of up to ``size`` events of one visitor each."""
    if size < 2:
        raise ValueError("batch size must be at least 2 (use single_records for 1)")
    # dict order = order in which each visitor's current buffer was opened, so the
    # oldest buffer is always first and ageing out is a scan from the front.
    buffers: dict[str, tuple[int, list[Any]]] = {}
    dumps = orjson.dumps

    def envelope(key: str, events: list[Any], now_ms: int) -> Record:
        return Record(key.encode(), dumps({"batch": events}), now_ms, len(events))

    now = 0
    for message in messages:
        now = message.ts_ms
        while buffers:
            key = next(iter(buffers))
            opened, events = buffers[key]
            if now - opened < max_age_ms:
                break
            del buffers[key]
            yield envelope(key, events, now)
        if message.raw is not None:
            yield Record(message.key.encode(), message.raw, now, 1)
            continue
        entry = buffers.get(message.key)
        if entry is None:
            buffers[message.key] = (now, [message.event])
            continue
        entry[1].append(message.event)
        if len(entry[1]) >= size:
            del buffers[message.key]
            yield envelope(message.key, entry[1], now)
    for key, (_, events) in buffers.items():
        yield envelope(key, events, now)
