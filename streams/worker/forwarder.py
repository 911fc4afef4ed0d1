"""The intake's handler of a batch: validate, dead-letter, and hand on by visitor partition.

Through the by-visitor topic (the default) the ``Forwarder`` forwards the accepted events
grouped by the partition their visitor hashes to: one message per partition per batch.
That is the repartition by visitor key (producers may key by anything) and it turns a
stream of small messages into few large ones, so the per-message cost of Faust is paid
once per batch. With input keyed by visitor (``JOURNEY_INPUT_KEYED_BY_VISITOR``) there is
no hop: the ``DirectIntake`` applies the events to the local partition states itself.

The topics and the intake's progress are handed in (``Topic``, ``IntakeProgress``): a test
drives a batch with fakes of them.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from streams.engine.events import Event
from streams.engine.intake import NOT_KEYED_BY_VISITOR, IntakeResult, Rejection, parse_payload
from streams.engine.progress import ProgressReport
from streams.metrics import JourneyMetrics
from streams.settings import Settings
from streams.worker.codec import (
    Source,
    chunk_forwarded,
    encode_forwarded,
    encode_report,
    encode_topic,
    forwarded_message,
    rejection_record,
)
from streams.worker.partitioning import PartitionCache, partitions_for_keys
from streams.worker.runtime import WorkerRuntime

if TYPE_CHECKING:
    from streams.worker.flusher import Flusher
    from streams.worker.publisher import Publisher

#: Largest forwarded message: well under the broker's default message.max.bytes (1 MiB); an
#: intake batch for one partition is split into as many messages as it takes.
FORWARD_MAX_BYTES = 512 * 1024
#: Every by-visitor partition gets the intake's progress report at least this often, with
#: events or alone: a partition hearing nothing would hold its watermark (and sessions).
REPORT_INTERVAL_S = 1.0


class Topic(Protocol):
    """A topic the forwarder sends to (a Faust topic, or a list in a test)."""

    async def send(
        self, *, key: bytes | None = None, value: bytes | None = None, partition: int | None = None
    ) -> Awaitable[Any]:
        """Send one record; returns its delivery (awaited before the batch is committed)."""


class IntakeProgress(Protocol):
    """What the batch handlers ask the intake (``IntakeConsumer``): progress and epochs."""

    @property
    def epochs(self) -> Mapping[int, int]:
        """Direct mode: input partition -> epoch of the start its records now follow."""

    async def report(self, tops: Mapping[int, int | None]) -> ProgressReport | None:
        """The progress report covering a batch whose highest event times are ``tops``."""


@dataclass(frozen=True, slots=True)
class DirectBatch:
    """Direct mode: what a batch brings to the local partition states, by partition.

    ``events`` and ``sources`` are the accepted events of each input partition (which is
    also their state partition) with their sources; ``rejected`` its rejections and
    misplaced events with their records, to dead-letter; ``ends`` the offset after the
    last record read of each; ``report`` the intake's progress report, for every state.
    """

    events: dict[int, list[Event]]
    sources: dict[int, list[Source]]
    rejected: dict[int, list[tuple[Rejection, Any]]]
    ends: dict[int, int]
    report: ProgressReport | None


class BatchHandler:
    """What both batch handlers share: the topics they send to and the reports sent."""

    def __init__(
        self,
        settings: Settings,
        metrics: JourneyMetrics,
        by_visitor: Topic,
        dead_letters: Topic,
        intake: IntakeProgress,
    ) -> None:
        self._metrics = metrics
        self._partitions = settings.partitions
        self._by_visitor = by_visitor
        self._dead_letters = dead_letters
        self._intake = intake
        self._input_topic = encode_topic(settings.input_topic)
        pii = settings.pseudonymiser()
        #: The intake's parser: ``parse_payload`` itself, or under JOURNEY_PII hash/drop the
        #: one that also pseudonymises (decided once, so keep costs no branch per record).
        self._parse: Callable[[bytes, int], IntakeResult] = (
            parse_payload if pii is None else pii.parse
        )
        #: By-visitor partition -> monotonic time a progress report was last sent to it.
        self.reported: dict[int, float] = {}

    async def _dead_letter(self, rejection: Rejection, record: Any, now_ms: int) -> Any:
        """Count a rejection and send it to the dead-letter topic; returns the delivery."""
        self._metrics.count_rejection(rejection.reason)
        return await self._dead_letters.send(value=rejection_record(rejection, record, now_ms))

    async def _send(self, partition: int, chunk: bytes, report: bytes | None) -> Any:
        """Send one by-visitor message; returns its delivery future."""
        value = forwarded_message(self._input_topic, chunk, report)
        key = str(partition).encode()
        return await self._by_visitor.send(key=key, value=value, partition=partition)

    async def _report_alone(
        self, sends: list[Any], report: bytes | None, skip: Iterable[int], sent_s: float
    ) -> None:
        """The report, alone, to every partition not in ``skip`` that waited long enough."""
        if report is None:
            return
        reported = self.reported
        skipped = set(skip)
        for partition in range(self._partitions):
            if partition not in skipped and sent_s - reported.get(partition, 0.0) >= (
                REPORT_INTERVAL_S
            ):
                sends.append(await self._send(partition, b"[]", report))
                reported[partition] = sent_s


class Forwarder(BatchHandler):
    """Validates intake batches: rejections to the dead-letter topic, events on by visitor.

    :meth:`forward` is the intake's batch handler when the input goes through the
    by-visitor topic (the default).
    """

    def __init__(
        self,
        settings: Settings,
        metrics: JourneyMetrics,
        by_visitor: Topic,
        dead_letters: Topic,
        intake: IntakeProgress,
    ) -> None:
        super().__init__(settings, metrics, by_visitor, dead_letters, intake)
        #: visitor key -> by-visitor partition, hashed once per busy visitor, not per event.
        self._partition_of = PartitionCache(settings.partitions)

    async def forward(self, batch: Sequence[Any]) -> None:
        """Validate a batch of input records and forward it, one message per partition.

        Rejections go to the dead-letter topic; accepted events, each with its source
        (input partition, offset, index in the message), are grouped by the partition
        their visitor hashes to. The last message to each partition carries the intake's
        progress report, which covers this batch; a partition that got no events hears
        the report alone, at least every ``REPORT_INTERVAL_S`` (also when the batch is
        empty: that is how idle input keeps the watermark moving). Metrics are counted
        once per batch and type.
        """
        metrics = self._metrics
        partition_of = self._partition_of
        now_ms = int(time.time() * 1000)
        groups: dict[int, list[bytes]] = defaultdict(list)
        tops: dict[int, int | None] = {}
        sends = []
        accepted: list[Event] = []
        for record in batch:
            payload = record.value if isinstance(record.value, bytes) else b""
            result = self._parse(payload, now_ms)
            for rejection in result.rejections:
                sends.append(await self._dead_letter(rejection, record, now_ms))
            source, offset = record.partition, record.offset
            top = tops.get(source)
            accepted += result.events
            for ev, index in zip(result.events, _accepted_indices(result), strict=True):
                ts = ev.ts_ms
                if top is None or ts > top:
                    top = ts
                groups[partition_of(ev.visitor_key)].append(
                    encode_forwarded(ev, source, offset, index)
                )
            tops[source] = top
        _count_events(metrics, accepted, now_ms)
        report = await self._intake.report(tops)
        encoded_report = encode_report(report) if report is not None else None
        sent_s = time.monotonic()
        for partition, encoded in groups.items():
            chunks = chunk_forwarded(encoded, FORWARD_MAX_BYTES)
            for n, chunk in enumerate(chunks, start=1):
                if n > 1:
                    # One chunk at a time: a later chunk delivered after an earlier one failed
                    # would make the re-read copies of the earlier one look forwarded twice.
                    await sends[-1]
                last = n == len(chunks)
                sends.append(await self._send(partition, chunk, encoded_report if last else None))
            self.reported[partition] = sent_s
        await self._report_alone(sends, encoded_report, groups.keys(), sent_s)
        # Delivered before the batch's offsets are committed: a crash re-forwards, never loses.
        await asyncio.gather(*sends)
        if batch:
            metrics.batches.inc()


class DirectIntake(BatchHandler):
    """Direct mode: validates intake batches and applies them to the local partition states.

    :meth:`take` is the intake's batch handler when the input is keyed by visitor
    (``JOURNEY_INPUT_KEYED_BY_VISITOR``); the applied output goes to the ``Publisher``, the
    input applied to the ``Flusher`` (to commit with the next checkpoint).
    """

    def __init__(
        self,
        settings: Settings,
        metrics: JourneyMetrics,
        by_visitor: Topic,
        dead_letters: Topic,
        intake: IntakeProgress,
        runtime: WorkerRuntime,
        publisher: Publisher,
        flusher: Flusher,
    ) -> None:
        super().__init__(settings, metrics, by_visitor, dead_letters, intake)
        self._input_topic_name = settings.input_topic
        self._runtime = runtime
        self._publisher = publisher
        self._flusher = flusher

    async def take(self, batch: Sequence[Any]) -> None:
        """Validate a batch and apply its events to the partitions' states here.

        No hop: the events of input partition i go to state partition i, which Faust
        assigned to this worker with its table (the intake reads only those). Records of a
        partition whose state is not loaded, or was loaded again since the intake's
        position was set (``epoch``), are left alone: nothing of them is applied nor
        committed, and the owner reads them again from the state's checkpoint. An event
        whose visitor hashes to another partition than the one it came in is
        dead-lettered as ``not_keyed_by_visitor`` (its visitor's state lives elsewhere).
        The progress report goes to every local state at once (:meth:`_apply`), and
        through the by-visitor topic to the other workers' states (every
        ``REPORT_INTERVAL_S``).
        """
        now_ms = int(time.time() * 1000)
        epochs = self._intake.epochs
        states = self._runtime.partitions
        events_of: dict[int, list[Event]] = {}
        sources_of: dict[int, list[Source]] = {}
        ends: dict[int, int] = {}
        tops: dict[int, int | None] = {}
        sends: list[Any] = []
        #: Rejections by input partition, dead-lettered once their partition is applied.
        rejected: dict[int, list[tuple[Rejection, Any]]] = {}
        #: Accepted events, and for each: (its record, its index in the message, a single
        #: event?). The usual message is one valid event: the loops keep that case short.
        taken: list[Event] = []
        origins: list[tuple[Any, int, bool]] = []
        last: int | None = None
        usable = False
        for record in batch:
            source = record.partition
            if source != last:  # a batch holds each partition's records together
                last = source
                state = states.get(source)
                usable = state is not None and state.epoch == epochs.get(source)
                if usable:
                    tops.setdefault(source, None)
            if not usable:
                continue
            ends[source] = record.offset + 1
            value = record.value
            result = self._parse(value if isinstance(value, bytes) else b"", now_ms)
            events = result.events
            if result.rejections:
                for rejection in result.rejections:
                    rejected.setdefault(source, []).append((rejection, record))
                for ev, index in zip(events, _accepted_indices(result), strict=True):
                    taken.append(ev)
                    origins.append((record, index, False))
            elif len(events) == 1:
                taken.append(events[0])
                origins.append((record, 0, True))
            else:
                for index, ev in enumerate(events):
                    taken.append(ev)
                    origins.append((record, index, False))
        # Where each visitor belongs, for the whole batch at once (most live keys are new).
        homes = partitions_for_keys([ev.visitor_key.encode() for ev in taken], self._partitions)
        last = None
        evs: list[Event] = []
        srcs: list[Source] = []
        for ev, (record, index, single), home in zip(taken, origins, homes, strict=True):
            source = record.partition
            if home != source:
                rejection = _not_keyed(ev, record.value, None if single else index)
                rejected.setdefault(source, []).append((rejection, record))
                continue
            if source != last:
                last = source
                evs = events_of.setdefault(source, [])
                srcs = sources_of.setdefault(source, [])
            evs.append(ev)
            srcs.append((source, record.offset, index))
        for source, evs in events_of.items():
            tops[source] = max(ev.ts_ms for ev in evs)
        report = await self._intake.report(tops)
        await self._apply(DirectBatch(events_of, sources_of, rejected, ends, report), sends)
        encoded_report = encode_report(report) if report is not None else None
        await self._report_alone(sends, encoded_report, (), time.monotonic())
        await asyncio.gather(*sends)
        if batch:
            self._metrics.batches.inc()

    async def _apply(self, batch: DirectBatch, sends: list[Any]) -> None:
        """A batch's events and progress report to every local state, under the lock.

        Only partitions whose state is still the one the batch was read for (``epoch``)
        take it: their events are applied and counted and their rejections dead-lettered
        (deliveries added to ``sends``) here. The records of a partition revoked, or
        loaded again, while the batch waited for the lock are read again, and handled, by
        their new owner: counting or dead-lettering them here too would count them twice.
        """
        runtime = self._runtime
        publisher = self._publisher
        flusher = self._flusher
        epochs = self._intake.epochs
        async with runtime.lock:
            now_ms = int(time.time() * 1000)
            applied: list[Event] = []
            for partition, state in list(runtime.partitions.items()):
                if state.epoch != epochs.get(partition):
                    continue  # loaded again meanwhile: its input is read again from the start
                events = batch.events.get(partition, [])
                applied += events
                for rejection, record in batch.rejected.get(partition, ()):
                    sends.append(await self._dead_letter(rejection, record, now_ms))
                if events or batch.report is not None:
                    sources = batch.sources.get(partition, [])
                    out = state.apply_direct(
                        self._input_topic_name, events, sources, batch.report, now_ms
                    )
                    await publisher.publish(out)
                    flusher.applied_direct(len(events))
                if partition in batch.ends:
                    flusher.commit_later(partition, batch.ends[partition])
            _count_events(self._metrics, applied, now_ms)
            if flusher.due():
                await flusher.flush()


def _count_events(metrics: JourneyMetrics, events: list[Event], now_ms: int) -> None:
    """Count taken events by type and observe their lag, once per batch.

    The lag is the wall clock minus the event time, in seconds, at least 0.
    """
    if not events:
        return
    metrics.count_events(Counter(ev.event_type for ev in events))
    metrics.event_lag.observe_many(
        (now_ms - ev.ts_ms) / 1000 if ev.ts_ms < now_ms else 0.0 for ev in events
    )


def _not_keyed(event: Event, payload: bytes, index: int | None) -> Rejection:
    """The dead-letter entry of an event that came in another partition than its visitor's.

    A batch element is re-serialised from the accepted event (the envelope's raw element
    is not kept once it decoded).
    """
    raw = payload if index is None else orjson.dumps(event.to_dict())
    return Rejection(NOT_KEYED_BY_VISITOR, raw, index)


def _accepted_indices(result: IntakeResult) -> Iterable[int]:
    """Index of each accepted event in its message's batch envelope (0 for a single event).

    Rejected elements keep their index in their ``Rejection``; the accepted ones are the
    rest, in order. The index is part of an event's source, so it must not depend on
    which neighbours were accepted.
    """
    rejected = {r.index for r in result.rejections if r.index is not None}
    if not rejected:
        return range(len(result.events))
    return [i for i in range(len(result.events) + len(rejected)) if i not in rejected]
