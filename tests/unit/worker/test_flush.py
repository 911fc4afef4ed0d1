"""The flush beside processing: what it takes is written, acknowledged or given up whole."""

from __future__ import annotations

import asyncio
import types
from typing import Any

from streams.engine.events import Event
from streams.engine.progress import ProgressReport
from streams.engine.stages import StageRules
from streams.errors import StorageError
from streams.settings import Settings
from streams.sink import ClickHouseSink
from streams.worker.codec import Forwarded
from streams.worker.flusher import Flusher
from streams.worker.output import OutputProducer
from streams.worker.partition import PartitionState
from streams.worker.runtime import WorkerRuntime

T0 = 1_700_000_000_000


class DownWriter:
    """A ClickHouse that refuses every write (the sink's RowWriter)."""

    def write(self, *args: Any, **kwargs: Any) -> None:
        raise StorageError("ClickHouse unreachable")


class Output:
    """Records what the flush sends (the producer is tested against Kafka elsewhere)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None]] = []

    async def send(self, topic: str, key: bytes | None, value: Any, partition: Any = None) -> None:
        self.sent.append((topic, key))

    async def submit(self) -> None:
        return None

    async def flush(self) -> None:
        return None


class Stream:
    def __init__(self) -> None:
        self.acked: list[str] = []

    async def ack(self, event: str) -> None:
        self.acked.append(event)


async def _quick(_: float) -> None:
    await asyncio.sleep(0.005)


def test_rows_given_up_at_shutdown_leave_everything_unacknowledged() -> None:
    """A flush that gives its rows up while stopping blocks every later checkpoint and ack.

    ClickHouse is down; a rows-only flush is retrying when the worker stops; the shutdown
    flush must then neither write checkpoint records nor acknowledge the messages whose
    rows were never written (they are redelivered to the next worker).
    """

    async def scenario() -> tuple[Output, Stream]:
        settings = Settings(checkpoint_interval_s=3600.0)
        sink = ClickHouseSink(DownWriter(), None, flush_interval_s=0.0, sleep=_quick)
        output, stream = Output(), Stream()
        runtime = WorkerRuntime()
        state = runtime.partitions[0] = PartitionState(
            0, settings.session_config(), StageRules.default()
        )
        state.expect_from(0)
        event = Event("e1", "page_view", T0, "v1", anonymous_id="v1")
        report = ProgressReport(1, ((0, T0 + 3 * 3_600_000),))
        out = state.apply(Forwarded([event], [(0, 0, 0)], report), 0, T0)  # opens and closes
        sink.add(out.sessions, out.removed_session_ids, out.orders, out.removed_starts)
        table = types.SimpleNamespace(
            changelog_topic=types.SimpleNamespace(get_topic_name=lambda: "changelog"), data={}
        )
        flusher = Flusher(settings, runtime, sink, output, table)  # type: ignore[arg-type]
        flusher.unacked.append((stream, "message-0"))
        await flusher.flush()  # rows only; retrying in the background
        await asyncio.sleep(0.05)
        runtime.stopping = True  # SIGTERM: the shutdown flush follows
        await flusher.flush(checkpoint=True, wait=True)
        return output, stream

    output, stream = asyncio.run(scenario())
    assert stream.acked == []
    assert [key for topic, key in output.sent if topic == "changelog"] == []


class _Builder:
    def __init__(self) -> None:
        self.records: list[bytes] = []

    def append(self, key: bytes | None, value: bytes, timestamp: Any) -> object:
        self.records.append(value)
        return object()

    def record_count(self) -> int:
        return len(self.records)


class _Client:
    """Hands batches over as aiokafka does: one waits while its partition is not drained."""

    def __init__(self, held: tuple[str, int], drained: asyncio.Event) -> None:
        self.accepted: list[bytes] = []
        self.held, self.drained = held, drained

    def create_batch(self) -> _Builder:
        return _Builder()

    async def send_batch(self, builder: _Builder, topic: str, partition: int) -> Any:
        if (topic, partition) == self.held:
            await self.drained.wait()
        self.accepted += builder.records
        done = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


def test_flush_waits_for_batches_another_task_is_handing_over() -> None:
    """``flush`` returns only once every batch taken before it was handed to the client."""

    async def scenario() -> list[bytes]:
        drained = asyncio.Event()
        output = OutputProducer(Settings())
        client = output._producer = _Client(("transitions", 0), drained)  # type: ignore[assignment]
        await output.send("transitions", b"v", b"transition", partition=0)
        await output.send("changelog", b"V", b"record-of-V", partition=2)
        tick = asyncio.create_task(output.submit())  # waits on the transitions partition
        await asyncio.sleep(0)
        flushing = asyncio.create_task(output.flush())
        await asyncio.sleep(0.02)
        assert not flushing.done()  # the record of V is not handed over yet
        drained.set()
        await flushing
        seen = list(client.accepted)
        await tick
        return seen

    assert sorted(asyncio.run(scenario())) == [b"record-of-V", b"transition"]
