"""The raw upper bound: a plain aiokafka consumer that reads and JSON-decodes every event.

No consumer group, no commits, no processing: what any Python consumer of this topic on
this machine can do at best. The clock starts when the first fetch returns records, so
connection and metadata set-up are not counted, as for the worker.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.kafka_connection import KafkaConnection, client_config


@dataclass(frozen=True, slots=True)
class ConsumeResult:
    """Events read and the seconds from the first fetched batch to the last event."""

    events: int
    seconds: float

    @property
    def per_s(self) -> float:
        """Events per second."""
        return self.events / self.seconds if self.seconds > 0 else 0.0


async def consume_raw(
    kafka: KafkaConnection | str, topic: str, expected: int, *, timeout_s: float
) -> ConsumeResult:
    """Read ``topic`` from the start until ``expected`` events are decoded (bounded).

    TimeoutError when ``timeout_s`` ends first: a rate over part of the topic is no figure.

    ``kafka`` is the bench's connection (its security settings), or a plain broker list.
    """
    consumer = AIOKafkaConsumer(
        **client_config(kafka, "aiokafka"),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=10_000,
        fetch_max_bytes=64 * 1024 * 1024,
        max_partition_fetch_bytes=8 * 1024 * 1024,
    )
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            partitions = await _wait_for_partitions(consumer, topic)
        consumer.assign([TopicPartition(topic, p) for p in sorted(partitions)])
        await consumer.seek_to_beginning()
        loads = orjson.loads
        seen = 0
        started: float | None = None
        deadline = time.monotonic() + timeout_s
        while seen < expected and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500, max_records=10_000)
            if started is None and batches:
                started = time.perf_counter()
            for records in batches.values():
                for record in records:
                    loads(record.value)
                seen += len(records)
        if seen < expected:
            raise TimeoutError(
                f"the raw consumer read {seen} of {expected} events in {timeout_s:.0f} s"
            )
        if started is None:  # nothing expected, nothing read
            return ConsumeResult(0, 0.0)
        return ConsumeResult(seen, time.perf_counter() - started)
    finally:
        await consumer.stop()


async def _wait_for_partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    for _ in range(50):
        await consumer._client.force_metadata_update()
        partitions = consumer.partitions_for_topic(topic)
        if partitions:
            return set(partitions)
        await asyncio.sleep(0.2)
    raise LookupError(f"topic {topic} has no partitions after 10 s")
