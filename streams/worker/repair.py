"""Fetch internal messages the Faust consumer skipped, so the agent can apply them in order.

``PartitionState.gap`` notices when a message arrives past the next expected offset of its
partition. Around a rebalance Faust's consumer can skip messages of the by-visitor topic:
it forgets its committed offset for a revoked partition, so acknowledgements can commit past
messages that were fetched before the revocation but never delivered, and its read offset
can make it drop the redelivered ones. The messages are still in the topic; this reads
exactly the missing offsets with a plain consumer outside any group (``GapFetcher``), and
``SkippedMessages`` applies them before the message that revealed the gap, or when the
partition stalls with messages waiting in Kafka (at its end no later message reveals it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any, Protocol

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from streams.engine.state import Corrupt
from streams.errors import StreamError
from streams.kafka_connection import client_config
from streams.metrics import JourneyMetrics
from streams.settings import Settings
from streams.sink import ClickHouseSink
from streams.worker.codec import NOTHING, decode_forwarded
from streams.worker.partition import PartitionState
from streams.worker.publisher import CorruptRecord
from streams.worker.runtime import WorkerRuntime, exit_unrecoverable

if TYPE_CHECKING:
    from streams.worker.flusher import Flusher
    from streams.worker.publisher import Publisher

log = logging.getLogger(__name__)

#: A repair fails when no record arrives for this long.
FETCH_TIMEOUT_S = 60.0
#: Bound of each fetch of a repair of skipped messages; beyond it the worker exits.
REPAIR_TIMEOUT_S = 180.0
#: Messages waiting in Kafka with none delivered nor flushed for this long are read directly.
STALL_REPAIR_S = 15.0


class TopicReader(Protocol):
    """Reads the by-visitor topic outside the consumer group (``GapFetcher``, or a fake)."""

    async def log_start(self, topic: str, partition: int) -> int:
        """The first offset still in ``topic[partition]``."""

    def batches(
        self, topic: str, partition: int, offsets: range
    ) -> AsyncGenerator[list[tuple[int, bytes]], None]:
        """The records at ``offsets`` as (offset, value), in order, a batch at a time."""


class Highwaters(Protocol):
    """The Faust consumer, as far as waiting messages go."""

    def highwater(self, tp: Any) -> int | None:
        """The offset after the last message Kafka holds in ``tp`` (None: not fetched yet)."""


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


class SkippedMessages:
    """Notices messages the consumer skipped and applies them, in order, before going on.

    A skip shows as a gap at the partition's next message (``PartitionState.gap``), or, at
    the end of a partition, as messages waiting in Kafka while the agent applies nothing
    (:meth:`stalled`). Either way :meth:`repair` reads them with the ``TopicReader`` and
    applies them as if delivered: their output published, the rows flushed as they go.
    """

    def __init__(
        self,
        reader: TopicReader,
        runtime: WorkerRuntime,
        publisher: Publisher,
        flusher: Flusher,
        sink: ClickHouseSink,
        metrics: JourneyMetrics,
    ) -> None:
        self._reader = reader
        self._runtime = runtime
        self._publisher = publisher
        self._flusher = flusher
        self._sink = sink
        self._metrics = metrics

    def stalled(self, state: PartitionState, now_ms: int) -> bool:
        """True when the agent applied no message at all for ``STALL_REPAIR_S`` while free.

        Only then can messages waiting in Kafka have been skipped rather than be on their
        way: an agent busy with other partitions (a deep buffer while catching up) or
        waiting for the lock (a flush through a ClickHouse outage, another repair) is not
        stalled. While messages keep coming, a skip shows as a gap at the partition's next
        message anyway.
        """
        if state.next_offset is None:
            return False
        runtime = self._runtime
        applied = max((other.applied_ms or 0) for other in runtime.partitions.values())
        last = max(applied, runtime.resumed_ms)
        return now_ms - last >= STALL_REPAIR_S * 1000

    async def repair(self, topic: str, state: PartitionState, skipped: range) -> None:
        """Fetch and apply, in order, messages the consumer skipped before the current one.

        A long range (a partition never checkpointed applies its whole retained log) is
        flushed as it goes, like delivered messages, so its rows do not pile up in memory.
        It holds the lock throughout, so a revocation or a shutdown waiting for it makes the
        worker exit instead (as a crash: nothing past the last checkpoint was acknowledged).
        """
        runtime = self._runtime
        log.warning(
            "consumer skipped messages %d-%d of %s[%d]; fetching and applying them",
            skipped.start, skipped.stop - 1, topic, state.partition,
        )  # fmt: skip
        batches = self._reader.batches(topic, state.partition, skipped)
        try:
            while True:
                if runtime.revoking or runtime.stopping:
                    exit_unrecoverable(
                        f"a repair of {topic}[{state.partition}] was interrupted by a "
                        f"{'rebalance' if runtime.revoking else 'shutdown'}"
                    )
                try:
                    # Every fetch is bounded: a repair once never returned (cause not found),
                    # holding the lock and with it the worker; a crash-restart recovers, a
                    # hang does not. Flushes are not: an outage is waited out as anywhere.
                    batch = await asyncio.wait_for(anext(batches), REPAIR_TIMEOUT_S)
                except StopAsyncIteration:
                    break
                except (StreamError, KafkaError, TimeoutError):
                    exit_unrecoverable("skipped messages could not be read")
                for offset, value in batch:
                    message = decode_forwarded(value)
                    if isinstance(message, Corrupt):
                        # As the agent does: dead-lettered, then taken as an empty message.
                        where = (topic, state.partition, offset, None)
                        await self._publisher.reject(
                            CorruptRecord("by_visitor", *where, value, message)
                        )
                        message = NOTHING
                    out = state.apply(message, offset, int(time.time() * 1000))
                    await self._publisher.publish(out)
                self._metrics.skipped_messages.inc(len(batch))
                if self._sink.due():
                    await self._flusher.flush()
        finally:
            # Already closed after a normal end or a timeout; bounded for any other exit.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(batches.aclose(), REPAIR_TIMEOUT_S)
        runtime.resumed_ms = int(time.time() * 1000)


def waiting(consumer: Highwaters, tp: Any, expected: int | None) -> range | None:
    """The offsets of ``tp`` from ``expected`` (the next to apply) that Kafka already holds.

    None when there are none or the high watermark is unknown (nothing fetched yet). A
    partition the consumer no longer owns (a rebalance under way) gives an empty range,
    which still counts as backlog: the watermark waits for the new assignment.
    """
    try:
        highwater = consumer.highwater(tp)
    except Exception:  # aiokafka asserts the partition is assigned
        return range(0)
    start = expected if expected is not None else 0
    if highwater is None or highwater <= start:
        return None
    return range(start, highwater)
