"""The Faust worker: two thin agents around the pure engine.

``intake`` reads the input topic in batches, validates every message (rejections go to
the dead-letter topic with their reason), and forwards the accepted events grouped by the
partition their visitor hashes to: one message per partition per batch. That is the
repartition by visitor key (producers may key by anything) and it turns a stream of small
messages into few large ones, so the per-message cost of Faust is paid once per batch.

``sessionize`` reads those per-partition batches; each message is applied to that
partition's ``PartitionState`` (sessionizer + offsets), its rows are buffered in the
ClickHouse sink and its transitions and late events are published at once. At every flush,
in this order: rows to ClickHouse, session rows to the sessions topic, changed visitor
records to the Faust table's changelog, and only then the messages are acknowledged, so
Kafka commits only offsets whose effects are durable. A crash anywhere replays at most the
unacknowledged messages; the per-visitor applied offset skips what the checkpoint already
holds and ClickHouse rows are replaced, not added: nothing lost, nothing counted twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import faust
import orjson
from kafka.partitioner.default import murmur2

from streams.engine.intake import parse_payload
from streams.engine.sessionizer import EngineOutput, SessionConfig
from streams.engine.stages import StageRules
from streams.metrics import JourneyMetrics
from streams.settings import Settings
from streams.sink import ClickHouseSink
from streams.worker.codec import decode_forwarded, encode_forwarded, rejection_record
from streams.worker.partition import WATERMARK_KEY, Checkpoint, PartitionState

log = logging.getLogger(__name__)


def partition_for(visitor_key: str, partitions: int) -> int:
    """Kafka's default partitioner (murmur2), so our routing matches keyed producers."""
    hashed: int = murmur2(visitor_key.encode())
    return (hashed & 0x7FFFFFFF) % partitions


@dataclass
class WorkerRuntime:
    """Mutable state shared by the agents and timers of one worker process."""

    settings: Settings
    config: SessionConfig
    rules: StageRules
    metrics: JourneyMetrics
    sink: ClickHouseSink
    partitions: dict[int, PartitionState] = field(default_factory=dict)
    unacked: list[tuple[Any, Any]] = field(default_factory=list)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    stopping: bool = False
    counted_orders: OrderedDict[str, float] = field(default_factory=OrderedDict)


#: Order keys remembered for the revenue counter (an order row is re-emitted every time its
#: session changes; the counter must add each order once). Bounded: the oldest are dropped.
COUNTED_ORDERS_MAX = 200_000


def build_app(runtime: WorkerRuntime) -> faust.App:
    """The Faust app with its topics, table, agents and timers."""
    settings = runtime.settings
    metrics = runtime.metrics
    sink = runtime.sink
    n_partitions = settings.partitions
    app = faust.App(
        settings.app_id,
        broker=[f"kafka://{host.strip()}" for host in settings.brokers.split(",")],
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
    )
    raw: dict[str, Any] = {"key_serializer": "raw", "value_serializer": "raw"}
    input_topic = app.topic(settings.input_topic, **raw)
    by_visitor = app.topic(
        f"{settings.app_id}-events-by-visitor", partitions=n_partitions, internal=True, **raw
    )
    dlq = app.topic(settings.dlq_topic, **raw)
    late_topic = app.topic(settings.late_topic, **raw)
    sessions_topic = app.topic(settings.sessions_topic, **raw)
    transitions_topic = app.topic(settings.transitions_topic, **raw)
    visitors = app.Table(
        "visitors", partitions=n_partitions, default=None, key_type=bytes, value_type=bytes
    )

    @app.agent(input_topic)
    async def intake(stream: Any) -> None:
        async for batch in stream.take_events(settings.intake_batch, within=0.1):
            now_ms = int(time.time() * 1000)
            groups: dict[int, list[bytes]] = defaultdict(list)
            sends = []
            for event in batch:
                payload = event.value if isinstance(event.value, bytes) else b""
                result = parse_payload(payload, now_ms)
                for rejection in result.rejections:
                    metrics.rejected.labels(rejection.reason).inc()
                    record = rejection_record(rejection, event.message, now_ms)
                    sends.append(await dlq.send(value=record))
                for ev in result.events:
                    metrics.events.labels(ev.event_type).inc()
                    metrics.event_lag.observe(max(0.0, (now_ms - ev.ts_ms) / 1000))
                    groups[partition_for(ev.visitor_key, n_partitions)].append(encode_forwarded(ev))
            for partition, encoded in groups.items():
                value = b"[" + b",".join(encoded) + b"]"
                sends.append(
                    await by_visitor.send(
                        key=str(partition).encode(), value=value, partition=partition
                    )
                )
            # Delivered before the batch is acknowledged: a crash re-forwards, never loses.
            await asyncio.gather(*sends)
            metrics.batches.inc()

    @app.agent(by_visitor)
    async def sessionize(stream: Any) -> None:
        manual = stream.noack()
        async for event in manual.events():
            partition = event.message.partition
            events = decode_forwarded(event.value)
            async with runtime.lock:
                state = runtime.partitions.get(partition)
                if state is None:
                    state = _load_partition(runtime, visitors, partition)
                out = state.apply(events, event.message.offset, int(time.time() * 1000))
                await _publish(runtime, out, late_topic, transitions_topic)
                runtime.unacked.append((manual, event))
                if sink.due():
                    await _flush(runtime, visitors, sessions_topic, app)

    @app.timer(interval=0.5)  # type: ignore[untyped-decorator]
    async def tick() -> None:
        now_ms = int(time.time() * 1000)
        async with runtime.lock:
            for state in runtime.partitions.values():
                out = state.advance(now_ms)
                await _publish(runtime, out, late_topic, transitions_topic)
                metrics.watermark_lag.set(
                    max(0.0, (now_ms - state.sessionizer.watermark_ms) / 1000)
                )
            metrics.open_sessions.set(sum(s.open_sessions for s in runtime.partitions.values()))
            if sink.due() or (runtime.unacked and sink.pending == 0):
                await _flush(runtime, visitors, sessions_topic, app)
        _update_consumer_lag(app, metrics, settings.input_topic)

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def on_revoked(app: faust.App, revoked: Iterable[Any], **kwargs: Any) -> None:
        # Everything applied so far becomes durable before another worker takes over.
        async with runtime.lock:
            await _flush(runtime, visitors, sessions_topic, app)
            for tp in revoked:
                if tp.topic == by_visitor.get_topic_name():
                    runtime.partitions.pop(tp.partition, None)

    return app


def _load_partition(runtime: WorkerRuntime, table: Any, partition: int) -> PartitionState:
    """Rebuild a partition's state from the table records Faust recovered for it."""
    n = runtime.settings.partitions
    records = [
        (key, value)
        for key, value in table.data.items()
        if value is not None
        and not key.startswith(b"\x00")
        and partition_for(key.decode(), n) == partition
    ]
    raw_watermark = table.data.get(_watermark_key(partition))
    if raw_watermark is not None:
        records.append((WATERMARK_KEY, raw_watermark))
    state = PartitionState(partition, runtime.config, runtime.rules, records)
    runtime.partitions[partition] = state
    return state


def _watermark_key(partition: int) -> bytes:
    """Table key of a partition's watermark (visitor keys never start with NUL)."""
    return b"\x00watermark:" + str(partition).encode()


async def _publish(
    runtime: WorkerRuntime, out: EngineOutput, late_topic: Any, transitions: Any
) -> None:
    """Count the output in Prometheus, buffer its rows, publish transitions and late events."""
    metrics = runtime.metrics
    runtime.sink.add(out.sessions, out.removed_session_ids, out.orders)
    if out.duplicates:
        metrics.duplicates.inc(out.duplicates)
    if out.opened:
        metrics.sessions_started.inc(out.opened)
    for row in out.sessions:
        if row.closed:
            metrics.sessions_closed.labels(row.furthest_stage).inc()
            if row.has_cart:
                metrics.cart_sessions_closed.inc()
                if not row.converted:
                    metrics.carts_abandoned.inc()
    for transition in out.transitions:
        if transition.kind == "stage":
            metrics.stage_reached.labels(transition.stage).inc()
            if transition.stage == "converted":
                metrics.conversions.inc()
        await transitions.send(
            key=transition.visitor_key.encode(), value=orjson.dumps(transition.as_dict())
        )
    counted = runtime.counted_orders
    for order in out.orders:
        before = counted.pop(order.order_key, 0.0)
        counted[order.order_key] = order.revenue
        if order.revenue > before:  # a new order, or its earliest purchase changed
            metrics.revenue.inc(order.revenue - before)
    while len(counted) > COUNTED_ORDERS_MAX:
        counted.popitem(last=False)
    for ev in out.late:
        metrics.late.inc()
        await late_topic.send(key=ev.visitor_key.encode(), value=orjson.dumps(ev.to_dict()))


async def _flush(runtime: WorkerRuntime, table: Any, sessions_topic: Any, app: faust.App) -> None:
    """Rows to ClickHouse, then checkpoints to the changelog, then acknowledge messages."""
    sink = runtime.sink
    rows = list(sink.pending_sessions())
    if not await sink.flush(should_stop=lambda: runtime.stopping):
        return
    for row in rows:
        await sessions_topic.send(key=row.session_id.encode(), value=orjson.dumps(row.as_dict()))
    for state in runtime.partitions.values():
        _write_checkpoint(table, state.checkpoint())
    await app.producer.flush()
    unacked, runtime.unacked = runtime.unacked, []
    for stream, event in unacked:
        await stream.ack(event)


def _write_checkpoint(table: Any, checkpoint: Checkpoint) -> None:
    """Write records to the table store and its changelog, in the partition they belong to."""
    for key, value in checkpoint.writes:
        store_key = _watermark_key(checkpoint.partition) if key == b"" else key
        if value is None:
            table.data.pop(store_key, None)
        else:
            table.data[store_key] = value
        table.send_changelog(checkpoint.partition, store_key, value)


def _update_consumer_lag(app: faust.App, metrics: JourneyMetrics, topic: str) -> None:
    """Consumer lag per input partition: high watermark minus the next offset to read."""
    consumer: Any = app.consumer
    try:
        assignment = consumer.assignment()
    except Exception:  # not subscribed yet during start-up or a rebalance
        return
    for tp in assignment:
        if tp.topic != topic:
            continue
        highwater = consumer.highwater(tp)
        position = consumer._read_offset.get(tp)
        if highwater is None:
            continue
        lag = highwater - (position + 1 if position is not None else 0)
        metrics.consumer_lag.labels(str(tp.partition)).set(max(0, lag))
