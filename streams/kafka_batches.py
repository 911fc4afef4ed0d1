"""Keyed records sent as whole aiokafka batches: the fast way to produce from Python.

A per-record ``send`` (aiokafka's or kafka-python's) costs 30-100 us of Python a
record, which caps one process at some 10-30k records/s before it has done anything
else. Here records are appended straight into one aiokafka ``BatchBuilder`` per
partition (a few microseconds each) and whole batches are handed to the producer with
``send_batch``. Each record goes to the partition Kafka's default partitioner picks for
its key (murmur2, as the Java client and aiokafka), so a consumer sees exactly what any
keyed producer would have sent (the worker's own ``streams.worker.partitioning``).
``journey generate`` and the bench's producers use it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer

from streams.kafka_connection import KafkaConnection, client_config
from streams.settings import Settings
from streams.worker.partitioning import PartitionCache, partitions_for_keys

#: Bytes per batch (one per partition in flight); large, as loopback has no latency to hide.
BATCH_BYTES = 512 * 1024


def batch_producer(
    kafka: Settings | KafkaConnection | str, linger_ms: int, compression: str | None = None
) -> AIOKafkaProducer:
    """An aiokafka producer for :class:`PartitionBatches` (create it in a running loop).

    ``acks=1``; ``compression`` is aiokafka's ``compression_type`` (gzip, lz4, snappy,
    zstd; the last three need their Python packages), applied to each batch as built.
    """
    return AIOKafkaProducer(
        **client_config(kafka, "aiokafka"),
        acks=1,
        linger_ms=linger_ms,
        max_batch_size=BATCH_BYTES,
        max_request_size=4 * 1024 * 1024,
        request_timeout_ms=60_000,
        compression_type=compression,
    )


class PartitionBatches:
    """One aiokafka batch per partition, filled with keyed records.

    A record goes to the partition Kafka's default partitioner picks for its key
    (``streams.worker.partitioning``: one key at a time through a bounded cache of recent
    keys in :meth:`add`, a whole chunk of keys at once in :meth:`add_all`, which is far
    cheaper when most keys are new, as with generated visitors). :meth:`add` and
    :meth:`add_all` hand back the batches that filled up, each to be sent before any
    later one of its partition; :meth:`take` the partly filled ones.
    """

    __slots__ = ("_builders", "_cache", "_partitions", "_producer")

    def __init__(self, producer: AIOKafkaProducer, partitions: int) -> None:
        """Batches of ``producer`` over ``partitions`` partitions."""
        self._producer = producer
        self._partitions = partitions
        self._cache = PartitionCache(partitions)
        self._builders: dict[int, Any] = {}

    def add(self, key: bytes, value: bytes) -> tuple[int, Any] | None:
        """Append a record; (partition, full batch) when its partition's batch filled up."""
        return self._append(self._cache(key), key, value)

    def add_all(self, keys: Sequence[bytes], values: Sequence[bytes]) -> list[tuple[int, Any]]:
        """Append records in order; the (partition, batch) pairs that filled up, in order."""
        full = []
        for partition, key, value in zip(
            partitions_for_keys(keys, self._partitions), keys, values, strict=True
        ):
            filled = self._append(partition, key, value)
            if filled is not None:
                full.append(filled)
        return full

    def _append(self, partition: int, key: bytes, value: bytes) -> tuple[int, Any] | None:
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
