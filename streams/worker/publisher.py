"""What becomes of the engine's output as soon as a message is applied.

Its rows go into the ClickHouse sink's buffer (written at the next flush), its stage
transitions and late events to their topics within a tick, and every counter it moves is
counted in Prometheus then, not at the flush.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

import orjson

from streams.engine.rows import StageTransition, encode_json
from streams.engine.sessionizer import EngineOutput
from streams.metrics import JourneyMetrics
from streams.settings import Settings
from streams.sink import ClickHouseSink

#: Order keys remembered for the revenue counter (an order row is re-emitted every time its
#: session changes; the counter must add each order once). Bounded: the oldest are dropped.
COUNTED_ORDERS_MAX = 200_000

T = TypeVar("T")


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


def _visitor_of(transition: StageTransition) -> bytes:
    """Key of a transition record: its visitor."""
    return transition.visitor_key.encode()
