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
from collections.abc import AsyncIterator

from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.errors import StreamError
from streams.settings import Settings

log = logging.getLogger(__name__)

#: A repair fails when no record arrives for this long.
FETCH_TIMEOUT_S = 60.0


class GapFetcher:
    """A group-less consumer, started on first use, reading offset ranges of one topic."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._consumer: AIOKafkaConsumer | None = None

    async def fetch(self, topic: str, partition: int, offsets: range) -> list[tuple[int, bytes]]:
        """(offset, value) of the records at ``offsets``, in order (see :meth:`batches`)."""
        return [record async for batch in self.batches(topic, partition, offsets)
                for record in batch]  # fmt: skip

    async def batches(
        self, topic: str, partition: int, offsets: range
    ) -> AsyncIterator[list[tuple[int, bytes]]]:
        """The records at ``offsets`` as (offset, value), in order, one fetched batch at a time.

        Batches keep memory bounded when the gap is long. Raises ``StreamError`` when no
        record arrives for ``FETCH_TIMEOUT_S``. Offsets that hold no record (none in our
        topics, but Kafka allows it) are skipped.
        """
        consumer = self._consumer
        if consumer is None:
            consumer = self._consumer = AIOKafkaConsumer(
                bootstrap_servers=self._settings.brokers.split(","),
                client_id=f"{self._settings.app_id}-repair",
                group_id=None,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                max_partition_fetch_bytes=8 * 1024 * 1024,
            )
            await consumer.start()
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        consumer.seek(tp, offsets.start)
        found = 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + FETCH_TIMEOUT_S
        while await consumer.position(tp) < offsets.stop:
            if loop.time() > deadline:
                raise StreamError(
                    f"could not read skipped messages {offsets.start}-{offsets.stop - 1} of "
                    f"{topic}[{partition}]: nothing arrived for {FETCH_TIMEOUT_S:.0f} s"
                )
            fetched = await consumer.getmany(tp, timeout_ms=500, max_records=500)
            batch = [
                (record.offset, record.value or b"")
                for record in fetched.get(tp, [])
                if offsets.start <= record.offset < offsets.stop
            ]
            if batch:
                deadline = loop.time() + FETCH_TIMEOUT_S
                found += len(batch)
                yield batch
        if found != len(offsets):
            log.error(
                "only %d of the %d skipped messages %d-%d of %s[%d] could be read (deleted by "
                "retention?)", found, len(offsets), offsets.start, offsets.stop - 1,
                topic, partition,
            )  # fmt: skip

    async def stop(self) -> None:
        """Close the consumer if it was started."""
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
