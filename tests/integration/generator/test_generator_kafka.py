"""``journey generate`` against the real Kafka broker: every message arrives, keyed by visitor."""

from __future__ import annotations

import time
import uuid
import warnings
from collections.abc import Iterator
from datetime import datetime
from itertools import pairwise

import orjson
import pytest
from support import BROKERS, topic_reader

from streams.cli import main

with warnings.catch_warnings():
    # kafka-python 3.0 uses a deprecated importlib.resources call at import time.
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import KafkaError

pytestmark = pytest.mark.integration


@pytest.fixture
def topic() -> Iterator[str]:
    """A fresh three-partition topic, deleted after the test."""
    name = f"test-generate-{uuid.uuid4().hex[:12]}"
    try:
        admin = KafkaAdminClient(bootstrap_servers=BROKERS, request_timeout_ms=10_000)
    except KafkaError as exc:
        pytest.fail(f"Kafka is not reachable at {BROKERS} ({exc}); start it with `make up`")
    admin.create_topics([NewTopic(name, num_partitions=3, replication_factor=1)])
    try:
        yield name
    finally:
        admin.delete_topics([name])
        admin.close()


def events_in(value: bytes) -> int:
    """How many events one message value holds (1, or the envelope's length)."""
    decoded = orjson.loads(value)
    return len(decoded["batch"]) if "batch" in decoded else 1


def read_all(
    topic: str, expected_events: int, timeout_s: float = 60.0
) -> list[tuple[bytes, bytes]]:
    """(key, value) of every message in ``topic``, until ``expected_events`` or the timeout."""
    consumer = topic_reader(topic)
    messages: list[tuple[bytes, bytes]] = []
    seen = 0
    deadline = time.monotonic() + timeout_s
    try:
        while seen < expected_events and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500, max_records=5000).values():
                messages.extend((r.key, r.value) for r in records)
                seen += sum(events_in(r.value) for r in records)
        # A little longer: anything beyond the expected count would be a duplicate.
        for records in consumer.poll(timeout_ms=1000).values():
            messages.extend((r.key, r.value) for r in records)
    finally:
        consumer.close()
    return messages


def test_generate_sends_exactly_n_events_keyed_by_visitor(topic: str) -> None:
    """N generated events arrive exactly once each, keyed by their anonymous_id."""
    n = 5000
    status = main(["generate", "--brokers", BROKERS, "--topic", topic, "--events", str(n),
                   "--seed", "1", "--start", "2025-06-01T00:00:00Z"])  # fmt: skip
    assert status == 0
    messages = read_all(topic, n)
    assert len(messages) == n
    ids = set()
    for key, value in messages:
        event = orjson.loads(value)
        assert key == event["anonymous_id"].encode()
        ids.add(event["event_id"])
    assert len(ids) == n


def test_generate_batches_to_kafka(topic: str) -> None:
    """With --batch-size the envelopes arrive, one visitor each, holding all N events."""
    n = 3000
    status = main(["generate", "--brokers", BROKERS, "--topic", topic, "--events", str(n),
                   "--batch-size", "20", "--seed", "2"])  # fmt: skip
    assert status == 0
    messages = read_all(topic, n)
    assert sum(events_in(value) for _, value in messages) == n
    for key, value in messages:
        assert {e["anonymous_id"].encode() for e in orjson.loads(value)["batch"]} == {key}


def event_ms(event: dict[str, object]) -> int:
    """An event's time in epoch ms, from either timestamp form the contract allows."""
    value = event["timestamp"]
    if isinstance(value, int):
        return value
    assert isinstance(value, str)
    return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1000)


def test_paced_run_sends_each_event_at_its_time(
    topic: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """With --rate every event arrives, sent at a steady offset from its event time, no burst."""
    status = main(["generate", "--brokers", BROKERS, "--topic", topic, "--rate", "1000",
                   "--duration", "4", "--seed", "3"])  # fmt: skip
    assert status == 0
    out, err = capsys.readouterr()
    summary = out.strip().splitlines()[-1]
    total = int(summary.split("journey generate: ")[1].split(" events")[0])
    elapsed = float(summary.split("elapsed ")[1].split(" s")[0])
    consumer = topic_reader(topic)
    # Producer CreateTime (wall clock at send) minus event time, per message.
    offsets_ms: list[int] = []
    deadline = time.monotonic() + 60
    try:
        while len(offsets_ms) < total and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500, max_records=5000).values():
                offsets_ms.extend(r.timestamp - event_ms(orjson.loads(r.value)) for r in records)
    finally:
        consumer.close()
    assert len(offsets_ms) == total > 0
    assert 3.5 <= elapsed <= 6.0  # 4 s of event time took about 4 s of wall time
    # The offset is the start-up (start is floored to the second, the model warms up);
    # what matters is that it stays put: events left in their 10 ms tick, not in bursts.
    assert min(offsets_ms) >= -50
    assert max(offsets_ms) - min(offsets_ms) <= 200, (min(offsets_ms), max(offsets_ms))
    shortfall = total / elapsed < 0.95 * 1000
    assert ("asked for --rate 1,000 events/s" in err) == shortfall, err


def test_a_run_split_over_processes_sends_every_event_once(
    topic: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """--processes 2: N events arrive once each, keyed by visitor, sessions counted right."""
    n = 4000
    status = main(["generate", "--brokers", BROKERS, "--topic", topic, "--events", str(n),
                   "--sim-rate", "20", "--processes", "2", "--seed", "4",
                   "--start", "2025-06-01T00:00:00Z"])  # fmt: skip
    assert status == 0
    printed = capsys.readouterr().out
    assert "by 2 processes" in printed
    reported = int(printed.split(" in ")[1].split(" sessions")[0])
    messages = read_all(topic, n)
    assert len(messages) == n
    times: dict[str, list[int]] = {}
    ids = set()
    for key, value in messages:
        event = orjson.loads(value)
        assert key == event["anonymous_id"].encode()
        ids.add(event["event_id"])
        times.setdefault(event["anonymous_id"], []).append(event_ms(event))
    assert len(ids) == n
    # Own count of the engine's sessions: a new one after a gap of over 30 minutes (no
    # visitor of 200 s of traffic comes near the 24-hour cap).
    sessions = 0
    for visitor_times in times.values():
        visitor_times.sort()
        sessions += 1 + sum(b - a > 30 * 60_000 for a, b in pairwise(visitor_times))
    assert sessions == reported
