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

Direct mode (``JOURNEY_INPUT_KEYED_BY_VISITOR``, input keyed by visitor with as many
partitions as the worker's state): there is no subscription. The worker tells the intake
which input partitions to read (those whose state partition of the same number Faust
assigned it) and from where (:meth:`IntakeConsumer.own`), the handler applies the events
itself, and offsets are committed only after the checkpoint that holds their effects
(:meth:`IntakeConsumer.commit`). Every (re)assignment gets an epoch (``epochs``): the
handler applies a batch to a state only if it was fetched after that state's own seek.

Event-time progress: the consumer keeps a ``SourceProgress`` over its input partitions;
:meth:`IntakeConsumer.report` folds a batch's highest event times into it and says which
partitions are read to their end, so idle ones can be told apart from ones with a backlog
(see ``streams.engine.progress``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

from streams.engine.progress import ProgressReport, SourceProgress
from streams.kafka_connection import client_config
from streams.settings import Settings

log = logging.getLogger(__name__)

#: Handles one batch of records (any partitions, possibly none); returns once its output is
#: delivered.
BatchHandler = Callable[[Sequence[Any]], Awaitable[None]]
#: Longest wait for the consumer's position of a partition whose high watermark is known.
POSITION_TIMEOUT_S = 1.0
#: Direct mode: pause between checks while no partition is owned.
IDLE_WAIT_S = 0.2
#: Longest wait for the group's committed offset of a partition taken over (direct mode).
COMMITTED_TIMEOUT_S = 10.0
#: A partition counts as read to its end only if a fetch response came this recently: with
#: its leader unreachable, the last high watermark known would be stale.
FETCH_FRESH_MS = 10_000


class IntakeConsumer:
    """Consume the input topic in batches and hand each batch to ``handle``."""

    def __init__(
        self,
        settings: Settings,
        handle: BatchHandler,
        direct: bool = False,
        topic: str | None = None,
        role: str = "intake",
        read_committed: bool = False,
    ) -> None:
        """``direct``: read the partitions :meth:`own` names, commit only on :meth:`commit`.

        ``topic``: what it reads (default: the input topic); ``role`` names its consumer
        group and client, ``<app_id>-<role>`` (the customer signals reader is another).
        ``read_committed``: skip records of aborted transactions (a topic the worker
        writes in transactions).
        """
        self._settings = settings
        self._handle = handle
        self.topic = settings.input_topic if topic is None else topic
        self._role = role
        self._isolation = "read_committed" if read_committed else "read_uncommitted"
        self._consumer: AIOKafkaConsumer | None = None
        self._next: dict[TopicPartition, int] = {}
        self.direct = direct
        #: Direct mode: partitions to (re)start reading, with their epoch and start offset.
        self._wanted: dict[int, tuple[int, int | None]] = {}
        #: Direct mode: partitions to stop reading.
        self._dropped: set[int] = set()
        #: Direct mode: the start offset given for each partition read (None: committed).
        self._start: dict[int, int | None] = {}
        #: Direct mode: input partition -> epoch of the start its records now follow.
        self.epochs: dict[int, int] = {}
        self.started = asyncio.Event()
        #: Event-time progress and idleness of the owned input partitions.
        self.progress = SourceProgress(round(settings.idle_grace_s * 1000))
        self.stopped = asyncio.Event()

    def _new_consumer(self) -> AIOKafkaConsumer:
        s = self._settings
        session_ms = int(s.kafka_session_timeout_s * 1000)
        topics = () if self.direct else (self.topic,)
        return AIOKafkaConsumer(
            *topics,
            **client_config(s, "aiokafka"),
            group_id=f"{s.app_id}-{self._role}",
            client_id=f"{s.app_id}-{self._role}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level=self._isolation,
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
        self.started.set()
        try:
            while not should_stop():
                if self._wanted or self._dropped:
                    await self._reassign(consumer)
                if self.direct and not self._start:
                    # Nothing to read yet (getmany without an assignment would never return).
                    await asyncio.sleep(IDLE_WAIT_S)
                    await self._handle([])
                    continue
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
                if self.direct:
                    continue  # committed after the checkpoint holding them (commit)
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

    def own(self, partition: int, epoch: int, offset: int | None) -> None:
        """Direct mode: (re)start reading ``partition`` at ``offset`` (None: the committed one).

        Takes effect before the next fetch; records fetched until then carry the
        partition's previous epoch (or none) and must not be applied to the new state.
        """
        self._dropped.discard(partition)
        self._wanted[partition] = (epoch, offset)

    def disown(self, partitions: Iterable[int]) -> None:
        """Direct mode: stop reading ``partitions`` (their state moved to another worker)."""
        for partition in partitions:
            self._wanted.pop(partition, None)
            self._dropped.add(partition)
            self.epochs.pop(partition, None)

    async def _reassign(self, consumer: AIOKafkaConsumer) -> None:
        """Apply :meth:`own` and :meth:`disown`: the new assignment and where each starts.

        A partition kept goes on from the record after the last one handed out; a new
        one starts at the later of its given offset and the group's committed offset
        (records between them were handled, and dead-lettered ones must not be again).
        """
        wanted, self._wanted = self._wanted, {}
        dropped, self._dropped = self._dropped, set()
        topic = self.topic
        for partition in dropped:
            self._start.pop(partition, None)
            self._next.pop(TopicPartition(topic, partition), None)
        owned = set(self._start) | set(wanted)
        consumer.assign([TopicPartition(topic, p) for p in sorted(owned)])
        for partition in sorted(owned):
            tp = TopicPartition(topic, partition)
            if partition in wanted:
                epoch, offset = wanted[partition]
                self._next.pop(tp, None)
                committed = await self._committed(consumer, tp)
                if committed is not None and (offset is None or committed > offset):
                    offset = committed
                self._start[partition] = offset
                self.epochs[partition] = epoch
            else:
                offset = self._next.get(tp, self._start[partition])
            if offset is None:
                await consumer.seek_to_beginning(tp)
            else:
                consumer.seek(tp, offset)

    @staticmethod
    async def _committed(consumer: AIOKafkaConsumer, tp: TopicPartition) -> int | None:
        """The group's committed offset of ``tp``, or None (none, or not known in time)."""
        try:
            committed = await asyncio.wait_for(consumer.committed(tp), COMMITTED_TIMEOUT_S)
        except (KafkaError, TimeoutError):
            log.warning("committed offset of %s not known; starting from the checkpoint", tp)
            return None
        return committed if isinstance(committed, int) and committed >= 0 else None

    async def commit(self, offsets: Mapping[int, int]) -> None:
        """Direct mode: commit input offsets whose effects a checkpoint made durable.

        Best effort: a restart starts every partition from its checkpoint anyway (see
        :meth:`_reassign`); a commit only spares re-reading and is what lag tools show.
        """
        consumer = self._consumer
        if consumer is None or not offsets:
            return
        topic = self.topic
        assigned = consumer.assignment()
        commits = {
            tp: offset
            for partition, offset in offsets.items()
            if (tp := TopicPartition(topic, partition)) in assigned
        }
        if not commits:
            return
        try:
            await consumer.commit(commits)
        except (KafkaError, IllegalStateError) as exc:
            log.warning("input offsets not committed (%s); a restart re-reads them", exc)

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
        known = consumer.partitions_for_topic(self.topic)
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
        topic = self.topic
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
