"""SkippedMessages: skipped messages read outside the group and applied in order; stalls.

Driven without Faust or Kafka: the topic reader is a dict of messages, the flush writes
to a recording writer.
"""

from __future__ import annotations

import asyncio
import types
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from prometheus_client import CollectorRegistry
from worker_fakes import NullOutput

from streams.engine.events import Event
from streams.engine.progress import ProgressReport
from streams.engine.stages import StageRules
from streams.metrics import JourneyMetrics
from streams.settings import Settings
from streams.sink import ClickHouseSink
from streams.worker.codec import (
    chunk_forwarded,
    decode_forwarded,
    encode_forwarded,
    encode_report,
    encode_topic,
    forwarded_message,
)
from streams.worker.flusher import Flusher
from streams.worker.partition import PartitionState
from streams.worker.publisher import Publisher
from streams.worker.repair import STALL_REPAIR_S, SkippedMessages, waiting
from streams.worker.runtime import WorkerRuntime

T0 = 1_700_000_000_000
HOUR = 3_600_000


def _message(offset: int) -> bytes:
    """A by-visitor message of one event (its own visitor, closed by the report)."""
    ts = T0 + offset * 4 * HOUR
    event = Event(f"e{offset}", "page_view", ts, f"v{offset}", anonymous_id=f"v{offset}")
    (chunk,) = chunk_forwarded([encode_forwarded(event, 0, offset, 0)], 1 << 20)
    report = encode_report(ProgressReport(1, ((0, ts + 3 * HOUR),)))
    return forwarded_message(encode_topic("clickstream"), chunk, report)


class Reader:
    """The by-visitor topic, read outside the group: two records per fetched batch."""

    def __init__(self, messages: dict[int, bytes]) -> None:
        self.messages = messages
        self.read: list[range] = []

    async def log_start(self, topic: str, partition: int) -> int:
        return min(self.messages)

    async def batches(
        self, topic: str, partition: int, offsets: range
    ) -> AsyncGenerator[list[tuple[int, bytes]], None]:
        self.read.append(offsets)
        for at in range(offsets.start, offsets.stop, 2):
            yield [(o, self.messages[o]) for o in range(at, min(at + 2, offsets.stop))]


class Writer:
    def __init__(self) -> None:
        self.rows = 0

    def write(self, sessions: Sequence[Any], *_: Any, **__: Any) -> None:
        self.rows += len(sessions)


@dataclass
class Parts:
    skipped: SkippedMessages
    flusher: Flusher
    runtime: WorkerRuntime
    writer: Writer
    metrics: JourneyMetrics
    state: PartitionState


def _parts(reader: Reader) -> Parts:
    settings = Settings(checkpoint_interval_s=3600.0)
    metrics = JourneyMetrics.create(CollectorRegistry())
    writer = Writer()
    sink = ClickHouseSink(writer, None, flush_interval_s=0.0)
    runtime = WorkerRuntime()
    output = NullOutput()
    table = types.SimpleNamespace(
        changelog_topic=types.SimpleNamespace(get_topic_name=lambda: "changelog"), data={}
    )
    flusher = Flusher(settings, runtime, sink, output, table)  # type: ignore[arg-type]
    publisher = Publisher(settings, metrics, sink, output)
    skipped = SkippedMessages(reader, runtime, publisher, flusher, sink, metrics)
    state = runtime.partitions[0] = PartitionState(
        0, settings.session_config(), StageRules.default()
    )
    state.expect_from(0)
    return Parts(skipped, flusher, runtime, writer, metrics, state)


def test_repair_applies_the_skipped_messages_in_order_and_flushes_as_it_goes() -> None:
    """A gap of five messages is read, applied before the message that revealed it, flushed."""
    reader = Reader({offset: _message(offset) for offset in range(6)})
    parts = _parts(reader)
    state = parts.state

    async def scenario() -> None:
        gap = state.gap(5)
        assert gap == range(0, 5)
        await parts.skipped.repair("events-by-visitor", state, gap)
        assert state.next_offset == 5
        assert parts.writer.rows >= 4  # flushed as it went, not only at the end
        state.apply(decode_forwarded(reader.messages[5]), 5, T0)  # now in order
        await parts.flusher.flush(wait=True)

    asyncio.run(scenario())
    assert reader.read == [range(0, 5)]
    assert parts.metrics.registry.get_sample_value("journey_repaired_messages_total") == 5
    assert parts.writer.rows >= 5  # every repaired session's rows reached ClickHouse
    assert parts.runtime.resumed_ms > 0  # the agent waited for the repair: not a stall


def test_a_partition_is_stalled_only_when_no_partition_applied_anything_for_a_while() -> None:
    """Stalled: nothing applied nor flushed anywhere for STALL_REPAIR_S, and an offset expected."""
    parts = _parts(Reader({0: b""}))
    skipped, runtime, state = parts.skipped, parts.runtime, parts.state
    now = T0 + 3_600_000
    stall_ms = int(STALL_REPAIR_S * 1000)
    state.applied_ms = now - stall_ms
    assert skipped.stalled(state, now)
    runtime.resumed_ms = now - 1_000  # a flush or repair held the agent until just now
    assert not skipped.stalled(state, now)
    runtime.resumed_ms = 0
    other = runtime.partitions[1] = PartitionState(
        1, Settings().session_config(), StageRules.default()
    )
    other.applied_ms = now - 1_000  # busy with another partition
    assert not skipped.stalled(state, now)
    other.applied_ms = None
    state.next_offset = None  # a partition never seen expects nothing yet
    assert not skipped.stalled(state, now)


def test_waiting_offsets_are_those_kafka_holds_past_the_next_to_apply() -> None:
    """The range from the next offset to the high watermark; none if unknown or caught up."""

    class Consumer:
        def __init__(self, highwater: int | None, owned: bool = True) -> None:
            self._highwater, self._owned = highwater, owned

        def highwater(self, tp: Any) -> int | None:
            assert self._owned, "partition not assigned"
            return self._highwater

    assert waiting(Consumer(9), "tp", 4) == range(4, 9)
    assert waiting(Consumer(9), "tp", None) == range(0, 9)
    assert waiting(Consumer(4), "tp", 4) is None
    assert waiting(Consumer(None), "tp", 4) is None
    assert waiting(Consumer(9, owned=False), "tp", 4) == range(0)


class RecordingOutput(NullOutput):
    """The output producer, keeping what goes to each topic by ``send``."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes | None]] = []

    async def send(self, topic: str, key: bytes | None, value: bytes | None,
                   partition: int | None = None) -> None:  # fmt: skip
        self.sent.append((topic, key, value))


def test_a_corrupt_skipped_message_is_dead_lettered_and_the_repair_goes_on() -> None:
    """Garbage in the gap: counted, dead-lettered with where it was, skipped; the rest applied."""
    messages = {offset: _message(offset) for offset in range(6)}
    messages[2] = b"\xffnot a by-visitor message"
    reader = Reader(messages)
    parts = _parts(reader)
    output = RecordingOutput()
    settings = Settings(checkpoint_interval_s=3600.0)
    sink = ClickHouseSink(parts.writer, None, flush_interval_s=0.0)
    publisher = Publisher(settings, parts.metrics, sink, output)
    skipped = SkippedMessages(reader, parts.runtime, publisher, parts.flusher, sink, parts.metrics)
    state = parts.state

    asyncio.run(skipped.repair("app-events-by-visitor", state, range(0, 5)))
    assert state.next_offset == 5
    assert state.input.low_ms() is not None  # the reports of the messages after it applied
    dead = [orjson.loads(value or b"") for topic, _, value in output.sent
            if topic == settings.dlq_topic]  # fmt: skip
    assert len(dead) == 1
    assert dead[0]["reason"] == "corrupt_internal_message"
    assert dead[0]["source"] == {
        "topic": "app-events-by-visitor", "partition": 0, "offset": 2, "key": None
    }  # fmt: skip
    assert dead[0]["payload_encoding"] == "base64"
    registry = parts.metrics.registry
    sample = registry.get_sample_value
    assert sample("journey_internal_messages_rejected_total", {"topic": "by_visitor"}) == 1
    assert sample("journey_internal_messages_rejected_total", {"topic": "changelog"}) == 0
    assert sample("journey_repaired_messages_total") == 5
    assert sink.pending == 4  # a session row from each of the four good messages
