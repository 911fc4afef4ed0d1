"""The Faust worker: two thin agents around the pure engine, wired to the worker's classes.

``intake`` reads the input topic in batches; the ``Forwarder`` validates every message
(rejections go to the dead-letter topic with their reason) and forwards the accepted
events grouped by the partition their visitor hashes to: one message per partition per
batch. With input keyed by visitor the ``DirectIntake`` validates them and applies them
here instead.

``sessionize`` reads those per-partition batches; each message is applied to that
partition's ``PartitionState`` (sessionizer + offsets, loaded by the ``PartitionLoader``),
the ``Publisher`` buffers its rows in the ClickHouse sink and publishes its transitions and
late events within a tick, and ``SkippedMessages`` applies first any message the consumer
skipped. At every flush (``Flusher``), in this order: rows to ClickHouse, session rows to
the sessions topic, changed visitor records to the Faust table's changelog, and only then
the messages are acknowledged, so Kafka commits only offsets whose effects are durable. A
crash anywhere replays at most the unacknowledged messages; the per-visitor applied
offset skips what the checkpoint already holds and ClickHouse rows are replaced, not
added: nothing lost, nothing counted twice.

Here only the wiring: the Faust app, its topics and table, and the agent, timer and
rebalance bodies, which take the lock (``WorkerRuntime.lock``) and call the classes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

import faust
from faust.types import TP
from prometheus_client import Gauge

from streams.engine.stages import StageRules
from streams.engine.state import Corrupt
from streams.kafka_connection import client_config
from streams.metrics import JourneyMetrics
from streams.settings import Settings
from streams.sink import ClickHouseSink
from streams.worker.changelog import ScreenedTable
from streams.worker.codec import NOTHING, decode_forwarded
from streams.worker.committed import read_committed_transport
from streams.worker.customers import CustomerSignals
from streams.worker.flusher import Flusher
from streams.worker.forwarder import DirectIntake, Forwarder
from streams.worker.intake import IntakeConsumer
from streams.worker.loader import PartitionLoader
from streams.worker.output import OutputProducer, OutputTopic
from streams.worker.publisher import CorruptRecord, Publisher
from streams.worker.repair import SkippedMessages, TopicReader, waiting
from streams.worker.runtime import WorkerRuntime, exit_unrecoverable
from streams.worker.topics import by_visitor_topic, customer_signals_topic

log = logging.getLogger(__name__)


def build_app(
    settings: Settings,
    rules: StageRules,
    metrics: JourneyMetrics,
    sink: ClickHouseSink,
    output: OutputProducer,
    reader: TopicReader,
) -> faust.App:
    """The Faust app with its topics, table, agents and timers.

    ``reader`` reads the by-visitor topic outside the consumer group (``GapFetcher``).
    """
    n_partitions = settings.partitions
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
    if output.transactional:
        # The table's changelog is written in transactions: recover committed records only.
        app.transport = read_committed_transport(settings)(app.conf.broker_consumer, app)
    raw: dict[str, Any] = {"key_serializer": "raw", "value_serializer": "raw"}
    by_visitor = app.topic(
        by_visitor_topic(settings),
        partitions=n_partitions,
        internal=True,
        **raw,
    )
    dlq = app.topic(settings.dlq_topic, **raw)
    # Recovered with corrupt records left out (worker/changelog.py).
    visitors = ScreenedTable(
        app,
        name="visitors",
        beacon=app.tables.beacon,
        partitions=n_partitions,
        default=None,
        key_type=bytes,
        value_type=bytes,
    )
    app.tables.add(visitors)

    direct = settings.direct_input()
    if settings.input_keyed_by_visitor and not direct:
        log.warning(
            "JOURNEY_INPUT_KEYED_BY_VISITOR is ignored with JOURNEY_PII=%s: the input is "
            "partitioned by raw visitor keys, the state by their pseudonyms, so events take "
            "the by-visitor topic",
            settings.pii,
        )
    runtime = WorkerRuntime()
    # The intake hands each batch to its handler, which asks the intake for its progress.
    intake = IntakeConsumer(settings, lambda batch: handle_batch(batch), direct=direct)
    publisher = Publisher(settings, metrics, sink, output)
    # The customer stage reads the signals of the partitions loaded here (worker/customers.py).
    customer_signals = CustomerSignals(runtime, publisher)
    signals_reader = IntakeConsumer(
        settings,
        customer_signals.take,
        direct=True,
        topic=customer_signals_topic(settings),
        role="customers",
        read_committed=output.transactional,
    )
    customer_signals.consumer = signals_reader
    flusher = Flusher(
        settings, runtime, sink, output, visitors, commit=intake.commit, metrics=metrics
    )
    loader = PartitionLoader(
        settings,
        settings.session_config(),
        rules,
        runtime,
        visitors,
        by_visitor_topic(settings),
        reader,
        own=intake.own,
        own_signals=signals_reader.own,
    )
    skipped_messages = SkippedMessages(reader, runtime, publisher, flusher, sink, metrics)
    #: Input partitions whose consumer lag gauge is set (see _update_consumer_lag).
    lag_partitions: set[int] = set()

    if direct:
        # Exactly once, its dead letters commit with the input offsets (the checkpoint's
        # transaction); through the hop the intake commits its own offsets after sending.
        dead_letters = OutputTopic(output, settings.dlq_topic) if output.transactional else dlq
        direct_intake = DirectIntake(
            settings, metrics, by_visitor, dead_letters, intake, runtime, publisher, flusher
        )
        handle_batch = direct_intake.take
    else:
        handle_batch = Forwarder(settings, metrics, by_visitor, dlq, intake).forward

    @app.task  # type: ignore[untyped-decorator]
    async def start_output() -> None:
        # Exactly once: starting the producer fences this worker's previous process and
        # aborts the transaction it left open, so read_committed consumers go on at once.
        if output.transactional:
            await output.start()

    @app.task  # type: ignore[untyped-decorator]
    async def run_intake() -> None:
        await intake.run(should_stop=lambda: runtime.stopping or bool(app.should_stop))

    @app.task  # type: ignore[untyped-decorator]
    async def run_customers() -> None:
        await signals_reader.run(should_stop=lambda: runtime.stopping or bool(app.should_stop))

    @app.agent(by_visitor)
    async def sessionize(stream: Any) -> None:
        manual = stream.noack()
        async for event in manual.events():
            partition = event.message.partition
            message = decode_forwarded(event.value)
            if direct and not isinstance(message, Corrupt) and message.events:
                exit_unrecoverable(
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
                    state = await loader.load(partition)
                offset = event.message.offset
                skipped = state.gap(offset)
                if skipped is not None:
                    await skipped_messages.repair(by_visitor.get_topic_name(), state, skipped)
                if isinstance(message, Corrupt):
                    # Dead-lettered (unless a checkpoint already took it: a redelivery), then
                    # applied as a message without events: its offset is taken and
                    # acknowledged like any other, so the partition goes on with the next.
                    if state.next_offset is None or offset >= state.next_offset:
                        where = (event.message.topic, partition, offset, event.message.key)
                        corrupt = CorruptRecord("by_visitor", *where, event.value, message)
                        await publisher.reject(corrupt)
                    message = NOTHING
                out = state.apply(message, offset, int(time.time() * 1000))
                await publisher.publish(out)
                flusher.applied(manual, event, len(message.events))
                if flusher.due():
                    await flusher.flush()

    @app.timer(interval=0.5)  # type: ignore[untyped-decorator]
    async def tick() -> None:
        async with runtime.lock:
            # Read the clock only now: the lock may have been held through a long flush.
            now_ms = int(time.time() * 1000)
            consumer: Any = app.consumer
            _update_consumer_lag(intake, metrics.consumer_lag, lag_partitions)
            by_visitor_name = by_visitor.get_topic_name()
            for partition, state in runtime.partitions.items():
                tp = TP(by_visitor_name, partition)
                waiting_offsets = waiting(consumer, tp, state.next_offset)
                if (
                    waiting_offsets
                    and skipped_messages.stalled(state, now_ms)
                    and _owned_and_recovered(runtime, app, tp)
                ):
                    # Messages wait in Kafka but none came for a while: the consumer skipped
                    # them (at the end of a partition no later message reveals the gap).
                    await skipped_messages.repair(by_visitor_name, state, waiting_offsets)
                metrics.watermark_lag.set(
                    max(0.0, (now_ms - state.sessionizer.watermark_ms) / 1000)
                )
            metrics.open_sessions.set(sum(s.open_sessions for s in runtime.partitions.values()))
            if flusher.due(checkpoint=True):
                await flusher.flush()
            else:
                # Transitions and late events leave within a tick, not only at a flush.
                await output.submit()

    @visitors.on_recover
    async def load_assigned() -> None:
        # Called by Faust once the table is recovered after every assignment. A partition is
        # otherwise loaded by its first message; after a restart, a partition whose input
        # was all acknowledged before the crash gets none, and its open sessions would never
        # be closed by the clock. Here the table is complete, so loading is safe.
        consumer: Any = app.consumer
        topic = by_visitor.get_topic_name()
        async with runtime.lock:
            for record in visitors.take_rejected():
                await publisher.reject(record)
            for tp in consumer.assignment():
                if tp.topic == topic and tp.partition not in runtime.partitions:
                    await loader.load(tp.partition)
            runtime.recovered = True

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def on_revoked(app: faust.App, revoked: Iterable[Any], **kwargs: Any) -> None:
        # Everything applied so far becomes durable before another worker takes over.
        runtime.revoking = True
        async with runtime.lock:
            runtime.revoking = False
            await flusher.flush(checkpoint=True, wait=True)
            gone = [tp.partition for tp in revoked if tp.topic == by_visitor.get_topic_name()]
            for partition in gone:
                runtime.partitions.pop(partition, None)
            if direct:
                intake.disown(gone)
            signals_reader.disown(gone)
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
            await flusher.flush(checkpoint=True, wait=True)
        await output.stop()

    return app


def _owned_and_recovered(runtime: WorkerRuntime, app: faust.App, tp: TP) -> bool:
    """True when ``tp`` is assigned to this worker and the table was recovered since."""
    if not runtime.recovered:
        return False
    try:
        return tp in app.consumer.assignment()
    except Exception:  # the consumer is between generations
        return False


def _update_consumer_lag(intake: IntakeConsumer, gauge: Gauge, shown: set[int]) -> None:
    """Consumer lag per input partition (high watermark minus the next offset to read).

    Sets the gauge of every assigned input partition and removes the gauges of partitions
    this worker no longer owns (a stale value would hold ConsumerLagHigh up). ``shown``:
    the partitions whose gauge is set, updated here.
    """
    lags = intake.lag_by_partition()
    for partition in shown - lags.keys():
        gauge.remove(str(partition))
    for partition, lag in lags.items():
        gauge.labels(str(partition)).set(lag)
    shown.clear()
    shown.update(lags)
