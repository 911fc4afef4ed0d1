"""The Faust worker: two thin agents around the pure engine.

``intake`` reads the input topic in batches, validates every message (rejections go to
the dead-letter topic with their reason), and forwards the accepted events grouped by the
partition their visitor hashes to: one message per partition per batch. That is the
repartition by visitor key (producers may key by anything) and it turns a stream of small
messages into few large ones, so the per-message cost of Faust is paid once per batch.

``sessionize`` reads those per-partition batches; each message is applied to that
partition's ``PartitionState`` (sessionizer + offsets), its rows are buffered in the
ClickHouse sink and its transitions and late events are published within a tick. At every flush,
in this order: rows to ClickHouse, session rows to the sessions topic, changed visitor
records to the Faust table's changelog, and only then the messages are acknowledged, so
Kafka commits only offsets whose effects are durable. A crash anywhere replays at most the
unacknowledged messages; the per-visitor applied offset skips what the checkpoint already
holds and ClickHouse rows are replaced, not added: nothing lost, nothing counted twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import Counter, OrderedDict, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

import faust
import orjson
from aiokafka.errors import KafkaError
from faust.types import TP

from streams.engine.events import Event
from streams.engine.intake import IntakeResult, Rejection, parse_payload
from streams.engine.rows import StageTransition, encode_json
from streams.engine.sessionizer import EngineOutput, SessionConfig
from streams.engine.stages import StageRules
from streams.errors import StreamError
from streams.kafka_connection import client_config
from streams.metrics import JourneyMetrics
from streams.settings import Settings
from streams.sink import ClickHouseSink, PendingRows
from streams.worker.codec import (
    Source,
    chunk_forwarded,
    decode_forwarded,
    encode_forwarded,
    encode_report,
    encode_topic,
    forwarded_message,
    rejection_record,
)
from streams.worker.intake import IntakeConsumer
from streams.worker.output import OutputProducer
from streams.worker.partition import (
    WATERMARK_KEY,
    Checkpoint,
    PartitionState,
    PendingCheckpoint,
)
from streams.worker.partitioning import PartitionCache, partition_for_key, partitions_for_keys
from streams.worker.repair import GapFetcher
from streams.worker.topics import by_visitor_topic

log = logging.getLogger(__name__)


@dataclass
class WorkerRuntime:
    """Mutable state shared by the agents and timers of one worker process."""

    settings: Settings
    config: SessionConfig
    rules: StageRules
    metrics: JourneyMetrics
    sink: ClickHouseSink
    output: OutputProducer
    repair: GapFetcher
    partitions: dict[int, PartitionState] = field(default_factory=dict)
    unacked: list[tuple[Any, Any]] = field(default_factory=list)
    #: Events in the unacknowledged messages (bounds the input a crash re-applies).
    unacked_events: int = 0
    #: Monotonic time of the last checkpoint (state to the changelog, input acknowledged).
    last_checkpoint: float = field(default_factory=time.monotonic)
    #: Wall time (ms) the last flush or repair ended: the agent may have waited for it.
    resumed_ms: int = 0
    #: Set when a revocation waits for the lock: a long repair stops for it (see _repair).
    revoking: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    stopping: bool = False
    #: True between the table's recovery for an assignment and the next revocation.
    recovered: bool = False
    intake: IntakeConsumer | None = None
    lag_partitions: set[int] = field(default_factory=set)
    #: By-visitor partition -> monotonic time a progress report was last sent to it.
    reported: dict[int, float] = field(default_factory=dict)
    counted_orders: OrderedDict[str, float] = field(default_factory=OrderedDict)
    #: The flush writing the rows it took (see _flush), if one is under way.
    inflight: asyncio.Future[bool] | None = None
    #: The checkpoint taken with a flush (see _flush), if one is under way.
    checkpointing: asyncio.Future[None] | None = None
    #: Set when a flush gave up its rows at shutdown: no later flush may write anything.
    abandoned: bool = False
    #: Direct mode: input partition -> next offset, for input applied since the last
    #: checkpoint (committed once the checkpoint holding its effects is written).
    uncommitted: dict[int, int] = field(default_factory=dict)
    #: Direct mode: the last epoch given to a loaded partition (see IntakeConsumer.own).
    epoch: int = 0


#: Order keys remembered for the revenue counter (an order row is re-emitted every time its
#: session changes; the counter must add each order once). Bounded: the oldest are dropped.
COUNTED_ORDERS_MAX = 200_000
#: Largest forwarded message: well under the broker's default message.max.bytes (1 MiB); an
#: intake batch for one partition is split into as many messages as it takes.
FORWARD_MAX_BYTES = 512 * 1024
#: Bound of each fetch of a repair of skipped messages; beyond it the worker exits.
REPAIR_TIMEOUT_S = 180.0
#: Messages waiting in Kafka with none delivered nor flushed for this long are read directly.
STALL_REPAIR_S = 15.0
#: Visitor states a checkpoint encodes before it lets the agent run (some 10-20 ms).
ENCODE_SLICE = 2_000
#: Changelog records appended before the agent may run.
APPEND_SLICE = 5_000
#: Rows (as many JOURNEY_FLUSH_ROWS) buffered beside a write under way that make the agent
#: wait for it (see _flush_due).
WAIT_FOR_WRITE_ROWS = 2
#: A checkpoint taking this long (it runs beside processing) is logged with where its time
#: went.
SLOW_CHECKPOINT_S = 5.0
#: A flush taking this long is logged.
SLOW_FLUSH_S = 1.0
#: Exit status when Kafka did not take the worker's output or skipped input cannot be read.
EXIT_OUTPUT_LOST = 75
#: Dead-letter reason of an event whose visitor hashes to another partition than the one it
#: came in, when the worker takes its input directly (JOURNEY_INPUT_KEYED_BY_VISITOR).
NOT_KEYED_BY_VISITOR = "not_keyed_by_visitor"
#: Every by-visitor partition gets the intake's progress report at least this often, with
#: events or alone: a partition hearing nothing would hold its watermark (and sessions).
REPORT_INTERVAL_S = 1.0


def build_app(runtime: WorkerRuntime) -> faust.App:
    """The Faust app with its topics, table, agents and timers."""
    settings = runtime.settings
    metrics = runtime.metrics
    n_partitions = settings.partitions
    #: visitor key -> by-visitor partition, hashed once per busy visitor, not per event.
    partition_of = PartitionCache(n_partitions)
    app = faust.App(
        settings.app_id,
        **client_config(settings, "faust"),
        store="memory://",
        datadir=f"{settings.data_dir}/faust",
        web_enabled=False,
        topic_partitions=n_partitions,
        topic_allow_declare=True,
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=1.0,
        stream_buffer_maxsize=settings.flush_rows,
        producer_max_request_size=4 * 1024 * 1024,
        table_standby_replicas=0,
        broker_session_timeout=settings.kafka_session_timeout_s,
        broker_heartbeat_interval=min(3.0, settings.kafka_session_timeout_s / 3),
        broker_rebalance_timeout=max(60.0, settings.kafka_session_timeout_s),
        # Faust would wait, at shutdown and rebalance, for every message an agent took to be
        # acknowledged; ours are acknowledged only by a flush, and at shutdown the timer that
        # flushes has already stopped, so SIGTERM hung forever. Redelivery is harmless here
        # (applied offsets, replacing rows); on_shutdown below flushes once instead.
        stream_wait_empty=False,
    )
    raw: dict[str, Any] = {"key_serializer": "raw", "value_serializer": "raw"}
    by_visitor = app.topic(
        by_visitor_topic(settings),
        partitions=n_partitions,
        internal=True,
        **raw,
    )
    dlq = app.topic(settings.dlq_topic, **raw)
    input_topic = encode_topic(settings.input_topic)
    visitors = app.Table(
        "visitors",
        partitions=n_partitions,
        default=None,
        key_type=bytes,
        value_type=bytes,
    )

    async def forward(batch: Sequence[Any]) -> None:
        """Validate a batch of input records and forward it, one message per partition.

        Rejections go to the dead-letter topic; accepted events, each with its source
        (input partition, offset, index in the message), are grouped by the partition
        their visitor hashes to. The last message to each partition carries the intake's
        progress report, which covers this batch; a partition that got no events hears
        the report alone, at least every ``REPORT_INTERVAL_S`` (also when the batch is
        empty: that is how idle input keeps the watermark moving). Metrics are counted
        once per batch and type.
        """
        now_ms = int(time.time() * 1000)
        groups: dict[int, list[bytes]] = defaultdict(list)
        tops: dict[int, int | None] = {}
        sends = []
        accepted: list[Event] = []
        for record in batch:
            payload = record.value if isinstance(record.value, bytes) else b""
            result = parse_payload(payload, now_ms)
            for rejection in result.rejections:
                sends.append(await dead_letter(rejection, record, now_ms))
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
        report = await intake.report(tops)
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
                sends.append(await send(partition, chunk, encoded_report if last else None))
            runtime.reported[partition] = sent_s
        await report_alone(sends, encoded_report, groups.keys(), sent_s)
        # Delivered before the batch's offsets are committed: a crash re-forwards, never loses.
        await asyncio.gather(*sends)
        if batch:
            metrics.batches.inc()

    async def dead_letter(rejection: Rejection, record: Any, now_ms: int) -> Any:
        """Count a rejection and send it to the dead-letter topic; returns the delivery."""
        metrics.rejected.labels(rejection.reason).inc()
        return await dlq.send(value=rejection_record(rejection, record, now_ms))

    async def send(partition: int, chunk: bytes, report: bytes | None) -> Any:
        """Send one by-visitor message; returns its delivery future."""
        value = forwarded_message(input_topic, chunk, report)
        key = str(partition).encode()
        return await by_visitor.send(key=key, value=value, partition=partition)

    async def report_alone(
        sends: list[Any], report: bytes | None, skip: Iterable[int], sent_s: float
    ) -> None:
        """The report, alone, to every partition not in ``skip`` that waited long enough."""
        if report is None:
            return
        reported = runtime.reported
        skipped = set(skip)
        for partition in range(n_partitions):
            if partition not in skipped and sent_s - reported.get(partition, 0.0) >= (
                REPORT_INTERVAL_S
            ):
                sends.append(await send(partition, b"[]", report))
                reported[partition] = sent_s

    async def take_direct(batch: Sequence[Any]) -> None:
        """Direct mode: validate a batch and apply its events to the partitions' states here.

        No hop: the events of input partition i go to state partition i, which Faust
        assigned to this worker with its table (the intake reads only those). Records of a
        partition whose state is not loaded, or was loaded again since the intake's
        position was set (``epoch``), are left alone: nothing of them is applied nor
        committed, and the owner reads them again from the state's checkpoint. An event
        whose visitor hashes to another partition than the one it came in is
        dead-lettered as ``not_keyed_by_visitor`` (its visitor's state lives elsewhere).
        The progress report goes to every local state at once, and through the
        by-visitor topic to the other workers' states (every ``REPORT_INTERVAL_S``).
        """
        now_ms = int(time.time() * 1000)
        epochs = intake.epochs
        states = runtime.partitions
        events_of: dict[int, list[Event]] = {}
        sources_of: dict[int, list[Source]] = {}
        ends: dict[int, int] = {}
        tops: dict[int, int | None] = {}
        sends = []
        #: Rejections by input partition, dead-lettered once their partition is applied.
        rejected: dict[int, list[tuple[Rejection, Any]]] = {}
        #: Accepted events: (event, its record, its index in the message, a single event?).
        taken: list[tuple[Event, Any, int, bool]] = []
        for record in batch:
            source = record.partition
            state = states.get(source)
            if state is None or state.epoch != epochs.get(source):
                continue
            ends[source] = record.offset + 1
            tops.setdefault(source, None)
            payload = record.value if isinstance(record.value, bytes) else b""
            result = parse_payload(payload, now_ms)
            single = not result.rejections and len(result.events) == 1
            for ev, index in zip(result.events, _accepted_indices(result), strict=True):
                taken.append((ev, record, index, single))
            for rejection in result.rejections:
                rejected.setdefault(source, []).append((rejection, record))
        # Where each visitor belongs, for the whole batch at once (most live keys are new).
        homes = partitions_for_keys([ev.visitor_key.encode() for ev, *_ in taken], n_partitions)
        for (ev, record, index, single), home in zip(taken, homes, strict=True):
            source = record.partition
            if home != source:
                rejection = _not_keyed(ev, record.value, None if single else index)
                rejected.setdefault(source, []).append((rejection, record))
                continue
            ts = ev.ts_ms
            top = tops[source]
            if top is None or ts > top:
                tops[source] = ts
            events_of.setdefault(source, []).append(ev)
            sources_of.setdefault(source, []).append((source, record.offset, index))
        report = await intake.report(tops)
        async with runtime.lock:
            now_ms = int(time.time() * 1000)
            applied: list[Event] = []
            for partition, state in list(runtime.partitions.items()):
                if state.epoch != epochs.get(partition):
                    continue  # loaded again meanwhile: its input is read again from the start
                events = events_of.get(partition, [])
                applied += events
                for rejection, record in rejected.get(partition, ()):
                    sends.append(await dead_letter(rejection, record, now_ms))
                if events or report is not None:
                    sources = sources_of.get(partition, [])
                    out = state.apply_direct(settings.input_topic, events, sources, report, now_ms)
                    await _publish(runtime, out)
                    runtime.unacked_events += len(events)
                if partition in ends:
                    runtime.uncommitted[partition] = ends[partition]
            # Counted (and rejections dead-lettered) once applied: the records of a
            # partition revoked while this batch waited for the lock are read again, and
            # handled, by their new owner.
            _count_events(metrics, applied, now_ms)
            if _flush_due(runtime):
                await _flush(runtime, visitors)
        encoded_report = encode_report(report) if report is not None else None
        await report_alone(sends, encoded_report, (), time.monotonic())
        await asyncio.gather(*sends)
        if batch:
            metrics.batches.inc()

    direct = settings.input_keyed_by_visitor
    intake = runtime.intake = IntakeConsumer(
        settings, take_direct if direct else forward, direct=direct
    )

    @app.task  # type: ignore[untyped-decorator]
    async def run_intake() -> None:
        await intake.run(should_stop=lambda: runtime.stopping or bool(app.should_stop))

    @app.agent(by_visitor)
    async def sessionize(stream: Any) -> None:
        manual = stream.noack()
        async for event in manual.events():
            partition = event.message.partition
            message = decode_forwarded(event.value)
            if direct and message.events:
                _exit_unrecoverable(
                    f"events arrived on {event.message.topic} while this worker takes its "
                    "input directly: another worker of this app runs without "
                    "JOURNEY_INPUT_KEYED_BY_VISITOR=true; every worker of an app needs the "
                    "same setting"
                )
            async with runtime.lock:
                state = runtime.partitions.get(partition)
                if state is None:
                    if not _owned_and_recovered(runtime, app, TP(event.message.topic, partition)):
                        # A message fetched before a rebalance, delivered after it: its
                        # partition is not ours (or its table not recovered yet). Applying it
                        # here once let the idle clock advance a partition this worker no
                        # longer owned, and that watermark reached the changelog. Left
                        # unacknowledged, it is delivered again to the owner, or repaired
                        # as skipped (PartitionState.gap).
                        continue
                    state = await _load_partition(runtime, visitors, partition)
                offset = event.message.offset
                skipped = state.gap(offset)
                if skipped is not None:
                    await _repair(runtime, visitors, by_visitor.get_topic_name(), state, skipped)
                out = state.apply(message, offset, int(time.time() * 1000))
                await _publish(runtime, out)
                runtime.unacked.append((manual, event))
                runtime.unacked_events += len(message.events)
                if _flush_due(runtime):
                    await _flush(runtime, visitors)

    @app.timer(interval=0.5)  # type: ignore[untyped-decorator]
    async def tick() -> None:
        async with runtime.lock:
            # Read the clock only now: the lock may have been held through a long flush.
            now_ms = int(time.time() * 1000)
            consumer: Any = app.consumer
            _update_consumer_lag(runtime)
            by_visitor_name = by_visitor.get_topic_name()
            for partition, state in runtime.partitions.items():
                tp = TP(by_visitor_name, partition)
                waiting = _waiting(consumer, tp, state.next_offset)
                if (
                    waiting
                    and _stalled(runtime, state, now_ms)
                    and _owned_and_recovered(runtime, app, tp)
                ):
                    # Messages wait in Kafka but none came for a while: the consumer skipped
                    # them (at the end of a partition no later message reveals the gap).
                    await _repair(runtime, visitors, by_visitor_name, state, waiting)
                metrics.watermark_lag.set(
                    max(0.0, (now_ms - state.sessionizer.watermark_ms) / 1000)
                )
            metrics.open_sessions.set(sum(s.open_sessions for s in runtime.partitions.values()))
            if _flush_due(runtime, checkpoint=True):
                await _flush(runtime, visitors)
            else:
                # Transitions and late events leave within a tick, not only at a flush.
                await runtime.output.submit()

    @visitors.on_recover
    async def load_assigned() -> None:
        # Called by Faust once the table is recovered after every assignment. A partition is
        # otherwise loaded by its first message; after a restart, a partition whose input
        # was all acknowledged before the crash gets none, and its open sessions would never
        # be closed by the clock. Here the table is complete, so loading is safe.
        consumer: Any = app.consumer
        topic = by_visitor.get_topic_name()
        async with runtime.lock:
            for tp in consumer.assignment():
                if tp.topic == topic and tp.partition not in runtime.partitions:
                    await _load_partition(runtime, visitors, tp.partition)
            runtime.recovered = True

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def on_revoked(app: faust.App, revoked: Iterable[Any], **kwargs: Any) -> None:
        # Everything applied so far becomes durable before another worker takes over.
        runtime.revoking = True
        async with runtime.lock:
            runtime.revoking = False
            await _flush(runtime, visitors, checkpoint=True, wait=True)
            gone = [tp.partition for tp in revoked if tp.topic == by_visitor.get_topic_name()]
            for partition in gone:
                runtime.partitions.pop(partition, None)
            if direct:
                intake.disown(gone)
            # Until the table is recovered for the next assignment, no message may load a
            # partition (see the sessionize agent).
            runtime.recovered = False

    @app.on_before_shutdown.connect  # type: ignore[arg-type]
    async def on_shutdown(app: faust.App, **kwargs: Any) -> None:
        # One last flush so that Faust commits what was applied. ``stopping`` turns the
        # flush's endless retry into a single attempt: with ClickHouse down the messages
        # stay unacknowledged and are redelivered to the next worker.
        runtime.stopping = True
        async with runtime.lock:
            await _flush(runtime, visitors, checkpoint=True, wait=True)
        await runtime.output.stop()

    return app


def _count_events(metrics: JourneyMetrics, events: list[Event], now_ms: int) -> None:
    """Count taken events by type and observe their lag, once per batch.

    The lag is the wall clock minus the event time, in seconds, at least 0.
    """
    if not events:
        return
    by_type: Counter[str] = Counter(ev.event_type for ev in events)
    for event_type, count in by_type.items():
        metrics.events.labels(event_type).inc(count)
    metrics.event_lag.observe_many(
        (now_ms - ev.ts_ms) / 1000 if ev.ts_ms < now_ms else 0.0 for ev in events
    )


def _visitor_of(transition: StageTransition) -> bytes:
    """Key of a transition record: its visitor."""
    return transition.visitor_key.encode()


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


def _owned_and_recovered(runtime: WorkerRuntime, app: faust.App, tp: TP) -> bool:
    """True when ``tp`` is assigned to this worker and the table was recovered since."""
    if not runtime.recovered:
        return False
    try:
        return tp in app.consumer.assignment()
    except Exception:  # the consumer is between generations
        return False


def _waiting(consumer: Any, tp: TP, expected: int | None) -> range | None:
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


def _stalled(runtime: WorkerRuntime, state: PartitionState, now_ms: int) -> bool:
    """True when the agent applied no message at all for ``STALL_REPAIR_S`` while free.

    Only then can messages waiting in Kafka have been skipped rather than be on their way:
    an agent busy with other partitions (a deep buffer while catching up) or waiting for
    the lock (a flush through a ClickHouse outage, another repair) is not stalled. While
    messages keep coming, a skip shows as a gap at the partition's next message anyway.
    """
    if state.next_offset is None:
        return False
    applied = max((other.applied_ms or 0) for other in runtime.partitions.values())
    last = max(applied, runtime.resumed_ms)
    return now_ms - last >= STALL_REPAIR_S * 1000


async def _load_partition(runtime: WorkerRuntime, table: Any, partition: int) -> PartitionState:
    """Rebuild a partition's state from the table records Faust recovered for it.

    A partition never checkpointed expects its messages from the start of the log: none
    was acknowledged, and a consumer that delivers a later one first has skipped some.
    """
    n = runtime.settings.partitions
    store = table.data
    # Faust's memory store keeps its items in a plain dict: read it directly (hot path).
    cold: Any = getattr(store, "data", store)
    records = []
    raw_watermark = cold.get(_watermark_key(partition))
    if raw_watermark is not None:
        records.append((WATERMARK_KEY, raw_watermark))
    state = PartitionState(
        partition,
        runtime.config,
        runtime.rules,
        records,
        loaded_ms=int(time.time() * 1000),
        cold=cold,
        owns=lambda raw: partition_for_key(raw, n) == partition,
        direct=runtime.settings.input_keyed_by_visitor,
    )
    if state.checkpointed and state.recorded_direct != state.direct:
        _exit_unrecoverable(
            f"partition {partition} of app {runtime.settings.app_id!r} was run with "
            f"JOURNEY_INPUT_KEYED_BY_VISITOR={'true' if state.recorded_direct else 'false'}; "
            "an app keeps the mode of its first run (offsets in its state depend on it): "
            "set it back, or start a new JOURNEY_APP_ID"
        )
    if state.direct and runtime.intake is not None:
        runtime.epoch += 1
        state.epoch = runtime.epoch
        source = state.sources.get(partition)
        if state.input_topic != runtime.settings.input_topic:
            source = None
        runtime.intake.own(partition, state.epoch, None if source is None else source[0])
    if not state.checkpointed:
        topic = by_visitor_topic(runtime.settings)
        try:
            start = await asyncio.wait_for(
                runtime.repair.log_start(topic, partition), REPAIR_TIMEOUT_S
            )
        except (StreamError, KafkaError, TimeoutError):
            _exit_unrecoverable(f"the log start of {topic}[{partition}] could not be read")
        state.expect_from(start)
    runtime.partitions[partition] = state
    return state


def _watermark_key(partition: int) -> bytes:
    """Table key of a partition's watermark (visitor keys never start with NUL)."""
    return b"\x00watermark:" + str(partition).encode()


async def _repair(
    runtime: WorkerRuntime, table: Any, topic: str, state: PartitionState, skipped: range
) -> None:
    """Fetch and apply, in order, messages the consumer skipped before the current one.

    A long range (a partition never checkpointed applies its whole retained log) is
    flushed as it goes, like delivered messages, so its rows do not pile up in memory.
    It holds the lock throughout, so a revocation or a shutdown waiting for it makes the
    worker exit instead (as a crash: nothing past the last checkpoint was acknowledged).
    """
    log.warning(
        "consumer skipped messages %d-%d of %s[%d]; fetching and applying them",
        skipped.start, skipped.stop - 1, topic, state.partition,
    )  # fmt: skip
    batches = runtime.repair.batches(topic, state.partition, skipped)
    try:
        while True:
            if runtime.revoking or runtime.stopping:
                _exit_unrecoverable(
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
                _exit_unrecoverable("skipped messages could not be read")
            for offset, value in batch:
                out = state.apply(decode_forwarded(value), offset, int(time.time() * 1000))
                await _publish(runtime, out)
            runtime.metrics.skipped_messages.inc(len(batch))
            if runtime.sink.due():
                await _flush(runtime, table)
    finally:
        # Already closed after a normal end or a timeout; bounded for any other exit.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(batches.aclose(), REPAIR_TIMEOUT_S)
    runtime.resumed_ms = int(time.time() * 1000)


def _exit_unrecoverable(what: str) -> NoReturn:
    """Stop the way a crash does: continuing would lose events (see _flush)."""
    log.critical("%s; exiting without acknowledging input", what, exc_info=True)
    logging.shutdown()
    os._exit(EXIT_OUTPUT_LOST)


async def _publish(runtime: WorkerRuntime, out: EngineOutput) -> None:
    """Count the output in Prometheus, buffer its rows, publish transitions and late events."""
    metrics = runtime.metrics
    settings = runtime.settings
    output = runtime.output
    runtime.sink.add(out.sessions, out.removed_session_ids, out.orders, out.removed_starts)
    if out.duplicates:
        metrics.duplicates.inc(out.duplicates)
    if out.opened:
        metrics.sessions_started.inc(out.opened)
    for row in out.sessions:
        if row.closed:
            metrics.sessions_closed.labels(
                row.furthest_stage, "true" if row.converted else "false"
            ).inc()
            if row.has_cart:
                metrics.cart_sessions_closed.inc()
                if not row.converted:
                    metrics.carts_abandoned.inc()
    for transition in out.transitions:
        if transition.kind == "stage":
            metrics.stage_reached.labels(transition.stage).inc()
            if transition.stage == "converted":
                metrics.conversions.inc()
    if out.transitions:
        await output.send_keyed(
            settings.transitions_topic, out.transitions, _visitor_of, encode_json
        )
    counted = runtime.counted_orders
    for order in out.orders:
        before = counted.pop(order.order_key, 0.0)
        counted[order.order_key] = order.revenue
        if order.revenue > before:  # a new order, or its earliest purchase changed
            metrics.revenue.inc(order.revenue - before)
    while len(counted) > COUNTED_ORDERS_MAX:
        counted.popitem(last=False)
    if out.late:
        metrics.late.inc(len(out.late))
        for ev in out.late:
            await output.send(
                settings.late_topic, ev.visitor_key.encode(), orjson.dumps(ev.to_dict())
            )


def _checkpoint_due(runtime: WorkerRuntime) -> bool:
    """True when unacknowledged input waited a checkpoint interval or reached the cap.

    The cap is as many events as ``JOURNEY_FLUSH_ROWS`` per flush interval of the
    checkpoint interval: a backlog checkpoints about as often by count as live traffic
    does by time, relative to the flushes.
    """
    if not runtime.unacked and not runtime.uncommitted:
        return False
    settings = runtime.settings
    every = settings.checkpoint_every_s()
    waited = time.monotonic() - runtime.last_checkpoint
    cap = settings.flush_rows * max(1.0, every / settings.flush_interval_s)
    return waited >= every or runtime.unacked_events >= cap


def _flush_due(runtime: WorkerRuntime, checkpoint: bool = False) -> bool:
    """True when rows (or, with ``checkpoint``, a checkpoint) are due and may go now.

    They may when the previous flush's rows are written, or when the buffer is full.

    While a write is under way, the rows keep coalescing in the buffer and the flush
    waits for the next batch or tick after it: at 20,000 events/s a write (ClickHouse,
    the rollup refresh, the sessions topic) took 1-2 s, and waiting for it at every 2-s
    flush held the agent up for whatever it overran. Only a buffer of twice
    ``JOURNEY_FLUSH_ROWS`` makes the agent wait (the back-pressure while ClickHouse is
    slow or away).
    """
    sink = runtime.sink
    if not (sink.due() or (checkpoint and _checkpoint_due(runtime))):
        return False
    task = runtime.inflight
    if task is None or task.done():
        return True
    return sink.pending >= WAIT_FOR_WRITE_ROWS * runtime.settings.flush_rows


async def _flush(
    runtime: WorkerRuntime, table: Any, checkpoint: bool = False, wait: bool = False
) -> None:
    """Take the buffered rows (and, when due, a checkpoint) and write them beside processing.

    ClickHouse gets every flush interval's rows (dashboards stay live); the checkpoint
    (every changed visitor's record to the changelog) and the acknowledgement follow only
    every checkpoint interval (``Settings.checkpoint_every_s``), or when ``checkpoint`` is
    True (rebalance, shutdown). A visitor active for minutes is then serialised once per
    checkpoint instead of once per flush.

    Everything a flush writes is taken at once, here, under the lock: the rows, the
    changed visitors (``PartitionState.begin_checkpoint``: their states as they are now)
    and the messages to acknowledge. Two tasks then write them while the agent goes on
    applying messages: one the rows (ClickHouse and the sessions topic), the other, once
    those are written, the checkpoint (visitor records, partition records,
    acknowledgements). The next flush waits for the rows task only, so the agent waits on
    ClickHouse only when a flush is due before the previous one finished; the next
    checkpoint also waits for this one. Rows of a later flush may reach ClickHouse before
    this checkpoint is written, never the other way round. Safe because what a checkpoint
    holds is exactly the state the rows taken with it came from: messages applied after
    the take are neither in its records nor acknowledged by it, and a crash re-applies
    every unacknowledged message to the last checkpoint and rewrites the same rows.
    ``wait`` returns only when everything is written (rebalance, shutdown).
    """
    await _settle(runtime)
    due = checkpoint or _checkpoint_due(runtime)
    if due:
        await _settle_checkpoint(runtime)
    if runtime.abandoned:
        return  # a flush gave its rows up (stopping): nothing after it may be acknowledged
    rows = runtime.sink.take()
    # The rollups are refreshed with checkpoints (see ClickHouseSink.write), or at once
    # when no input waits for one (rows of sessions the clock closed while idle).
    defer = not due and bool(runtime.unacked or runtime.uncommitted)
    writing = runtime.inflight = asyncio.ensure_future(_write_rows(runtime, rows, defer))
    if due:
        checkpoints = [state.begin_checkpoint() for state in runtime.partitions.values()]
        unacked, runtime.unacked = runtime.unacked, []
        commits, runtime.uncommitted = runtime.uncommitted, {}
        runtime.unacked_events = 0
        runtime.last_checkpoint = time.monotonic()
        runtime.checkpointing = asyncio.ensure_future(
            _complete_checkpoint(runtime, table, writing, checkpoints, unacked, commits)
        )
    if wait:
        await _settle(runtime)
        await _settle_checkpoint(runtime)


async def _settle(runtime: WorkerRuntime) -> None:
    """Wait until the rows of the flush under way (if any) are written."""
    task, runtime.inflight = runtime.inflight, None
    await _finished(task, "a flush failed")


async def _settle_checkpoint(runtime: WorkerRuntime) -> None:
    """Wait until the checkpoint under way (if any) is written and its input acknowledged."""
    task, runtime.checkpointing = runtime.checkpointing, None
    await _finished(task, "a checkpoint failed")


async def _finished(task: asyncio.Future[Any] | None, failure: str) -> None:
    """Wait for ``task`` (if any); if it failed, stop the way a crash does."""
    if task is None:
        return
    try:
        await task
    except Exception:
        _exit_unrecoverable(failure)


async def _write_rows(runtime: WorkerRuntime, rows: PendingRows, defer_rollups: bool) -> bool:
    """Write a flush's rows; False if they were given up (stopping with ClickHouse away).

    The writer process publishes them to the sessions topic too (``SessionsPublisher``).
    """
    began = time.monotonic()
    if not await runtime.sink.write(rows, lambda: runtime.stopping, defer_rollups):
        # Stopping with ClickHouse away: these rows are given up, so no flush after this
        # one may checkpoint or acknowledge anything (its records and acknowledgements
        # would cover messages whose rows were never written); all is redelivered.
        runtime.abandoned = True
        return False
    runtime.resumed_ms = int(time.time() * 1000)
    await runtime.output.submit()
    took = time.monotonic() - began
    if took >= SLOW_FLUSH_S:
        log.warning(
            "slow flush: %.2f s for %d session rows to ClickHouse and the sessions topic",
            took, len(rows.sessions),
        )  # fmt: skip
    return True


async def _complete_checkpoint(
    runtime: WorkerRuntime,
    table: Any,
    writing: asyncio.Future[bool],
    checkpoints: list[PendingCheckpoint],
    unacked: list[tuple[Any, Any]],
    commits: dict[int, int],
) -> None:
    """Write what :func:`_flush` took for a checkpoint, once its rows are written.

    The visitor states are encoded a slice at a time, letting the agent apply messages in
    between (the store encodes a state it is about to change first; see
    ``PendingCheckpoint``), while the rows are being written: all at once, they held the
    event loop for up to a second with live traffic.
    """
    began = time.monotonic()
    for pending in checkpoints:
        for _ in range(len(pending.pending) // ENCODE_SLICE):
            pending.encode_some(ENCODE_SLICE)
            await asyncio.sleep(0)  # the agent may apply messages in between
    finished = [pending.finish() for pending in checkpoints]
    encoded = time.monotonic()
    if not await writing:
        return  # the rows were given up (see _write_rows): nothing may be acknowledged
    written = time.monotonic()
    try:
        records = await _write_checkpoints(runtime, table, finished)
        # Output records and changelog writes are acknowledged before the input is.
        await _deliver_output(runtime)
    except Exception:
        # Any failure here (a send timing out with the broker away, a record too large)
        # leaves the drained visitors unwritten: acknowledging anything later could lose
        # them, so stop the way a crash does.
        _exit_unrecoverable("checkpoint not written")
    delivered = time.monotonic()
    runtime.resumed_ms = int(time.time() * 1000)
    for stream, event in unacked:
        await stream.ack(event)
    if commits and runtime.intake is not None:
        await runtime.intake.commit(commits)
    took = time.monotonic() - began
    if took >= SLOW_CHECKPOINT_S:
        log.warning(
            "slow checkpoint: %.2f s (encoding %d records %.2f s, waiting for the rows "
            "%.2f s, records to Kafka %.2f s, %d messages acknowledged)",
            took, records, encoded - began, written - encoded, delivered - written,
            len(unacked),
        )  # fmt: skip


async def _write_checkpoints(
    runtime: WorkerRuntime, table: Any, checkpoints: list[Checkpoint]
) -> int:
    """Every partition's changed visitor records, delivered, then the partition records.

    A partition's record (its sources) must not be durable without the visitor records
    written before it. Returns the number of records written.
    """
    written = 0
    for cp in checkpoints:
        written += len(cp.writes)
        await _write_checkpoint(runtime, table, cp.partition, cp.visitors)
    owns = [(cp.partition, cp.own) for cp in checkpoints if cp.own is not None]
    if owns:
        await _deliver_output(runtime)
        for partition, own in owns:
            await _write_checkpoint(runtime, table, partition, [(WATERMARK_KEY, own)])
    return written


async def _deliver_output(runtime: WorkerRuntime) -> None:
    """Wait until Kafka has every output and changelog record sent so far, or exit."""
    try:
        await runtime.output.flush()
    except StreamError:
        # Kafka refused checkpoint or output records even after the client's retries. The
        # changed visitors were drained from the dirty set, so no later flush would write
        # them again, and acknowledging anything from now on could lose events. Stop the
        # way a crash does (no flush, no commit, nothing acknowledged); the restarted
        # worker recovers from the changelog and the redelivered input.
        _exit_unrecoverable("output not delivered")


async def _write_checkpoint(
    runtime: WorkerRuntime,
    table: Any,
    partition: int,
    writes: Sequence[tuple[bytes, bytes | None]],
) -> None:
    """Write records to the table store and its changelog, in the partition they belong to.

    The changelog records go through the output producer with an explicit partition: the
    same records Faust's ``send_changelog`` would write (key, raw value, ``None`` to
    delete), without its per-record bookkeeping. Faust recovers the table from them.
    """
    changelog = table.changelog_topic.get_topic_name()
    records: list[tuple[bytes, bytes | None]] = []
    for key, value in writes:
        if key == WATERMARK_KEY:
            store_key = _watermark_key(partition)
            table.data[store_key] = value
            records.append((store_key, value))
        else:
            records.append((key, value))  # already in the table's store (checkpoint)
    for at in range(0, len(records), APPEND_SLICE):
        if at:
            await asyncio.sleep(0)  # a slice at a time, so the agent is not held up
        await runtime.output.send_to_partition(
            changelog, partition, records[at : at + APPEND_SLICE]
        )


def _update_consumer_lag(runtime: WorkerRuntime) -> None:
    """Consumer lag per input partition (high watermark minus the next offset to read).

    Sets the gauge of every assigned input partition and removes the gauges of partitions
    this worker no longer owns (a stale value would hold ConsumerLagHigh up).
    """
    intake = runtime.intake
    lags = intake.lag_by_partition() if intake is not None else {}
    gauge = runtime.metrics.consumer_lag
    for partition in runtime.lag_partitions - lags.keys():
        gauge.remove(str(partition))
    for partition, lag in lags.items():
        gauge.labels(str(partition)).set(lag)
    runtime.lag_partitions = set(lags)
