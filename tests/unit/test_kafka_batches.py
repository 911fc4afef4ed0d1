"""Keyed records in whole aiokafka batches: Kafka's default partitions, order, full batches."""

from __future__ import annotations

import asyncio
import random
import warnings
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.record.default_records import DefaultRecordBatch

from streams.kafka_batches import PartitionBatches

with warnings.catch_warnings():
    # kafka-python 3.0 uses a deprecated importlib.resources call at import time.
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka.partitioner import DefaultPartitioner


class Cluster:
    """What kafka-python's partitioner asks of the cluster, for one topic of fixed size."""

    def __init__(self, partitions: int) -> None:
        """A topic with ``partitions`` partitions, all available."""
        self.partitions = set(range(partitions))

    def topics(self) -> set[str]:
        """The one topic, "t"."""
        return {"t"}

    def partitions_for_topic(self, topic: str) -> set[int]:
        """All partition ids."""
        return self.partitions

    def available_partitions_for_topic(self, topic: str) -> set[int]:
        """All partition ids."""
        return self.partitions


def with_producer(body: Callable[[AIOKafkaProducer], Awaitable[None]], batch_bytes: int) -> None:
    """Run ``body`` with an unstarted producer (batches are built without a broker)."""

    async def main() -> None:
        producer = AIOKafkaProducer(bootstrap_servers="127.0.0.1:1", max_batch_size=batch_bytes)
        try:
            await body(producer)
        finally:
            await producer.stop()

    asyncio.run(main())


def visitor_keys(count: int, seed: int) -> list[bytes]:
    """UUID-shaped keys, as the generator's visitors have."""
    rng = random.Random(seed)
    keys = []
    for _ in range(count):
        h = f"{rng.getrandbits(128):032x}"
        keys.append(f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}".encode())
    return keys


def records_of(batches: list[tuple[int, Any]]) -> list[tuple[int, bytes, bytes]]:
    """(partition, key, value) of every record in the batches, in batch order."""
    out = []
    for partition, builder in batches:
        built = builder._builder.build()
        for record in DefaultRecordBatch(bytes(built)):
            out.append((partition, bytes(record.key), bytes(record.value)))
    return out


def test_records_land_on_kafkas_default_partitions() -> None:
    """Every record is in a batch of the partition kafka-python's default partitioner picks."""
    keys = [*visitor_keys(600, seed=1), b"", b"a", b"ab", b"abc", b"x" * 37]
    values = [f"v{i}".encode() for i in range(len(keys))]
    default, cluster = DefaultPartitioner(), Cluster(7)

    async def body(producer: AIOKafkaProducer) -> None:
        one = PartitionBatches(producer, 7)
        full = [b for k, v in zip(keys, values, strict=True) if (b := one.add(k, v))]
        singly = records_of(full + one.take())
        many = PartitionBatches(producer, 7)
        together = records_of(many.add_all(keys, values) + many.take())
        for records in (singly, together):
            assert sorted(v for _, _, v in records) == sorted(values)  # each exactly once
            for partition, key, _ in records:
                assert partition == default.partition("t", None, key, None, b"", cluster), key

    with_producer(body, batch_bytes=16 * 1024)


def test_full_batches_come_back_in_order_and_a_partition_keeps_its_order() -> None:
    """Small batches fill up: each comes back once full, and per partition records keep order."""
    keys = visitor_keys(50, seed=2) * 20  # 1,000 records, 20 per visitor
    values = [f"{i:06d}".encode() + b"." * 200 for i in range(len(keys))]

    async def body(producer: AIOKafkaProducer) -> None:
        batches = PartitionBatches(producer, 3)
        full = batches.add_all(keys[:700], values[:700])
        full += batches.add_all(keys[700:], values[700:])
        assert len(full) > 10  # 1,000 records of about 250 bytes fill many 4 KiB batches
        records = records_of(full + batches.take())
        assert len(records) == len(keys)
        by_partition: dict[int, list[bytes]] = {}
        for partition, _, value in records:
            by_partition.setdefault(partition, []).append(value)
        for sent in by_partition.values():
            assert sent == sorted(sent)  # values are numbered in sending order
        assert batches.take() == []  # take() emptied the partly filled batches

    with_producer(body, batch_bytes=4 * 1024)
