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

from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.errors import StreamError
from streams.settings import Settings

log = logging.getLogger(__name__)

#: Bound of one repair: the missing offsets must be read within this time.
FETCH_TIMEOUT_S = 60.0


class GapFetcher:
    """A group-less consumer, started on first use, reading offset ranges of one topic."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._consumer: AIOKafkaConsumer | None = None

    async def fetch(self, topic: str, partition: int, offsets: range) -> list[tuple[int, bytes]]:
        """(offset, value) of the records at ``offsets``, in order; raises if they are not read.

        Offsets that hold no record (none in our topics, but Kafka allows it) are skipped.
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
        found: list[tuple[int, bytes]] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + FETCH_TIMEOUT_S
        while await consumer.position(tp) < offsets.stop:
            if loop.time() > deadline:
                raise StreamError(
                    f"could not read skipped messages {offsets.start}-{offsets.stop - 1} of "
                    f"{topic}[{partition}] within {FETCH_TIMEOUT_S:.0f} s"
                )
            batch = await consumer.getmany(tp, timeout_ms=500)
            for record in batch.get(tp, []):
                if offsets.start <= record.offset < offsets.stop:
                    found.append((record.offset, record.value or b""))
        if len(found) != len(offsets):
            log.error(
                "only %d of the %d skipped messages %d-%d of %s[%d] could be read (deleted by "
                "retention?)", len(found), len(offsets), offsets.start, offsets.stop - 1,
                topic, partition,
            )  # fmt: skip
        return found

    async def stop(self) -> None:
        """Close the consumer if it was started."""
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
