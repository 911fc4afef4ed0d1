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
re-forwarded event is dropped downstream by its source (input partition, offset, index).

Event-time progress: the consumer keeps a ``SourceProgress`` over its input partitions;
:meth:`IntakeConsumer.report` folds a batch's highest event times into it and says which
partitions are read to their end, so idle ones can be told apart from ones with a backlog
(see ``streams.engine.progress``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

from streams.engine.progress import ProgressReport, SourceProgress
from streams.settings import Settings

log = logging.getLogger(__name__)

#: Handles one batch of records (any partitions, possibly none); returns once its output is
#: delivered.
BatchHandler = Callable[[Sequence[Any]], Awaitable[None]]
#: Longest wait for the consumer's position of a partition whose high watermark is known.
POSITION_TIMEOUT_S = 1.0
#: A partition counts as read to its end only if a fetch response came this recently: with
#: its leader unreachable, the last high watermark known would be stale.
FETCH_FRESH_MS = 10_000


class IntakeConsumer:
    """Consume the input topic in batches and hand each batch to ``handle``."""

    def __init__(self, settings: Settings, handle: BatchHandler) -> None:
        self._settings = settings
        self._handle = handle
        self._consumer: AIOKafkaConsumer | None = None
        self._next: dict[TopicPartition, int] = {}
        #: Event-time progress and idleness of the owned input partitions.
        self.progress = SourceProgress(round(settings.idle_grace_s * 1000))
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
                    # Nothing to forward, but progress reports still go out on time.
                    await self._handle([])
                    continue
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
                    # drops them by their source (input partition, offset, index).
                    log.warning("intake commit failed after a rebalance; batch will be redelivered")
        finally:
            try:
                await consumer.stop()
            except KafkaError:  # pragma: no cover - broker gone while stopping
                log.warning("intake consumer did not stop cleanly", exc_info=True)
            self.stopped.set()

    async def report(self, tops: Mapping[int, int | None]) -> ProgressReport | None:
        """Fold a batch into the progress and report every owned partition; None if none.

        ``tops``: per input partition that had records in the batch, the highest event
        time accepted from it (None when every record was rejected).
        """
        consumer = self._consumer
        if consumer is None:
            return None
        now_ms = int(time.time() * 1000)
        progress = self.progress
        assignment = consumer.assignment()
        progress.assign((tp.partition for tp in assignment), now_ms)
        progress.observe(tops, now_ms)
        if not assignment:
            return None
        known = consumer.partitions_for_topic(self._settings.input_topic)
        if known:
            progress.partitions = len(known)
        quiet = progress.quiet(now_ms)
        caught_up = await self._caught_up(quiet, now_ms) if quiet else set()
        return progress.report(caught_up, now_ms)

    async def _caught_up(self, partitions: list[int], now_ms: int) -> set[int]:
        """Those of ``partitions`` whose every record up to the high watermark was handed out.

        Not caught up: a partition whose high watermark is not known yet (nothing fetched),
        or was last fetched more than ``FETCH_FRESH_MS`` ago (its leader unreachable).
        """
        consumer = self._consumer
        assert consumer is not None
        topic = self._settings.input_topic
        caught_up: set[int] = set()
        for partition in partitions:
            tp = TopicPartition(topic, partition)
            try:
                highwater = consumer.highwater(tp)
                fetched_ms = consumer.last_poll_timestamp(tp)
                if highwater is None or fetched_ms is None or now_ms - fetched_ms > FETCH_FRESH_MS:
                    continue
                # Known at once after a fetch; bounded in case a reset is under way.
                position = await asyncio.wait_for(consumer.position(tp), POSITION_TIMEOUT_S)
            except (AssertionError, IllegalStateError, TimeoutError):
                continue  # revoked meanwhile, or the position is being reset
            if position >= highwater:
                caught_up.add(partition)
        return caught_up

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
