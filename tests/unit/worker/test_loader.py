"""PartitionLoader: a partition's state from the table a checkpoint wrote, or from the log start.

Driven without Faust or Kafka: the table's store is a dict, the log start a fake reader.
"""

from __future__ import annotations

import asyncio
import types
from collections.abc import AsyncGenerator, Sequence
from typing import Any

import pytest

from streams.engine.events import Event
from streams.engine.progress import ProgressReport
from streams.engine.stages import StageRules
from streams.settings import Settings
from streams.sink import ClickHouseSink
from streams.worker.codec import Forwarded
from streams.worker.flusher import Flusher, watermark_key
from streams.worker.loader import PartitionLoader
from streams.worker.partitioning import partition_for_key
from streams.worker.runtime import WorkerRuntime

T0 = 1_700_000_000_000


class Reader:
    """The log start of the by-visitor topic; counts the questions."""

    def __init__(self, start: int) -> None:
        self.start = start
        self.asked: list[tuple[str, int]] = []

    async def log_start(self, topic: str, partition: int) -> int:
        self.asked.append((topic, partition))
        return self.start

    async def batches(
        self, topic: str, partition: int, offsets: range
    ) -> AsyncGenerator[list[tuple[int, bytes]], None]:
        raise AssertionError("a load reads no messages")
        yield []  # pragma: no cover


class Writer:
    def write(self, *args: Any, **kwargs: Any) -> None:
        return None


class Output:
    def __init__(self) -> None:
        self.changelog: list[bytes] = []

    async def send_to_partition(
        self, topic: str, partition: int, records: Sequence[tuple[bytes, bytes | None]]
    ) -> None:
        self.changelog += [key for key, _ in records]

    async def submit(self) -> None:
        return None

    async def flush(self) -> None:
        return None


class Stream:
    async def ack(self, event: Any) -> None:
        return None


def _table(data: dict[bytes, Any]) -> Any:
    return types.SimpleNamespace(
        changelog_topic=types.SimpleNamespace(get_topic_name=lambda: "changelog"), data=data
    )


def _loader(
    settings: Settings, runtime: WorkerRuntime, data: dict[bytes, Any], reader: Reader, **kw: Any
) -> PartitionLoader:
    return PartitionLoader(
        settings, settings.session_config(), StageRules.default(), runtime, _table(data),
        f"{settings.app_id}-events-by-visitor", reader, **kw,
    )  # fmt: skip


def _visitor_of(partition: int, partitions: int) -> str:
    n = 0
    while partition_for_key(f"v{n}".encode(), partitions) != partition:
        n += 1
    return f"v{n}"


def test_a_partition_never_checkpointed_expects_its_messages_from_the_log_start() -> None:
    """No record of its own in the table: the first offset expected is the log's start."""
    settings = Settings(app_id="shop")
    runtime, reader = WorkerRuntime(), Reader(start=17)
    state = asyncio.run(_loader(settings, runtime, {}, reader).load(2))
    assert runtime.partitions == {2: state}
    assert not state.checkpointed
    assert state.next_offset == 17
    assert reader.asked == [("shop-events-by-visitor", 2)]


def test_a_restart_loads_what_the_last_checkpoint_wrote() -> None:
    """A flush's checkpoint, read back by a new worker: offsets and visitor records, no log read."""
    settings = Settings(checkpoint_interval_s=3600.0)
    data: dict[bytes, Any] = {}
    visitor = _visitor_of(0, settings.partitions)

    async def first_run() -> None:
        runtime = WorkerRuntime()
        state = await _loader(settings, runtime, data, Reader(start=0)).load(0)
        sink = ClickHouseSink(Writer(), None, flush_interval_s=0.0)
        output = Output()
        flusher = Flusher(settings, runtime, sink, output, _table(data))
        event = Event("e1", "page_view", T0, visitor, anonymous_id=visitor)
        report = ProgressReport(1, ((0, T0),))
        out = state.apply(Forwarded([event], [(0, 0, 0)], report), 0, T0)
        sink.add(out.sessions, out.removed_session_ids, out.orders, out.removed_starts)
        flusher.applied(Stream(), "message-0", 1)
        await flusher.flush(checkpoint=True, wait=True)
        assert output.changelog == [visitor.encode(), watermark_key(0)]

    asyncio.run(first_run())
    reader = Reader(start=0)
    runtime = WorkerRuntime()
    state = asyncio.run(_loader(settings, runtime, data, reader).load(0))
    assert reader.asked == []  # checkpointed: the log start is not needed
    assert state.checkpointed
    assert state.next_offset == 1
    assert state.open_sessions == 1  # the visitor's open session came back from its record


def test_direct_mode_tells_the_intake_where_to_read_each_load() -> None:
    """Each load of a direct partition gets a new epoch; the intake reads from its commit."""
    settings = Settings(input_keyed_by_visitor=True)
    owned: list[tuple[int, int, int | None]] = []
    runtime = WorkerRuntime()
    loader = _loader(settings, runtime, {}, Reader(start=0), own=lambda *args: owned.append(args))

    async def loads() -> None:
        await loader.load(1)
        await loader.load(3)
        await loader.load(1)  # assigned again

    asyncio.run(loads())
    assert owned == [(1, 1, None), (3, 2, None), (1, 3, None)]
    assert runtime.partitions[1].epoch == 3


class _Stopped(Exception):
    """Raised in place of the process exit of ``exit_unrecoverable``."""


def test_a_state_written_with_other_visitor_keys_stops_the_worker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """State keyed by pseudonyms, worker on raw ids (or another key): it stops, saying why."""
    key = "a-pii-key-of-32-bytes-0123456789"
    hashed = Settings(checkpoint_interval_s=3600.0, pii="hash", pii_key=key)
    data: dict[bytes, Any] = {}

    async def checkpoint(settings: Settings) -> None:
        runtime = WorkerRuntime()
        state = await _loader(settings, runtime, data, Reader(start=0)).load(0)
        flusher = Flusher(settings, runtime, ClickHouseSink(Writer(), None), Output(), _table(data))
        report = ProgressReport(1, ((0, T0),))
        state.apply(Forwarded([], [], report), 0, T0)
        flusher.applied(Stream(), "message-0", 1)
        await flusher.flush(checkpoint=True, wait=True)

    asyncio.run(checkpoint(hashed))
    # hash and drop under the same key make the same pseudonyms: that loads.
    state = asyncio.run(_loader(Settings(pii="drop", pii_key=key), WorkerRuntime(), data,
                                Reader(start=0)).load(0))  # fmt: skip
    assert state.checkpointed
    assert state.recorded_ids == hashed.pii_identity() != ""

    def stop(what: str) -> None:
        raise _Stopped(what)

    monkeypatch.setattr("streams.worker.loader.exit_unrecoverable", stop)
    for other in (Settings(), Settings(pii="hash", pii_key="another-key-of-32-bytes-01234567")):
        with pytest.raises(_Stopped, match="JOURNEY_PII and its key are fixed for an app"):
            asyncio.run(_loader(other, WorkerRuntime(), data, Reader(start=0)).load(0))
