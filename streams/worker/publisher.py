"""What becomes of the engine's output as soon as a message is applied.

Its rows go into the ClickHouse sink's buffer (written at the next flush), its stage
transitions and late events to their topics within a tick, and every counter it moves is
counted in Prometheus then, not at the flush.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, TypeVar

import orjson

from streams.engine.customers import CustomerTransition, encode_signal, signals_of
from streams.engine.rows import StageTransition, encode_json
from streams.engine.sessionizer import EngineOutput
from streams.engine.state import Corrupt
from streams.metrics import JourneyMetrics
from streams.settings import Settings
from streams.sink import ClickHouseSink
from streams.worker.codec import internal_rejection_record
from streams.worker.partitioning import partition_for_key
from streams.worker.topics import customer_signals_topic

log = logging.getLogger(__name__)

#: Order keys remembered for the revenue counter (an order row is re-emitted every time its
#: session changes; the counter must add each order once). Bounded: the oldest are dropped.
COUNTED_ORDERS_MAX = 200_000

T = TypeVar("T")
#: Which internal topic a corrupt record came from (the counter's ``topic`` label).
InternalTopic = Literal["by_visitor", "changelog", "customer_signals"]


@dataclass(frozen=True, slots=True)
class CorruptRecord:
    """A record of an internal topic that cannot be decoded, and where it was read."""

    kind: InternalTopic
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    corrupt: Corrupt


class TransitionOutput(Protocol):
    """Where transitions and late events go: the ``OutputProducer``, or a list in a test."""

    async def send_keyed(
        self,
        topic: str,
        items: Sequence[T],
        key: Callable[[T], bytes],
        value: Callable[[T], bytes],
    ) -> None:
        """Append a record per item, keyed ``key(item)``, valued ``value(item)``."""

    async def send(
        self, topic: str, key: bytes | None, value: bytes | None, partition: int | None = None
    ) -> None:
        """Append one record to ``topic``."""


class Publisher:
    """Counts, buffers and publishes the output of every message applied."""

    def __init__(
        self,
        settings: Settings,
        metrics: JourneyMetrics,
        sink: ClickHouseSink,
        output: TransitionOutput,
    ) -> None:
        self._settings = settings
        self._metrics = metrics
        self._sink = sink
        self._output = output
        self._counted_orders: OrderedDict[str, float] = OrderedDict()
        self._signals_topic = customer_signals_topic(settings)

    async def publish(self, out: EngineOutput) -> None:
        """Count the output in Prometheus, buffer its rows, publish transitions and late events."""
        metrics = self._metrics
        settings = self._settings
        output = self._output
        self._sink.add(out.sessions, out.removed_session_ids, out.orders, out.removed_starts)
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
            # Purchases and advocacy also go to their customer's partition (see
            # streams.engine.customers), with the output: exactly once in a transaction.
            for signal in signals_of(out.transitions):
                key = signal.customer_key.encode()
                await output.send(
                    self._signals_topic,
                    key,
                    encode_signal(signal),
                    partition_for_key(key, settings.partitions),
                )
        counted = self._counted_orders
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

    async def publish_customers(self, transitions: Sequence[CustomerTransition]) -> None:
        """Count customer transitions and publish them, keyed by customer, as they happen."""
        if not transitions:
            return
        for transition in transitions:
            self._metrics.customer_transitions.labels(transition.stage).inc()
        await self._output.send_keyed(
            self._settings.transitions_topic, transitions, _customer_of, encode_json
        )

    async def reject(self, record: CorruptRecord) -> None:
        """Count a corrupt internal record and send it to the dead-letter topic.

        Through the output producer, like transitions: a checkpoint waits for its delivery
        before it acknowledges the message it came in, so the record is never lost (it may
        be sent again when a crash makes the worker read the message again).
        """
        self._metrics.internal_rejected.labels(record.kind).inc()
        log.warning(
            "corrupt record at offset %d of %s[%d] skipped and dead-lettered: %s",
            record.offset, record.topic, record.partition, record.corrupt.detail,
        )  # fmt: skip
        value = internal_rejection_record(
            record.topic, record.partition, record.offset, record.key, record.value,
            record.corrupt, int(time.time() * 1000), withhold=self._settings.pii != "keep",
        )  # fmt: skip
        await self._output.send(self._settings.dlq_topic, None, value)


def _visitor_of(transition: StageTransition) -> bytes:
    """Key of a transition record: its visitor."""
    return transition.visitor_key.encode()


def _customer_of(transition: CustomerTransition) -> bytes:
    """Key of a customer transition record: its customer."""
    return transition.customer_key.encode()
