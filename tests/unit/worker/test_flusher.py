"""Flusher: rows, then the changelog, then acknowledgements; back-pressure; nothing after a give-up.

Driven without Faust or Kafka: a ClickHouseSink over a recording writer, a recording output
producer and a dict for the table's store.
"""

from __future__ import annotations

import asyncio
import threading
import time
import types
from collections.abc import Mapping, Sequence
from typing import Any

from streams.engine.events import Event
from streams.engine.progress import ProgressReport
from streams.engine.stages import StageRules
from streams.engine.state import VisitorState
from streams.errors import StorageError
from streams.metrics import JourneyMetrics
from streams.settings import Settings
from streams.sink import ClickHouseSink
from streams.worker import flusher as flusher_module
from streams.worker.codec import Forwarded
from streams.worker.flusher import Flusher, watermark_key
from streams.worker.partition import PartitionState
from streams.worker.runtime import WorkerRuntime

T0 = 1_700_000_000_000
HOUR = 3_600_000


class Writer:
    """The sink's RowWriter: records each write in the shared log; may hold or refuse it."""

    def __init__(self, log: list[Any], release: threading.Event | None = None) -> None:
        self.log = log
        self.release = release
        self.down = False
        #: ``defer_rollups`` of each write that succeeded.
        self.deferred: list[bool] = []

    def write(
        self,
        sessions: Sequence[Any],
        removed: Sequence[str],
        orders: Any,
        *_: Any,
        defer_rollups: bool = False,
        **__: Any,
    ) -> None:
        if self.release is not None:
            self.release.wait(5)
        if self.down:
            raise StorageError("ClickHouse unreachable")
        self.log.append(("rows", len(sessions)))
        self.deferred.append(defer_rollups)


class Output:
    """The output producer: records changelog appends and deliveries in the shared log."""

    def __init__(self, log: list[Any], hold: asyncio.Event | None = None) -> None:
        self.log = log
        #: When given, deliveries wait for it (a checkpoint stays under way).
        self.hold = hold

    async def send_to_partition(
        self, topic: str, partition: int, records: Sequence[tuple[bytes, bytes | None]]
    ) -> None:
        self.log.append(("changelog", topic, partition, [key for key, _ in records]))

    async def submit(self) -> None:
        return None

    async def flush(self) -> None:
        if self.hold is not None:
            await self.hold.wait()
        self.log.append(("delivered",))


class Stream:
    def __init__(self, log: list[Any]) -> None:
        self.log = log

    async def ack(self, event: str) -> None:
        self.log.append(("ack", event))


def _table(data: dict[bytes, Any]) -> Any:
    return types.SimpleNamespace(
        changelog_topic=types.SimpleNamespace(get_topic_name=lambda: "changelog"), data=data
    )


def _state(runtime: WorkerRuntime, settings: Settings, partition: int = 0) -> PartitionState:
    state = runtime.partitions[partition] = PartitionState(
        partition, settings.session_config(), StageRules.default()
    )
    state.expect_from(0)
    return state


def _apply(state: PartitionState, sink: ClickHouseSink, visitor: str, offset: int) -> int:
    """Apply one message of one event of ``visitor`` whose session closes at once."""
    ts = T0 + offset * 4 * HOUR  # past the watermark the message before moved
    event = Event(f"e{offset}", "page_view", ts, visitor, anonymous_id=visitor)
    report = ProgressReport(1, ((0, ts + 3 * HOUR),))
    message = Forwarded([event], [(0, offset, 0)], report)
    out = state.apply(message, offset, T0)
    sink.add(out.sessions, out.removed_session_ids, out.orders, out.removed_starts)
    return len(message.events)


def test_checkpoint_writes_rows_then_changelog_then_acknowledges() -> None:
    """Rows go first, visitor records next, the partition record once those are delivered.

    The message is acknowledged and the direct-mode input committed only after all of it.
    """

    async def scenario() -> tuple[list[Any], dict[bytes, Any]]:
        log: list[Any] = []
        data: dict[bytes, Any] = {}
        settings = Settings(checkpoint_interval_s=3600.0)
        sink = ClickHouseSink(Writer(log), None, flush_interval_s=0.0)
        runtime = WorkerRuntime()
        state = _state(runtime, settings)

        async def commit(offsets: Mapping[int, int]) -> None:
            log.append(("commit", dict(offsets)))

        flusher = Flusher(
            settings, runtime, sink, Output(log), _table(data), commit=commit, metrics=metrics
        )
        flusher.applied(Stream(log), "message-0", _apply(state, sink, "v1", 0))
        flusher.commit_later(0, 1)
        await flusher.flush(checkpoint=True, wait=True)
        return log, data

    metrics = JourneyMetrics.create()
    log, data = asyncio.run(scenario())
    registry = metrics.registry
    assert registry.get_sample_value("journey_checkpoints_total") == 1
    # The visitor's record and the partition's record.
    assert registry.get_sample_value("journey_checkpoint_records_total") == 2
    assert registry.get_sample_value("journey_checkpoint_seconds_count") == 1
    assert [entry[0] for entry in log] == [
        "rows", "changelog", "delivered", "changelog", "delivered", "ack", "commit",
    ]  # fmt: skip
    assert log[1] == ("changelog", "changelog", 0, [b"v1"])
    assert log[3] == ("changelog", "changelog", 0, [watermark_key(0)])
    assert log[5:] == [("ack", "message-0"), ("commit", {0: 1})]
    assert watermark_key(0) in data  # the partition's record is in the table's store too


def test_checkpoint_waits_for_its_rows_while_the_agent_goes_on() -> None:
    """A flush returns at once; no changelog record nor acknowledgement precedes its rows."""

    async def scenario() -> None:
        log: list[Any] = []
        release = threading.Event()
        settings = Settings(checkpoint_interval_s=3600.0)
        sink = ClickHouseSink(Writer(log, release), None, flush_interval_s=0.0)
        runtime = WorkerRuntime()
        state = _state(runtime, settings)
        flusher = Flusher(settings, runtime, sink, Output(log), _table({}))
        flusher.applied(Stream(log), "message-0", _apply(state, sink, "v1", 0))
        await flusher.flush(checkpoint=True)  # takes everything, writes beside the agent
        assert flusher.unacked == []
        assert flusher.unacked_events == 0
        flusher.applied(Stream(log), "message-1", _apply(state, sink, "v2", 1))  # after the take
        await asyncio.sleep(0.05)
        assert log == []  # the rows are held: no changelog record, no acknowledgement
        release.set()
        await flusher.flush(checkpoint=True, wait=True)
        acks = [entry[1] for entry in log if entry[0] == "ack"]
        assert acks == ["message-0", "message-1"]
        first_ack = log.index(("ack", "message-0"))
        assert log[0][0] == "rows"
        assert ("changelog", "changelog", 0, [b"v1"]) in log[:first_ack]

    asyncio.run(scenario())


def test_a_write_under_way_holds_the_next_flush_only_when_the_buffer_doubles() -> None:
    """While rows are being written, a due flush waits unless twice JOURNEY_FLUSH_ROWS wait."""

    async def scenario() -> None:
        log: list[Any] = []
        release = threading.Event()
        settings = Settings(flush_rows=2, checkpoint_interval_s=3600.0)
        sink = ClickHouseSink(Writer(log, release), None, max_rows=2, flush_interval_s=0.0)
        runtime = WorkerRuntime()
        state = _state(runtime, settings)
        flusher = Flusher(settings, runtime, sink, Output(log), _table({}))
        _apply(state, sink, "v1", 0)
        assert flusher.due()
        await flusher.flush()
        for offset, visitor in enumerate(["v2", "v3", "v4"], start=1):
            _apply(state, sink, visitor, offset)
        assert sink.due()
        assert not flusher.due()  # 3 rows beside the write under way: not yet
        _apply(state, sink, "v5", 4)
        assert flusher.due()  # 4 rows, twice JOURNEY_FLUSH_ROWS: the agent waits for the write
        release.set()
        await flusher.flush(wait=True)
        assert log == [("rows", 1), ("rows", 4)]

    asyncio.run(scenario())


def test_checkpoint_is_due_after_its_interval_or_at_the_event_cap() -> None:
    """Unacknowledged input checkpoints after the interval, or at FLUSH_ROWS per flush interval."""
    settings = Settings(flush_rows=10, flush_interval_s=2.0, checkpoint_interval_s=4.0)
    runtime = WorkerRuntime()
    sink = ClickHouseSink(Writer([]), None)
    flusher = Flusher(settings, runtime, sink, Output([]), _table({}))
    assert not flusher.checkpoint_due()  # nothing to acknowledge
    flusher.applied(Stream([]), "message-0", 19)
    assert not flusher.checkpoint_due()
    flusher.applied(Stream([]), "message-1", 1)  # 20 events: 10 rows x (4 s / 2 s)
    assert flusher.checkpoint_due()
    flusher = Flusher(settings, runtime, sink, Output([]), _table({}))
    flusher.commit_later(0, 7)  # direct mode: input to commit counts too
    flusher.last_checkpoint -= 4.0
    assert flusher.checkpoint_due()


def test_rollups_are_refreshed_with_checkpoints_or_when_no_input_waits_for_one() -> None:
    """Flushes between checkpoints defer the rollup refresh; a checkpoint's flush does not.

    Nor does a flush with no input waiting for a checkpoint (sessions the clock closed
    while idle): nothing would come to refresh their minutes.
    """

    async def scenario() -> list[bool]:
        log: list[Any] = []
        settings = Settings(checkpoint_interval_s=3600.0)
        writer = Writer(log)
        sink = ClickHouseSink(writer, None, flush_interval_s=0.0)
        runtime = WorkerRuntime()
        state = _state(runtime, settings)
        flusher = Flusher(settings, runtime, sink, Output(log), _table({}))
        flusher.applied(Stream(log), "message-0", _apply(state, sink, "v1", 0))
        await flusher.flush(wait=True)  # input waits for a checkpoint: deferred
        _apply(state, sink, "v2", 1)
        await flusher.flush(checkpoint=True, wait=True)  # with the checkpoint: refreshed
        _apply(state, sink, "v3", 2)
        await flusher.flush(wait=True)  # nothing unacknowledged: refreshed at once
        flusher.commit_later(0, 4)  # direct mode: input to commit waits for a checkpoint too
        _apply(state, sink, "v4", 3)
        await flusher.flush(wait=True)
        return writer.deferred

    assert asyncio.run(scenario()) == [True, False, False, True]


def test_rows_given_up_stop_every_later_flush() -> None:
    """After a flush gave its rows up, later flushes take nothing and acknowledge nothing."""

    async def scenario() -> None:
        log: list[Any] = []
        settings = Settings(checkpoint_interval_s=3600.0)
        writer = Writer(log)
        writer.down = True

        async def quick(_: float) -> None:
            await asyncio.sleep(0.005)

        sink = ClickHouseSink(writer, None, flush_interval_s=0.0, sleep=quick)
        runtime = WorkerRuntime()
        state = _state(runtime, settings)
        flusher = Flusher(settings, runtime, sink, Output(log), _table({}))
        flusher.applied(Stream(log), "message-0", _apply(state, sink, "v1", 0))
        runtime.stopping = True
        await flusher.flush(checkpoint=True, wait=True)
        assert flusher.abandoned
        writer.down = False
        runtime.stopping = False
        flusher.applied(Stream(log), "message-1", _apply(state, sink, "v2", 1))
        await flusher.flush(checkpoint=True, wait=True)
        assert log == []  # no rows, no changelog record, no acknowledgement
        assert sink.pending == 1  # the later rows were not even taken

    asyncio.run(scenario())


def test_a_due_checkpoint_waits_for_a_later_flush_while_the_previous_one_is_written() -> None:
    """The agent is not held up by a checkpoint under way, unless the event cap waits."""

    async def scenario() -> None:
        log: list[Any] = []
        release = threading.Event()
        settings = Settings(flush_rows=4, flush_interval_s=2.0, checkpoint_interval_s=2.0)
        sink = ClickHouseSink(Writer(log, release), None, flush_interval_s=0.0)
        runtime = WorkerRuntime()
        state = _state(runtime, settings)
        delivered = asyncio.Event()
        flusher = Flusher(settings, runtime, sink, Output(log, delivered), _table({}))
        flusher.applied(Stream(log), "message-0", _apply(state, sink, "v1", 0))
        await flusher.flush(checkpoint=True)  # its records are not delivered: under way
        flusher.applied(Stream(log), "message-1", _apply(state, sink, "v2", 1))
        flusher.last_checkpoint -= 2.0
        assert flusher.checkpoint_due()
        release.set()  # the rows may go, the first checkpoint is still to be written
        # A checkpoint is due: taken at a later flush, not waited for (waiting would hang:
        # the first one's delivery is held).
        await asyncio.wait_for(flusher.flush(), timeout=10)
        assert [stream_event for _, stream_event in flusher.unacked] == ["message-1"]
        flusher.applied(Stream(log), "message-2", _apply(state, sink, "v3", 2))
        flusher.applied(Stream(log), "message-3", _apply(state, sink, "v4", 3))
        # 3 events, under the cap (4 rows x 2 s / 2 s): not waited for either.
        await asyncio.wait_for(flusher.flush(), timeout=10)
        assert len(flusher.unacked) == 3
        delivered.set()
        await flusher.checkpointing  # type: ignore[misc]
        await flusher.flush(wait=True)  # the previous one is written: this one goes
        assert flusher.unacked == []
        acks = [entry[1] for entry in log if entry[0] == "ack"]
        assert acks == ["message-0", "message-1", "message-2", "message-3"]

    asyncio.run(scenario())


def test_a_checkpoint_is_encoded_beside_the_agent_until_a_flush_waits_for_it(
    monkeypatch: Any,
) -> None:
    """Encoding goes a slice at a time, paced; a flush that waits for it ends the pacing."""
    monkeypatch.setattr("streams.worker.flusher.ENCODE_PAUSE_S", 3600.0)

    async def scenario() -> None:
        log: list[Any] = []
        settings = Settings(checkpoint_interval_s=3600.0)
        sink = ClickHouseSink(Writer(log), None, flush_interval_s=0.0)
        runtime = WorkerRuntime()
        state = _state(runtime, settings)
        flusher = Flusher(settings, runtime, sink, Output(log), _table({}))
        visitors = 3 * flusher_module.ENCODE_SLICE
        for offset in range(visitors):
            flusher.applied(
                Stream(log), f"message-{offset}", _apply(state, sink, f"v{offset}", offset)
            )
        flusher.last_checkpoint -= 3600.0  # an interval ago: spread over half an hour
        await flusher.flush(checkpoint=True)
        for _ in range(20):  # the rows are written, a slice is encoded, then it paces
            await asyncio.sleep(0)
        snapshot = state.store.snapshot
        assert snapshot is not None
        assert 0 < len(snapshot.pending) < visitors  # a slice encoded, the rest waits
        assert not [entry for entry in log if entry[0] == "ack"]
        # A flush that must wait for it (a rebalance, a shutdown) ends the pacing; without
        # that it would wait an hour per slice.
        await asyncio.wait_for(flusher.flush(checkpoint=True, wait=True), timeout=60)
        acks = [entry[1] for entry in log if entry[0] == "ack"]
        assert acks == [f"message-{offset}" for offset in range(visitors)]

    asyncio.run(scenario())


class RecordingOutput(Output):
    """The output producer, keeping the value of every changelog record as well."""

    def __init__(self, log: list[Any]) -> None:
        super().__init__(log)
        self.records: dict[bytes, bytes | None] = {}

    async def send_to_partition(
        self, topic: str, partition: int, records: Sequence[tuple[bytes, bytes | None]]
    ) -> None:
        await super().send_to_partition(topic, partition, records)
        self.records.update(records)


def _open_event(state: PartitionState, sink: ClickHouseSink, visitor: str, offset: int) -> int:
    """Apply one message of one event of ``visitor``, a second after the one before: open."""
    ts = T0 + offset * 1000
    event = Event(f"e{offset}", "page_view", ts, visitor, anonymous_id=visitor)
    message = Forwarded([event], [(0, offset, 0)], ProgressReport(1, ((0, ts),)))
    out = state.apply(message, offset, T0)
    sink.add(out.sessions, out.removed_session_ids, out.orders, out.removed_starts)
    return 1


def test_a_checkpoint_records_the_states_of_its_take() -> None:
    """Visitors changed while their checkpoint is encoded are recorded as they were at the take.

    20 visitors get the events of messages 0-49 in turn (visitor k: messages k, k+20 and
    k+40 below 50), the checkpoint is taken, then messages 50-69 reach each once more
    while the states are being encoded a slice at a time.
    """

    async def scenario() -> dict[bytes, bytes | None]:
        log: list[Any] = []
        settings = Settings(checkpoint_interval_s=3600.0)
        sink = ClickHouseSink(Writer(log), None, flush_interval_s=0.0)
        runtime = WorkerRuntime()
        state = _state(runtime, settings)
        output = RecordingOutput(log)
        flusher = Flusher(settings, runtime, sink, output, _table({}))
        for offset in range(50):
            flusher.applied(
                Stream(log), offset, _open_event(state, sink, f"v{offset % 20}", offset)
            )
        await flusher.flush(checkpoint=True)
        for offset in range(50, 70):
            flusher.applied(
                Stream(log), offset, _open_event(state, sink, f"v{offset % 20}", offset)
            )
        await asyncio.wait_for(flusher.checkpointing, timeout=30)  # type: ignore[arg-type]
        assert [entry[1] for entry in log if entry[0] == "ack"] == list(range(50))
        return output.records

    records = asyncio.run(scenario())
    visitors = {key: value for key, value in records.items() if not key.startswith(b"\x00")}
    assert sorted(visitors) == sorted(f"v{k}".encode() for k in range(20))
    for key, value in visitors.items():
        assert value is not None
        k = int(key[1:])
        state = VisitorState.from_bytes(value[8:], key.decode())
        expected = [f"e{offset}" for offset in (k, k + 20, k + 40) if offset < 50]
        assert [ev.event_id for ev in state.events] == expected
        assert int.from_bytes(value[:8], "big") == max(int(e[1:]) for e in expected)


class TransactionalOutput(Output):
    """A transactional output producer: logs seals, checkpoint records, session rows, commits."""

    transactional = True

    def __init__(self, log: list[Any], hold: asyncio.Event | None = None) -> None:
        super().__init__(log, hold)
        self.open_records = False

    def seal(self) -> None:
        self.log.append(("seal",))

    async def send_keyed(self, topic: str, items: Sequence[Any], *_: Any, **kw: Any) -> None:
        self.log.append(("sessions", len(items), kw.get("checkpoint", False)))

    async def send_to_partition(
        self,
        topic: str,
        partition: int,
        records: Sequence[tuple[bytes, bytes | None]],
        checkpoint: bool = False,
    ) -> None:
        assert checkpoint, "changelog records belong to the sealed checkpoint"
        await super().send_to_partition(topic, partition, records)

    async def commit(self, offsets: Mapping[Any, int], group_id: str) -> None:
        await self.flush()
        self.log.append(("txn", group_id, {tp.partition: o for tp, o in offsets.items()}))


def test_a_transactional_checkpoint_commits_output_changelog_and_offsets_then_acknowledges() -> (
    None
):
    """Exactly once: seal at the take, rows and changelog in it, one commit with the offsets.

    The intake's input offsets go in the transaction (its own commit is not called), and
    the by-visitor messages are acknowledged only after the commit.
    """

    async def scenario() -> list[Any]:
        log: list[Any] = []
        settings = Settings(checkpoint_interval_s=3600.0, app_id="shop")
        sink = ClickHouseSink(Writer(log), None, flush_interval_s=0.0)
        runtime = WorkerRuntime()
        state = _state(runtime, settings)

        async def commit(offsets: Mapping[int, int]) -> None:
            log.append(("intake-commit", dict(offsets)))

        output = TransactionalOutput(log)
        flusher = Flusher(settings, runtime, sink, output, _table({}), commit=commit)
        flusher.applied(Stream(log), "message-0", _apply(state, sink, "v1", 0))
        flusher.commit_later(0, 5)
        await flusher.flush(checkpoint=True, wait=True)
        return log

    log = asyncio.run(scenario())
    assert [entry[0] for entry in log] == [
        "seal", "rows", "sessions", "changelog", "changelog", "delivered", "txn", "ack",
    ]  # fmt: skip
    assert log[2] == ("sessions", 1, True)  # the checkpoint flush's rows: its transaction
    assert log[6] == ("txn", "shop-intake", {0: 5})


def test_records_left_in_the_open_transaction_make_a_checkpoint_due() -> None:
    """Exactly once: output of sessions the clock closed (no input) is committed in time."""
    settings = Settings(checkpoint_interval_s=0.01)
    sink = ClickHouseSink(Writer([]), None, flush_interval_s=3600.0)
    output = TransactionalOutput([])
    flusher = Flusher(settings, WorkerRuntime(), sink, output, _table({}))
    time.sleep(0.02)
    assert not flusher.checkpoint_due()
    output.open_records = True
    assert flusher.checkpoint_due()
