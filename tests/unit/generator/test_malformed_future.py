"""Future-timestamp malformed events are future against the wall clock, whatever --start."""

from __future__ import annotations

import random
import time

import orjson

from streams.engine.intake import parse_payload
from streams.generator.malformed import FUTURE_TIMESTAMP, malformed


def test_future_timestamp_is_rejected_even_for_a_start_years_ago() -> None:
    """A run starting in 2020 still yields events the intake rejects as future_timestamp."""
    rng = random.Random(1)
    start_2020 = 1_577_836_800_000  # 2020-01-01T00:00:00Z
    base = {"event_id": "x", "event_type": "page_view", "anonymous_id": "a"}
    now_ms = int(time.time() * 1000)
    for fmt in (int, lambda ms: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))):
        for _ in range(20):
            broken = malformed(FUTURE_TIMESTAMP, dict(base), start_2020, rng, fmt)
            assert isinstance(broken, dict)
            result = parse_payload(orjson.dumps(broken), now_ms)
            assert [r.reason for r in result.rejections] == ["future_timestamp"]
