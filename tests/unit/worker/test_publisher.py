"""Publisher: an applied message's rows buffered, transitions and late events sent, counted once."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from prometheus_client import CollectorRegistry

from streams.engine.events import Event
from streams.engine.progress import ProgressReport
from streams.engine.stages import StageRules
from streams.metrics import JourneyMetrics
from streams.settings import Settings
from streams.sink import ClickHouseSink
from streams.worker.codec import Forwarded
from streams.worker.partition import PartitionState
from streams.worker.publisher import Publisher
from streams.worker.topics import customer_signals_topic

T0 = 1_700_000_000_000
MINUTE = 60_000


class Writer:
    def write(self, *args: Any, **kwargs: Any) -> None:
        return None


class Output:
    """Records the topic and key of every record sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None]] = []

    async def send_keyed(
        self,
        topic: str,
        items: Sequence[Any],
        key: Callable[[Any], bytes],
        value: Callable[[Any], bytes],
    ) -> None:
        self.sent += [(topic, key(item)) for item in items if value(item)]

    async def send(
        self, topic: str, key: bytes | None, value: bytes | None, partition: int | None = None
    ) -> None:
        self.sent.append((topic, key))


def test_output_is_buffered_published_and_each_order_counted_once() -> None:
    """Rows wait in the sink; transitions and late events go out; revenue counts an order once."""
    settings = Settings()
    metrics = JourneyMetrics.create(CollectorRegistry())
    sink = ClickHouseSink(Writer(), None)
    output = Output()
    publisher = Publisher(settings, metrics, sink, output)
    state = PartitionState(0, settings.session_config(), StageRules.default())
    state.expect_from(0)
    purchase = Event("e1", "purchase", T0, "v1", anonymous_id="v1", order_id="o1", revenue=25.0)
    later = Event("e2", "page_view", T0 + MINUTE, "v1", anonymous_id="v1")
    late = Event("e3", "page_view", T0 - 60 * MINUTE, "v2", anonymous_id="v2")
    messages = [
        Forwarded([purchase], [(0, 0, 0)], ProgressReport(1, ((0, T0),))),
        Forwarded([later], [(0, 1, 0)], ProgressReport(1, ((0, T0 + 30 * MINUTE),))),
        Forwarded([late], [(0, 2, 0)], None),
    ]

    async def apply_all() -> None:
        for offset, message in enumerate(messages):
            await publisher.publish(state.apply(message, offset, T0))

    asyncio.run(apply_all())
    value = metrics.registry.get_sample_value
    assert value("journey_revenue_total") == 25.0  # the order row came twice
    assert value("journey_conversions_total") == 1
    assert value("journey_sessions_started_total") == 1  # the late event opens none
    assert value("journey_events_late_total") == 1
    assert sink.pending >= 2  # the session and order rows wait for the flush
    topics = {topic for topic, _ in output.sent}
    signals = customer_signals_topic(settings)
    assert topics == {settings.transitions_topic, settings.late_topic, signals}
    # The purchase is a signal to its customer (the visitor: no user_id), once.
    assert [key for topic, key in output.sent if topic == signals] == [b"v1"]
    assert (settings.late_topic, b"v2") in output.sent
    assert all(key == b"v1" for topic, key in output.sent if topic == settings.transitions_topic)
