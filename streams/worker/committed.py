"""Faust's consumer reading committed records only, for a table written in transactions.

With ``JOURNEY_DELIVERY=exactly_once`` the table's changelog is written in the worker's
Kafka transactions (``worker/flusher.py``). Its recovery must not read the records of a
transaction that was aborted (a worker killed before its checkpoint committed): the table
would then hold states whose output was never visible, and the messages that made them
would be skipped when delivered again. Faust reads committed records only when it runs
transactions of its own (``processing_guarantee="exactly_once"``: a producer per
partition, its own offset commits), which this worker does not use; the classes here turn
on just the read.

Faust's recovery also waits until it has received the record just before a partition's
end (its "highwater"). After a transaction the last offset is the transaction's marker,
which no consumer ever receives, so that wait would never end. The highwater given to it
is the offset after the partition's last committed record instead, found by reading the
partition's tail (``committed_ends``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

from streams.errors import StreamError
from streams.kafka_connection import client_config
from streams.settings import Settings

#: Offsets read back from a partition's end to find its last committed record (grown
#: sixteen-fold while none is found: an aborted transaction's records are skipped).
TAIL_WINDOW = 16
#: Longest time the search of one recovery may take.
SEARCH_TIMEOUT_S = 60.0
#: Empty fetches in a row after which a partition's tail counts as read.
EMPTY_FETCHES = 3


async def committed_ends(
    settings: Settings, partitions: Sequence[TopicPartition]
) -> dict[TopicPartition, int]:
    """Per partition, the offset after its last committed record (its log start if none)."""
    if not partitions:
        return {}
    consumer = AIOKafkaConsumer(
        **client_config(settings, "aiokafka"),
        client_id=f"{settings.app_id}-recovery-ends",
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    await consumer.start()
    try:
        consumer.assign(list(partitions))
        # For a read_committed consumer the end is the last stable offset.
        ends = await consumer.end_offsets(list(partitions))
        starts = await consumer.beginning_offsets(list(partitions))
        deadline = time.monotonic() + SEARCH_TIMEOUT_S
        return {
            tp: await _last_record_end(consumer, tp, starts[tp], ends[tp], deadline)
            for tp in partitions
        }
    finally:
        await consumer.stop()


async def _last_record_end(
    consumer: AIOKafkaConsumer, tp: TopicPartition, start: int, end: int, deadline: float
) -> int:
    """The offset after the last committed record of ``tp`` in [start, end), else ``start``."""
    window = TAIL_WINDOW
    while end > start:
        since = max(start, end - window)
        consumer.seek(tp, since)
        last: int | None = None
        empty = 0
        while await consumer.position(tp) < end and empty < EMPTY_FETCHES:
            if time.monotonic() > deadline:
                raise StreamError(f"the committed end of {tp.topic}[{tp.partition}] not found")
            batch = await consumer.getmany(tp, timeout_ms=500, max_records=10_000)
            records = batch.get(tp, [])
            empty = 0 if records else empty + 1
            for record in records:
                if record.offset < end:
                    last = record.offset
        if last is not None:
            return last + 1
        if since == start:
            break
        window *= 16
    return start


def read_committed_transport(settings: Settings) -> type[faust_aiokafka.Transport]:
    """Faust's aiokafka transport, its worker consumer reading committed records only."""

    class ReadCommittedThread(faust_aiokafka.AIOKafkaConsumerThread):
        def _create_worker_consumer(self, transport: Any) -> AIOKafkaConsumer:
            consumer = super()._create_worker_consumer(transport)
            # Read by the consumer's start() (it builds the fetcher then); Faust sets it
            # only with its own transactions.
            consumer._isolation_level = "read_committed"
            return consumer

        async def _highwaters(self, partitions: list[TP]) -> Mapping[TP, int]:
            tps = [TopicPartition(tp.topic, tp.partition) for tp in partitions]
            ends = await committed_ends(settings, tps)
            return {TP(tp.topic, tp.partition): end for tp, end in ends.items()}

    class ReadCommittedConsumer(faust_aiokafka.Consumer):
        def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
            return ReadCommittedThread(self, loop=self.loop, beacon=self.beacon)

    class ReadCommittedTransport(faust_aiokafka.Transport):
        Consumer = ReadCommittedConsumer

    return ReadCommittedTransport
