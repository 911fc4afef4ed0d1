"""Producers of the bench: a fast bulk producer and a paced one with a send-time log.

A per-record producer would make preparing a million-event topic the slowest part of the
bench. Both producers here fill one aiokafka ``BatchBuilder`` per partition and submit
whole batches (:mod:`streams.kafka_batches`, which ``journey generate`` uses too), keyed
by visitor and partitioned with Kafka's murmur2 like any keyed producer, so the worker
sees exactly what a keyed production client would send.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaProducer

from streams.kafka_batches import PartitionBatches, batch_producer
from streams.kafka_connection import KafkaConnection

#: Batches awaited at once before the next round is built (bounds memory in the accumulator).
IN_FLIGHT = 64


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
    producer = batch_producer(kafka, linger_ms=50)
    await producer.start()
    try:
        started = time.perf_counter()
        await asyncio.wait_for(
            _send_batches(producer, topic, partitions, keys, values), timeout=timeout_s
        )
        return ProduceResult(len(values), time.perf_counter() - started)
    finally:
        await producer.stop()


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
    producer = batch_producer(kafka, linger_ms=2)
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
