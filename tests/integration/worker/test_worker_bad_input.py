"""Bad input is never fatal and never silent: dead letters, late events and duplicates."""

from __future__ import annotations

import base64
import json
import re
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from workerkit import (
    Names,
    WorkerProcess,
    assert_same_as_replay,
    by_label,
    prepare_run,
    produce,
    read_topic,
    total,
    wait_complete,
)

EVENTS = 6_000
DUPLICATES = 25
DAY_MS = 86_400_000
#: RFC 3339 with a mandatory offset (Python's fromisoformat alone also takes naive times).
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")


def expected_reason(line: bytes, now_ms: int) -> str | None:
    """The dead-letter reason of a generated line by our own reading of the contract.

    Covers the faults ``journey generate --malformed-ratio`` makes (one per message):
    invalid JSON, no event_id, a bad or far-future timestamp, a negative revenue.
    """
    try:
        obj = json.loads(line)
    except ValueError:
        return "invalid_json"
    if not obj.get("event_id"):
        return "missing_field:event_id"
    stamp = obj.get("timestamp")
    if isinstance(stamp, int) and not isinstance(stamp, bool) and stamp >= 0:
        ts_ms = stamp
    elif isinstance(stamp, str) and _RFC3339.fullmatch(stamp):
        ts_ms = int(datetime.fromisoformat(stamp.replace("z", "Z")).timestamp() * 1000)
    else:
        return "bad_timestamp"
    if ts_ms > now_ms + DAY_MS:
        return "future_timestamp"
    if (obj.get("properties") or {}).get("revenue", 0) < 0:
        return "negative_revenue"
    return None


def replay_reasons(report: str) -> Counter[str]:
    """The ``rejected by reason: a 3, b 2`` line of a replay report as a Counter."""
    match = re.search(r"rejected by reason: (.*)", report)
    if match is None:
        return Counter()
    reasons: Counter[str] = Counter()
    for part in match.group(1).split(", "):
        reason, count = part.rsplit(" ", 1)
        reasons[reason] = int(count)
    return reasons


def dead_letter_payload(record: dict[str, Any]) -> bytes:
    """The original bytes a dead-letter record carries."""
    if record["payload_encoding"] == "base64":
        return base64.b64decode(record["payload"])
    return str(record["payload"]).encode()


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize("names", [1], indirect=True)
def test_malformed_late_and_duplicate_events_are_routed_and_counted(
    tmp_path: Path, names: Names, workers: Callable[..., WorkerProcess]
) -> None:
    """Malformed -> DLQ with reasons, late -> late topic, duplicates counted; rows equal replay."""
    run = prepare_run(tmp_path, names, EVENTS, 41, "--malformed-ratio", "0.05")
    now_ms = int(time.time() * 1000)
    verdicts = [expected_reason(line, now_ms) for line in run.lines]
    malformed = [line for line, reason in zip(run.lines, verdicts, strict=True) if reason]
    expected_reasons = Counter(reason for reason in verdicts if reason)
    assert sum(expected_reasons.values()) >= EVENTS * 0.03, expected_reasons
    # Replay validates with the same intake: its report must agree with our own reading.
    assert replay_reasons(run.replay_report) == expected_reasons, run.replay_report
    dropped = re.search(r"(\d+) duplicates dropped", run.replay_report)
    assert dropped is not None, run.replay_report
    replay_duplicates = int(dropped[1])

    valid = [line for line, reason in zip(run.lines, verdicts, strict=True) if not reason]
    # Resent copies of the last events: their sessions are still open when they come again.
    duplicates = valid[-DUPLICATES:]
    known = json.loads(valid[0])
    late = [
        json.dumps({
            "event_id": "late-known-visitor", "event_type": "page_view",
            "timestamp": "2026-11-19T10:00:00.000Z", "anonymous_id": known["anonymous_id"],
        }).encode(),
        json.dumps({
            "event_id": "late-new-visitor", "event_type": "product_view",
            "timestamp": "2026-11-18T10:00:00.000Z", "anonymous_id": "late-visitor-0001",
        }).encode(),
    ]  # fmt: skip
    # One input partition: the late events arrive after every other event, in this order.
    produce(names.topic, [*run.lines, *duplicates, *late])

    worker = workers(names, "bad-input").start()
    worker.wait_ready()
    wait_complete([worker], names.url, run.expected_events, timeout_s=120)
    worker.assert_alive("after the bad input")

    dead = [json.loads(value) for _, value in read_topic(names.dlq_topic, len(malformed))]
    assert Counter(record["reason"] for record in dead) == expected_reasons
    assert sorted(dead_letter_payload(record) for record in dead) == sorted(malformed)
    assert all(record["source"]["topic"] == names.topic for record in dead)

    late_events = [json.loads(value) for _, value in read_topic(names.late_topic, len(late))]
    assert sorted(event["event_id"] for event in late_events) == [
        "late-known-visitor",
        "late-new-visitor",
    ]

    samples = worker.metrics()
    rejected = by_label(samples, "journey_events_rejected_total", "reason")
    assert rejected == {reason: float(n) for reason, n in expected_reasons.items()}
    assert total(samples, "journey_events_late_total") == len(late)
    assert total(samples, "journey_events_duplicate_total") == DUPLICATES + replay_duplicates
    assert_same_as_replay(names)
