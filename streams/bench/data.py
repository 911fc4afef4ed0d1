"""The bench's input: generated store traffic as (key, value) records and a JSONL file.

Events come from the same pure traffic model as ``journey generate`` (personas, channels,
realistic sessions), all valid, one event per Kafka message, keyed by visitor. Event time
ends at the moment of generation, so the data looks like the last stretch of a live store.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from streams.generator.traffic import TrafficConfig, TrafficModel


@dataclass(slots=True)
class GeneratedData:
    """Keys and encoded values in event-time order, and the JSONL file holding the values."""

    keys: list[bytes]
    values: list[bytes]
    path: Path
    seconds: float

    @property
    def events(self) -> int:
        """Number of events (one per record)."""
        return len(self.values)


def traffic(count: int, event_rate: float, seed: int, end: datetime) -> Iterator[Any]:
    """``count`` generated messages at ``event_rate`` events per second of event time.

    Event time runs from ``end - count / event_rate`` seconds to about ``end``.
    """
    start = end - timedelta(seconds=count / event_rate)
    config = TrafficConfig(events_per_s=event_rate, max_events=count)
    return iter(TrafficModel(config, random.Random(f"journey-bench:{seed}"), start))


def generate(count: int, event_rate: float, seed: int, path: Path) -> GeneratedData:
    """Generate ``count`` events ending now, write them to ``path`` (JSONL), keep them too."""
    started = time.perf_counter()
    keys: list[bytes] = []
    values: list[bytes] = []
    dumps = orjson.dumps
    with path.open("wb") as handle:
        for message in traffic(count, event_rate, seed, datetime.now(UTC)):
            value = dumps(message.event)
            keys.append(message.key.encode())
            values.append(value)
            handle.write(value + b"\n")
    return GeneratedData(keys, values, path, time.perf_counter() - started)


#: Events per second of event time of the paced phases' traffic (a busy store). They are
#: sent at the phase's rate and re-stamped then, so event time is compressed. Generated at
#: the sending rate itself (20,000 events/s), the model would hold that density by adding
#: visitors, and a minute of it is mostly new visitors' first page views (one or two events
#: per session): the worker's cost per live event measured 152 us on such traffic against
#: 49 us on a store's sessions.
PACED_EVENT_RATE = 600.0


def paced_events(count: int, seed: int) -> list[dict[str, Any]]:
    """``count`` event dicts of a store's traffic at ``PACED_EVENT_RATE``, to send re-stamped."""
    now = datetime.now(UTC)
    return [dict(message.event) for message in traffic(count, PACED_EVENT_RATE, seed, now)]


def single_event_visitors(count: int, seed: int, now_ms: int) -> tuple[list[bytes], list[bytes]]:
    """``count`` page views of ``count`` distinct new visitors, all at event time ``now_ms``.

    Shaped like the generator's landing page views (URL, referrer, user agent, locale), so
    the state each open session holds is what a real first page view leaves behind.
    """
    rng = random.Random(f"journey-bench-memory:{seed}")
    template = {
        "event_type": "page_view",
        "timestamp": now_ms,
        "page": {
            "url": "https://shop.example.com/c/shoes?utm_source=google&utm_medium=cpc",
            "path": "/c/shoes",
            "title": "Shoes",
            "referrer": "https://www.google.com/",
        },
        "context": {
            "user_agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
            "(KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36",
            "locale": "en-US",
            "device_type": "desktop",
        },
    }
    prefix = f"{rng.getrandbits(64):016x}"
    keys: list[bytes] = []
    values: list[bytes] = []
    dumps = orjson.dumps
    for i in range(count):
        visitor = f"mem-{prefix}-{i:09d}"
        event = {"event_id": f"ev-{prefix}-{i:09d}", "anonymous_id": visitor, **template}
        keys.append(visitor.encode())
        values.append(dumps(event))
    return keys, values
