"""``journey generate`` against the real Kafka broker: every message arrives, keyed by visitor."""

from __future__ import annotations

import os
import time
import uuid
import warnings
from collections.abc import Iterator

import orjson
import pytest

from streams.cli import main

with warnings.catch_warnings():
    # kafka-python 3.0 uses a deprecated importlib.resources call at import time.
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka import KafkaAdminClient, KafkaConsumer
    from kafka.admin import NewTopic
    from kafka.errors import KafkaError

BROKERS = os.environ.get("JOURNEY_TEST_BROKERS", "127.0.0.1:9092")
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
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=BROKERS,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
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
