"""The intake stage: a plain aiokafka consumer group reading whole fetched batches.

Intake is stateless (validate, dead-letter, repartition by visitor), so it does not need
Faust's tables; what it needs is throughput. Faust hands an agent one message at a time and
pays about 100 microseconds of task and queue machinery per message (../shared
PERFORMANCE.md measured 7-9k messages/s for any Faust agent), which caps a topic of
one-event messages far below our target. Here one ``getmany`` returns up to
``JOURNEY_INTAKE_BATCH`` records from every assigned partition and the whole batch is
handled in one call; Faust's producer then carries the per-partition batches to the
sessionize agent, which is a Faust agent with its table and changelog.

Offsets: committed only after every message produced for the batch (forwarded events and
dead-letter records) is acknowledged by Kafka, so a crash re-forwards, never loses. A
re-forwarded event is a duplicate downstream, dropped by event id in its open session.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

from streams.settings import Settings

log = logging.getLogger(__name__)

#: Handles one batch of records (any partitions); returns once its output is delivered.
BatchHandler = Callable[[Sequence[Any]], Awaitable[None]]


class IntakeConsumer:
    """Consume the input topic in batches and hand each batch to ``handle``."""

    def __init__(self, settings: Settings, handle: BatchHandler) -> None:
        self._settings = settings
        self._handle = handle
        self._consumer: AIOKafkaConsumer | None = None
        self._next: dict[TopicPartition, int] = {}
        self.busy = False
        self.stopped = asyncio.Event()

    def _new_consumer(self) -> AIOKafkaConsumer:
        s = self._settings
        session_ms = int(s.kafka_session_timeout_s * 1000)
        return AIOKafkaConsumer(
            s.input_topic,
            bootstrap_servers=s.brokers.split(","),
            group_id=f"{s.app_id}-intake",
            client_id=f"{s.app_id}-intake",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=s.intake_batch,
            fetch_max_bytes=64 * 1024 * 1024,
            max_partition_fetch_bytes=8 * 1024 * 1024,
            session_timeout_ms=session_ms,
            heartbeat_interval_ms=max(300, min(3000, session_ms // 3)),
            rebalance_timeout_ms=max(60_000, session_ms),
        )

    async def run(self, should_stop: Callable[[], bool]) -> None:
        """Fetch, handle, commit until ``should_stop()``; then leave the group cleanly."""
        consumer = self._consumer = self._new_consumer()
        await consumer.start()
        try:
            while not should_stop():
                records = await consumer.getmany(
                    timeout_ms=200, max_records=self._settings.intake_batch
                )
                if not records:
                    self.busy = False
                    continue
                self.busy = True
                batch = [record for messages in records.values() for record in messages]
                await self._handle(batch)
                offsets = {tp: messages[-1].offset + 1 for tp, messages in records.items()}
                self._next.update(offsets)
                try:
                    await consumer.commit(offsets)
                except (CommitFailedError, IllegalStateError):
                    # The group rebalanced while we worked (IllegalStateError: a partition
                    # of the batch was revoked before the commit; once this crashed the
                    # worker). These records go to the new owner again, and downstream
                    # drops them as duplicates by event id.
                    log.warning("intake commit failed after a rebalance; batch will be redelivered")
                self.busy = bool(self.lag())
        finally:
            self.busy = False
            try:
                await consumer.stop()
            except KafkaError:  # pragma: no cover - broker gone while stopping
                log.warning("intake consumer did not stop cleanly", exc_info=True)
            self.stopped.set()

    def assigned(self) -> bool:
        """True once the consumer owns input partitions (False while a rebalance is pending).

        Until then the input's backlog is unknown, not zero: after a crash the group waits
        for the dead member's session to expire before handing its partitions out.
        """
        consumer = self._consumer
        return consumer is not None and bool(consumer.assignment())

    def lag(self) -> int:
        """Messages between the next offset to read and the end, over assigned partitions."""
        return sum(self.lag_by_partition().values())

    def lag_by_partition(self) -> dict[int, int]:
        """Per input partition: high watermark minus the next offset to read."""
        consumer = self._consumer
        if consumer is None:
            return {}
        lags: dict[int, int] = {}
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            if highwater is None:
                continue
            lags[tp.partition] = max(0, highwater - self._next.get(tp, 0))
        return lags
