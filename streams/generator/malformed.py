"""Broken messages, each violating the v1 contract in one way the intake must catch.

A malformed message is made from a copy of a real event (so it carries a real visitor
key and looks plausible) with a fresh ``event_id``; the valid event is still sent, so
the good stream stays coherent and only the dead-letter counters move.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import orjson

from streams.generator.session import Event, new_id

INVALID_JSON = "invalid_json"
MISSING_EVENT_ID = "missing_event_id"
BAD_TIMESTAMP = "bad_timestamp"
NEGATIVE_REVENUE = "negative_revenue"
FUTURE_TIMESTAMP = "future_timestamp"

MALFORMED_KINDS: tuple[str, ...] = (
    INVALID_JSON,
    MISSING_EVENT_ID,
    BAD_TIMESTAMP,
    NEGATIVE_REVENUE,
    FUTURE_TIMESTAMP,
)

#: Timestamps a buggy tracker sends: no offset, words, a negative or fractional epoch,
#: an epoch as a string. Each fails the schema's timestamp rule.
_BAD_TIMESTAMPS: tuple[Any, ...] = (
    "yesterday",
    "2024-06-01 10:00:00",
    "2024-06-01T10:00:00",
    -1,
    1717236000.5,
    "1717236000000",
)
_DAY_MS = 86_400_000
_YEAR_2100_MS = 4_102_444_800_000  # 2100-01-01T00:00:00Z


def _copy(event: Event, rng: random.Random) -> Event:
    broken = dict(event)
    broken["event_id"] = new_id(rng)
    return broken


def _invalid_json(event: Event, rng: random.Random, fmt: Callable[[int], Any], ts: int) -> bytes:
    if rng.random() < 0.8:
        # A truncated body (a proxy cut the request): any proper prefix of a JSON
        # object is invalid JSON.
        body = orjson.dumps(_copy(event, rng) | {"timestamp": fmt(ts)})
        return body[: rng.randrange(1, len(body) - 1)]
    return b"<html><body><h1>502 Bad Gateway</h1></body></html>"


def malformed(
    kind: str, event: Event, ts_ms: int, rng: random.Random, fmt: Callable[[int], Any]
) -> Event | bytes:
    """A broken message of ``kind`` made from ``event`` (left untouched) at ``ts_ms``.

    ``fmt`` renders an epoch-millisecond time the way the visitor's tracker does.
    Returns the raw bytes for ``invalid_json``, an event dict for the other kinds.
    """
    if kind == INVALID_JSON:
        return _invalid_json(event, rng, fmt, ts_ms)
    broken = _copy(event, rng)
    broken["timestamp"] = fmt(ts_ms)
    if kind == MISSING_EVENT_ID:
        del broken["event_id"]
    elif kind == BAD_TIMESTAMP:
        broken["timestamp"] = rng.choice(_BAD_TIMESTAMPS)
    elif kind == NEGATIVE_REVENUE:
        # A refund sent as a purchase with a negative amount.
        broken["event_type"] = "purchase"
        broken["properties"] = {
            "order_id": f"ord_{new_id(rng)[:18]}",
            "revenue": -round(rng.uniform(5, 300), 2),
            "currency": "USD",
        }
    elif kind == FUTURE_TIMESTAMP:
        # A device clock set wrong, far ahead. "Future" is judged against the consumer's wall
        # clock, not the event's own time, so a run with a --start in the past must still
        # produce timestamps past any realistic now: the year 2100 and later.
        broken["timestamp"] = fmt(
            max(ts_ms + _DAY_MS, _YEAR_2100_MS) + rng.randrange(0, 30 * _DAY_MS)
        )
    else:
        raise ValueError(f"unknown malformed kind {kind!r}; known: {', '.join(MALFORMED_KINDS)}")
    return broken
