"""Producers of the bench: a fast bulk producer and a paced one with a send-time log.

``journey generate`` sends through kafka-python one record at a time (about 9k events/s),
which would make preparing a million-event topic the slowest part of the bench. The bulk
producer here fills one aiokafka ``BatchBuilder`` per partition and submits whole batches
(``send_batch``), keyed by visitor and partitioned with Kafka's murmur2 like any keyed
producer, so the worker sees exactly what a keyed production client would send.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2

from streams.kafka_connection import KafkaConnection, client_config

#: Bytes per batch (one per partition in flight); large, as loopback has no latency to hide.
BATCH_BYTES = 512 * 1024
#: Batches awaited at once before the next round is built (bounds memory in the accumulator).
IN_FLIGHT = 64


def partition_of(key: bytes, partitions: int) -> int:
    """Kafka's default partition of ``key`` (murmur2, the Java client's and aiokafka's)."""
    hashed: int = murmur2(key)
    return (hashed & 0x7FFFFFFF) % partitions


def _producer(kafka: KafkaConnection | str, linger_ms: int) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        **client_config(kafka, "aiokafka"),
        acks=1,
        linger_ms=linger_ms,
        max_batch_size=BATCH_BYTES,
        max_request_size=4 * 1024 * 1024,
        request_timeout_ms=60_000,
    )


@dataclass(frozen=True, slots=True)
class ProduceResult:
    """Records sent by the bulk producer and the wall time they took (delivery included)."""

    records: int
    seconds: float

    @property
    def per_s(self) -> float:
        """Records per second."""
        return self.records / self.seconds if self.seconds > 0 else 0.0


async def produce_bulk(
    kafka: KafkaConnection | str,
    topic: str,
    partitions: int,
    keys: Sequence[bytes],
    values: Sequence[bytes],
    *,
    timeout_s: float,
) -> ProduceResult:
    """Send every (key, value) to ``topic`` in order per partition; wait for all acks."""
    if len(keys) != len(values):
        raise ValueError("keys and values differ in length")
    producer = _producer(kafka, linger_ms=50)
    await producer.start()
    try:
        started = time.perf_counter()
        await asyncio.wait_for(
            _send_batches(producer, topic, partitions, keys, values), timeout=timeout_s
        )
        return ProduceResult(len(values), time.perf_counter() - started)
    finally:
        await producer.stop()


class PartitionBatches:
    """One aiokafka batch per partition, filled with keyed records.

    A record goes to the partition Kafka's default partitioner picks for its key (murmur2
    is pure Python, about 10 us a key, and a visitor sends many events, so it is
    remembered per key). :meth:`add` hands back a batch that filled up, to be sent before
    any later one of its partition; :meth:`take` the partly filled ones.
    """

    __slots__ = ("_builders", "_partition_of", "_partitions", "_producer")

    def __init__(self, producer: AIOKafkaProducer, partitions: int) -> None:
        """Batches of ``producer`` over ``partitions`` partitions."""
        self._producer = producer
        self._partitions = partitions
        self._builders: dict[int, Any] = {}
        self._partition_of: dict[bytes, int] = {}

    def add(self, key: bytes, value: bytes) -> tuple[int, Any] | None:
        """Append a record; (partition, full batch) when its partition's batch filled up."""
        partition = self._partition_of.get(key, -1)
        if partition < 0:
            partition = self._partition_of[key] = partition_of(key, self._partitions)
        builder = self._builders.get(partition)
        if builder is None:
            builder = self._builders[partition] = self._producer.create_batch()
        if builder.append(key=key, value=value, timestamp=None) is not None:
            return None
        fresh = self._builders[partition] = self._producer.create_batch()
        if fresh.append(key=key, value=value, timestamp=None) is None:
            raise ValueError(f"a record of {len(value)} bytes exceeds the batch size")
        return partition, builder

    def take(self) -> list[tuple[int, Any]]:
        """(partition, batch) of every batch holding records; the next records start new ones."""
        batches = [(p, b) for p, b in self._builders.items() if b.record_count()]
        self._builders = {}
        return batches


async def _send_batches(
    producer: AIOKafkaProducer,
    topic: str,
    partitions: int,
    keys: Sequence[bytes],
    values: Sequence[bytes],
) -> None:
    batches = PartitionBatches(producer, partitions)
    pending: list[asyncio.Future[Any]] = []

    async def submit(partition: int, batch: Any) -> None:
        pending.append(await producer.send_batch(batch, topic, partition=partition))
        if len(pending) >= IN_FLIGHT:
            await asyncio.gather(*pending)
            pending.clear()

    for key, value in zip(keys, values, strict=True):
        full = batches.add(key, value)
        if full is not None:
            await submit(*full)
    for partition, batch in batches.take():
        await submit(partition, batch)
    await asyncio.gather(*pending)


@dataclass(slots=True)
class SendLog:
    """What the paced producer sent: per event its visitor and event time, in send order.

    ``sent_ms[i]`` is the wall time (epoch ms) at which event ``i`` was handed to the
    producer; ``event_ms[i]`` is its event time, which the paced producer sets to its
    scheduled send time, so ``sent_ms[i] - event_ms[i]`` is the producer's own delay.
    """

    visitors: list[str] = field(default_factory=list)
    event_ms: list[int] = field(default_factory=list)
    sent_ms: list[int] = field(default_factory=list)


async def produce_paced(
    kafka: KafkaConnection | str,
    topic: str,
    partitions: int,
    events: Iterable[dict[str, Any]],
    count: int,
    rate: float,
    log: SendLog,
    *,
    encode: Callable[[dict[str, Any]], bytes],
    keep: Callable[[str], bool] | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> None:
    """Send ``count`` of ``events`` at ``rate`` per second, event time = scheduled send time.

    ``events`` may be a generator (read as sent, so a long run need not hold them all);
    the run ends early if it runs out. ``log`` records the events of the visitors
    ``keep`` accepts (all without it).

    Every 5 ms the events whose time has come are stamped (``timestamp`` = their scheduled
    wall time, epoch ms), encoded, keyed by visitor and appended to one batch per
    partition (Kafka's murmur2 partitioner, as any keyed producer), and those batches are
    handed to the producer at once; ``log`` records each event. Whole batches keep the
    producer's cost per event small: on a machine the worker shares, a per-record
    ``send`` (about 30 us) would slow the worker it measures. A small linger keeps the
    producer's own batching delay out of the measured latency.
    """
    producer = _producer(kafka, linger_ms=2)
    await producer.start()
    try:
        began_ms = time.time() * 1000.0
        index = 0
        futures: list[asyncio.Future[Any]] = []
        batches = PartitionBatches(producer, partitions)
        source = iter(events)
        while index < count and not should_stop():
            now_ms = time.time() * 1000.0
            due = min(count, int((now_ms - began_ms) * rate / 1000.0) + 1)
            while index < due:
                event = next(source, None)
                if event is None:
                    count = index
                    break
                scheduled = int(began_ms + index * 1000.0 / rate)
                event["timestamp"] = scheduled
                visitor = str(event.get("anonymous_id") or event.get("user_id"))
                full = batches.add(visitor.encode(), encode(event))
                if full is not None:
                    partition, batch = full
                    futures.append(await producer.send_batch(batch, topic, partition=partition))
                if keep is None or keep(visitor):
                    log.visitors.append(visitor)
                    log.event_ms.append(scheduled)
                index += 1
            for partition, batch in batches.take():
                futures.append(await producer.send_batch(batch, topic, partition=partition))
            sent_ms = int(time.time() * 1000)
            log.sent_ms.extend([sent_ms] * (len(log.event_ms) - len(log.sent_ms)))
            if len(futures) > 1_000:
                await asyncio.gather(*futures)
                futures.clear()
            await asyncio.sleep(0.005)
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
