"""Fetch internal messages the Faust consumer skipped, so the agent can apply them in order.

``PartitionState.gap`` notices when a message arrives past the next expected offset of its
partition. Around a rebalance Faust's consumer can skip messages of the by-visitor topic:
it forgets its committed offset for a revoked partition, so acknowledgements can commit past
messages that were fetched before the revocation but never delivered, and its read offset
can make it drop the redelivered ones. The messages are still in the topic; this reads
exactly the missing offsets with a plain consumer outside any group.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator

from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.errors import StreamError
from streams.kafka_connection import client_config
from streams.settings import Settings

log = logging.getLogger(__name__)

#: A repair fails when no record arrives for this long.
FETCH_TIMEOUT_S = 60.0


class GapFetcher:
    """Reads offset ranges with a short-lived group-less consumer per repair.

    A consumer per repair (repairs are rare) rather than one re-assigned from partition to
    partition: a re-used consumer once hung here after its assignment changed, with the
    agent, and so the whole worker, waiting on it.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def _consumer(self) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            **client_config(self._settings, "aiokafka"),
            client_id=f"{self._settings.app_id}-repair",
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=8 * 1024 * 1024,
        )

    async def log_start(self, topic: str, partition: int) -> int:
        """The first offset still in ``topic[partition]`` (0 until retention deletes some).

        Raises ``StreamError`` when Kafka does not answer within ``FETCH_TIMEOUT_S``.
        """
        consumer = self._consumer()
        tp = TopicPartition(topic, partition)
        try:
            await asyncio.wait_for(consumer.start(), FETCH_TIMEOUT_S)
            offsets = await asyncio.wait_for(consumer.beginning_offsets([tp]), FETCH_TIMEOUT_S)
        except TimeoutError as exc:
            raise StreamError(f"Kafka did not answer for the log start of {tp}") from exc
        finally:
            await consumer.stop()
        return int(offsets[tp])

    async def fetch(self, topic: str, partition: int, offsets: range) -> list[tuple[int, bytes]]:
        """(offset, value) of the records at ``offsets``, in order (see :meth:`batches`)."""
        return [record async for batch in self.batches(topic, partition, offsets)
                for record in batch]  # fmt: skip

    async def batches(
        self, topic: str, partition: int, offsets: range
    ) -> AsyncGenerator[list[tuple[int, bytes]], None]:
        """The records at ``offsets`` as (offset, value), in order, one fetched batch at a time.

        Batches keep memory bounded when the gap is long. Raises ``StreamError`` when no
        record arrives for ``FETCH_TIMEOUT_S``; every wait on the client is bounded too.
        Offsets that hold no record (none in our topics, but Kafka allows it) are skipped.
        """
        consumer = self._consumer()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + FETCH_TIMEOUT_S
        found = 0
        try:
            await asyncio.wait_for(consumer.start(), FETCH_TIMEOUT_S)
            tp = TopicPartition(topic, partition)
            consumer.assign([tp])
            consumer.seek(tp, offsets.start)
            reached = offsets.start
            while reached < offsets.stop:
                if loop.time() > deadline:
                    raise StreamError(
                        f"could not read skipped messages {reached}-{offsets.stop - 1} of "
                        f"{topic}[{partition}]: nothing arrived for {FETCH_TIMEOUT_S:.0f} s"
                    )
                fetched = await asyncio.wait_for(
                    consumer.getmany(tp, timeout_ms=500, max_records=500), FETCH_TIMEOUT_S
                )
                records = fetched.get(tp, [])
                if not records:
                    if await consumer.position(tp) >= offsets.stop:
                        break  # the last offsets hold no record (Kafka allows it)
                    continue
                reached = max(reached, records[-1].offset + 1)
                batch = [
                    (record.offset, record.value or b"")
                    for record in records
                    if offsets.start <= record.offset < offsets.stop
                ]
                deadline = loop.time() + FETCH_TIMEOUT_S
                if batch:
                    found += len(batch)
                    yield batch
        except TimeoutError as exc:
            raise StreamError(f"Kafka did not answer while reading {topic}[{partition}]") from exc
        finally:
            await consumer.stop()
        if found != len(offsets):
            log.error(
                "only %d of the %d skipped messages %d-%d of %s[%d] could be read (deleted by "
                "retention?)", found, len(offsets), offsets.start, offsets.stop - 1,
                topic, partition,
            )  # fmt: skip
