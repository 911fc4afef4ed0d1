"""Flushes and checkpoints: rows to ClickHouse, state to the changelog, then the acknowledgement.

At every flush, in this order: rows to ClickHouse, session rows to the sessions topic,
and (every checkpoint interval) changed visitor records to the Faust table's changelog;
only then are the messages acknowledged, so Kafka commits only offsets whose effects are
durable (docs/architecture.md, "Exactly once across crashes"). The table and its
changelog are reached through ``VisitorTable``, the output topics through
``CheckpointOutput``: a test drives a flush with a dict and a list.

With a transactional output (``JOURNEY_DELIVERY=exactly_once``), each checkpoint is one
Kafka transaction: the output records of the messages it acknowledges, its flush's session
rows, its changelog records and the input offsets commit together (``TransactionalOutput``,
docs/architecture.md, "Exactly-once output topics").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from typing import Any, Protocol, TypeVar, cast

from aiokafka.structs import TopicPartition

from streams.engine.rows import SessionRow, encode_json
from streams.errors import StreamError
from streams.metrics import JourneyMetrics
from streams.settings import Settings
from streams.sink import ClickHouseSink, PendingRows
from streams.worker.partition import WATERMARK_KEY, Checkpoint, PendingCheckpoint
from streams.worker.runtime import WorkerRuntime, exit_unrecoverable, release_free_memory

log = logging.getLogger(__name__)

#: Visitor states a checkpoint encodes before it lets the agent run (a few ms).
ENCODE_SLICE = 500
#: The share of the checkpoint interval a checkpoint's encoding is spread over (see
#: Flusher._encode).
ENCODE_SPREAD = 0.5
#: The longest pause between two slices of an encoding (a small checkpoint goes at once).
ENCODE_PAUSE_S = 0.05
#: The event cap of a checkpoint counts at most this much of its interval (see
#: Flusher.checkpoint_due): a backlog's checkpoints stay as small as at 10 s.
CAP_INTERVAL_S = 10.0
#: Changelog records appended before the agent may run.
APPEND_SLICE = 5_000
#: Rows (as many JOURNEY_FLUSH_ROWS) buffered beside a write under way that make the agent
#: wait for it (see Flusher.due).
WAIT_FOR_WRITE_ROWS = 2
#: A checkpoint taking this long (it runs beside processing) is logged with where its time
#: went.
SLOW_CHECKPOINT_S = 5.0
#: A flush taking this long is logged.
SLOW_FLUSH_S = 1.0


class ChangelogTopic(Protocol):
    """The changelog topic of the table (Faust's ``Table.changelog_topic``)."""

    def get_topic_name(self) -> str:
        """The topic's name."""


class VisitorTable(Protocol):
    """The Faust table of visitor records, as flushes and partition loads use it.

    ``data`` is its store: the records of every partition this worker holds, by key
    (Faust's memory store, or a dict in a test).
    """

    @property
    def data(self) -> MutableMapping[bytes, Any]:
        """The table's store."""

    @property
    def changelog_topic(self) -> ChangelogTopic:
        """The topic Faust recovers the table from."""


class CheckpointOutput(Protocol):
    """The output producer, as a flush uses it (``OutputProducer``, or a list in a test)."""

    async def send_to_partition(
        self, topic: str, partition: int, records: Sequence[tuple[bytes, bytes | None]]
    ) -> None:
        """Append (key, value) records to one partition, in order."""

    async def submit(self) -> None:
        """Hand every batch to the client."""

    async def flush(self) -> None:
        """Wait until Kafka has every record appended so far; raise ``StreamError`` if not."""


T = TypeVar("T")


class TransactionalOutput(CheckpointOutput, Protocol):
    """The output producer with a transactional id (``OutputProducer``, exactly once)."""

    @property
    def open_records(self) -> bool:
        """True when records wait in the open transaction for a checkpoint."""

    def seal(self) -> None:
        """A checkpoint is taken: the records so far, and ``checkpoint=True`` ones, are its."""

    async def send_keyed(
        self,
        topic: str,
        items: Sequence[T],
        key: Callable[[T], bytes],
        value: Callable[[T], bytes],
        checkpoint: bool = False,
    ) -> None:
        """Append a record per item (``checkpoint``: to the sealed transaction)."""

    async def send_to_partition(
        self,
        topic: str,
        partition: int,
        records: Sequence[tuple[bytes, bytes | None]],
        checkpoint: bool = False,
    ) -> None:
        """Append records to one partition (``checkpoint``: to the sealed transaction)."""

    async def commit(self, offsets: Mapping[TopicPartition, int], group_id: str) -> None:
        """Commit the sealed transaction with the input ``offsets`` of ``group_id``."""


#: Direct mode: commits the input offsets (partition -> next offset) a checkpoint covers.
CommitInput = Callable[[Mapping[int, int]], Awaitable[None]]
#: A message applied and not acknowledged yet: (stream, event), for ``stream.ack(event)``.
Unacked = tuple[Any, Any]


def watermark_key(partition: int) -> bytes:
    """Table key of a partition's watermark (visitor keys never start with NUL)."""
    return b"\x00watermark:" + str(partition).encode()


class Flusher:
    """Takes the buffered rows and, when due, a checkpoint, and writes them beside processing.

    It owns the messages applied since the last checkpoint (to acknowledge once the
    checkpoint holding their effects is written) and the flush and checkpoint under way.
    Every method is called under the worker's lock (``WorkerRuntime.lock``); the writes
    themselves run in tasks beside the agent.
    """

    def __init__(
        self,
        settings: Settings,
        runtime: WorkerRuntime,
        sink: ClickHouseSink,
        output: CheckpointOutput,
        table: VisitorTable,
        commit: CommitInput | None = None,
        metrics: JourneyMetrics | None = None,
    ) -> None:
        """``commit``: direct mode, the intake's commit of input offsets (None otherwise).

        ``metrics``: where checkpoints are counted and timed (none in some tests).
        """
        self._metrics = metrics
        self._settings = settings
        self._runtime = runtime
        self._sink = sink
        self._output = output
        #: The output, when it writes transactions (exactly once): see TransactionalOutput.
        self._transactions = (
            cast(TransactionalOutput, output) if getattr(output, "transactional", False) else None
        )
        self._table = table
        self._commit = commit
        #: Messages applied since the last checkpoint: (stream, event) to acknowledge.
        self.unacked: list[Unacked] = []
        #: Events in the unacknowledged messages (bounds the input a crash re-applies).
        self.unacked_events = 0
        #: Direct mode: input partition -> next offset, for input applied since the last
        #: checkpoint (committed once the checkpoint holding its effects is written).
        self.uncommitted: dict[int, int] = {}
        #: Monotonic time of the last checkpoint (state to the changelog, input acknowledged).
        self.last_checkpoint = time.monotonic()
        #: The flush writing the rows it took (see flush), if one is under way.
        self.inflight: asyncio.Future[bool] | None = None
        #: The checkpoint taken with a flush (see flush), if one is under way.
        self.checkpointing: asyncio.Future[None] | None = None
        #: Set when a flush gave up its rows at shutdown: no later flush may write anything.
        self.abandoned = False
        #: Set when a flush waits for the checkpoint under way: its encoding stops pacing.
        self._hurry = asyncio.Event()

    def applied(self, stream: Any, event: Any, events: int) -> None:
        """A message of ``events`` events was applied: the checkpoint after it acknowledges it."""
        self.unacked.append((stream, event))
        self.unacked_events += events

    def applied_direct(self, events: int) -> None:
        """Direct mode: ``events`` input events were applied (see :meth:`checkpoint_due`)."""
        self.unacked_events += events

    def commit_later(self, partition: int, offset: int) -> None:
        """Direct mode: input of ``partition`` up to ``offset`` (next to read) was applied."""
        self.uncommitted[partition] = offset

    def checkpoint_due(self) -> bool:
        """True when unacknowledged input waited a checkpoint interval or reached the cap.

        The cap is as many events as ``JOURNEY_FLUSH_ROWS`` per flush interval of the
        checkpoint interval, counting at most ``CAP_INTERVAL_S`` of it: a backlog
        checkpoints by count about as often as live traffic did at a 10-s interval.
        """
        if not self.unacked and not self.uncommitted and not self._open_output():
            return False
        waited = time.monotonic() - self.last_checkpoint
        return waited >= self._settings.checkpoint_every_s() or (
            self.unacked_events >= self._checkpoint_cap()
        )

    def _open_output(self) -> bool:
        """Exactly once: records (of sessions the clock closed) wait in the open transaction."""
        transactions = self._transactions
        return transactions is not None and transactions.open_records

    def _checkpoint_cap(self) -> float:
        """Unacknowledged events that make a checkpoint due (see :meth:`checkpoint_due`)."""
        settings = self._settings
        every = min(settings.checkpoint_every_s(), CAP_INTERVAL_S)
        return settings.flush_rows * max(1.0, every / settings.flush_interval_s)

    def _previous_done(self) -> bool:
        """True when no checkpoint is under way."""
        task = self.checkpointing
        return task is None or task.done()

    def due(self, checkpoint: bool = False) -> bool:
        """True when rows (or, with ``checkpoint``, a checkpoint) are due and may go now.

        They may when the previous flush's rows are written, or when the buffer is full.

        While a write is under way, the rows keep coalescing in the buffer and the flush
        waits for the next batch or tick after it: at 20,000 events/s a write (ClickHouse,
        the rollup refresh, the sessions topic) took 1-2 s, and waiting for it at every 2-s
        flush held the agent up for whatever it overran. Only a buffer of twice
        ``JOURNEY_FLUSH_ROWS`` makes the agent wait (the back-pressure while ClickHouse is
        slow or away).
        """
        sink = self._sink
        if not (sink.due() or (checkpoint and self.checkpoint_due())):
            return False
        task = self.inflight
        if task is None or task.done():
            return True
        return sink.pending >= WAIT_FOR_WRITE_ROWS * self._settings.flush_rows

    async def flush(self, checkpoint: bool = False, wait: bool = False) -> None:
        """Take the buffered rows (and, when due, a checkpoint) and write them beside processing.

        ClickHouse gets every flush interval's rows (dashboards stay live); the checkpoint
        (every changed visitor's record to the changelog) and the acknowledgement follow
        only every checkpoint interval (``Settings.checkpoint_every_s``), or when
        ``checkpoint`` is True (rebalance, shutdown). A visitor active for minutes is then
        serialised once per checkpoint instead of once per flush.

        Everything a flush writes is taken at once, here, under the lock: the rows, the
        changed visitors (``PartitionState.begin_checkpoint``: their states as they are
        now) and the messages to acknowledge. Two tasks then write them while the agent
        goes on applying messages: one the rows (ClickHouse and the sessions topic), the
        other, once those are written, the checkpoint (visitor records, partition records,
        acknowledgements). The next flush waits for the rows task only, so the agent waits
        on ClickHouse only when a flush is due before the previous one finished; the next
        checkpoint also waits for this one. Rows of a later flush may reach ClickHouse
        before this checkpoint is written, never the other way round. Safe because what a
        checkpoint holds is exactly the state the rows taken with it came from: messages
        applied after the take are neither in its records nor acknowledged by it, and a
        crash re-applies every unacknowledged message to the last checkpoint and rewrites
        the same rows. ``wait`` returns only when everything is written (rebalance,
        shutdown).
        """
        await self._settle()
        due = checkpoint or self.checkpoint_due()
        if due and not checkpoint and not self._previous_done():
            # The previous checkpoint is still being encoded or delivered: this one waits
            # for a later flush rather than hold the agent up, unless the input not yet
            # acknowledged reached the event cap: a backlog waits (allowing twice the cap
            # raised the memory per open session of a million-visitor burst from 1,360 B
            # to 1,618-1,640 B).
            due = self.unacked_events >= self._checkpoint_cap()
        if due:
            self._hurry.set()
            await self._settle_checkpoint()
        if self.abandoned:
            return  # a flush gave its rows up (stopping): nothing after it may be acknowledged
        rows = self._sink.take()
        # The rollups are refreshed with checkpoints (see ClickHouseSink.write), or at once
        # when no input waits for one (rows of sessions the clock closed while idle).
        defer = not due and bool(self.unacked or self.uncommitted)
        if due and self._transactions is not None:
            # Everything published so far is the output of the messages this checkpoint
            # acknowledges: it commits with it; what comes after waits for the next one.
            self._transactions.seal()
        writing = self.inflight = asyncio.ensure_future(self._write_rows(rows, defer, due))
        if due:
            partitions = self._runtime.partitions
            checkpoints = [state.begin_checkpoint() for state in partitions.values()]
            unacked, self.unacked = self.unacked, []
            commits, self.uncommitted = self.uncommitted, {}
            self.unacked_events = 0
            now = time.monotonic()
            # Spread over part of the time since the last one: the interval with live
            # traffic, less when the event cap made it due (a backlog).
            spread = ENCODE_SPREAD * min(
                self._settings.checkpoint_every_s(), now - self.last_checkpoint
            )
            self.last_checkpoint = now
            self._hurry.clear()
            self.checkpointing = asyncio.ensure_future(
                self._complete_checkpoint(writing, checkpoints, unacked, commits, spread)
            )
        if wait:
            self._hurry.set()
            await self._settle()
            await self._settle_checkpoint()

    async def _settle(self) -> None:
        """Wait until the rows of the flush under way (if any) are written."""
        task, self.inflight = self.inflight, None
        await _finished(task, "a flush failed")

    async def _settle_checkpoint(self) -> None:
        """Wait until the checkpoint under way (if any) is written and its input acknowledged."""
        task, self.checkpointing = self.checkpointing, None
        await _finished(task, "a checkpoint failed")

    async def _write_rows(self, rows: PendingRows, defer_rollups: bool, checkpoint: bool) -> bool:
        """Write a flush's rows; False if they were given up (stopping with ClickHouse away).

        The writer process publishes them to the sessions topic too (``SessionsPublisher``),
        except with transactions: then they go here, in the transaction of the checkpoint
        that acknowledges their input (this flush's, with ``checkpoint``, else the next).
        """
        runtime = self._runtime
        began = time.monotonic()
        if not await self._sink.write(rows, lambda: runtime.stopping, defer_rollups):
            # Stopping with ClickHouse away: these rows are given up, so no flush after this
            # one may checkpoint or acknowledge anything (its records and acknowledgements
            # would cover messages whose rows were never written); all is redelivered.
            self.abandoned = True
            return False
        runtime.resumed_ms = int(time.time() * 1000)
        if self._transactions is not None and rows.sessions:
            await self._transactions.send_keyed(
                self._settings.sessions_topic, list(rows.sessions.values()), _session_key,
                encode_json, checkpoint=checkpoint,
            )  # fmt: skip
        await self._output.submit()
        took = time.monotonic() - began
        if took >= SLOW_FLUSH_S:
            log.warning(
                "slow flush: %.2f s for %d session rows to ClickHouse and the sessions topic",
                took, len(rows.sessions),
            )  # fmt: skip
        return True

    async def _complete_checkpoint(
        self,
        writing: asyncio.Future[bool],
        checkpoints: list[PendingCheckpoint],
        unacked: list[Unacked],
        commits: dict[int, int],
        spread: float,
    ) -> None:
        """Write what :meth:`flush` took for a checkpoint, once its rows are written.

        The visitor states are encoded beside processing (see :meth:`_encode`), while the
        rows are being written; all at once, they held the event loop for up to a second
        with live traffic.
        """
        began = time.monotonic()
        finished = await self._encode(checkpoints, spread)
        encoded = time.monotonic()
        if not await writing:
            return  # the rows were given up (see _write_rows): nothing may be acknowledged
        written = time.monotonic()
        try:
            records = await self._write_checkpoints(finished)
            if self._transactions is not None:
                # Output, changelog and input offsets commit together, or not at all.
                await self._transactions.commit(*self._input_offsets(unacked, commits))
            else:
                # Output records and changelog writes are acknowledged before the input is.
                await self._deliver_output()
        except Exception:
            # Any failure here (a send timing out with the broker away, a record too large)
            # leaves the drained visitors unwritten: acknowledging anything later could lose
            # them, so stop the way a crash does.
            exit_unrecoverable("checkpoint not written")
        delivered = time.monotonic()
        self._runtime.resumed_ms = int(time.time() * 1000)
        for stream, event in unacked:
            await stream.ack(event)
        if commits and self._commit is not None and self._transactions is None:
            await self._commit(commits)
        release_free_memory()
        took = time.monotonic() - began
        if self._metrics is not None:
            self._metrics.checkpoints.inc()
            self._metrics.checkpoint_records.inc(records)
            self._metrics.checkpoint_seconds.observe(took)
        if took >= SLOW_CHECKPOINT_S:
            log.warning(
                "slow checkpoint: %.2f s (encoding %d records %.2f s, waiting for the rows "
                "%.2f s, records to Kafka %.2f s, %d messages acknowledged)",
                took, records, encoded - began, written - encoded, delivered - written,
                len(unacked),
            )  # fmt: skip

    def _input_offsets(
        self, unacked: list[Unacked], commits: dict[int, int]
    ) -> tuple[dict[TopicPartition, int], str]:
        """The input offsets a checkpoint's transaction commits, and their consumer group.

        Direct mode: the intake's input offsets (group ``<app_id>-intake``). Through the
        by-visitor topic: the next offset of every by-visitor partition acknowledged, for
        Faust's group (the app id); Faust commits the same offsets again once the messages
        are acknowledged after the transaction. One group per transaction (aiokafka's
        limit): in direct mode the by-visitor messages (progress reports) are committed by
        Faust alone, which is safe because their effects are in the changelog records
        committed here, which skip them when delivered again.
        """
        settings = self._settings
        if commits:
            topic = settings.input_topic
            offsets = {TopicPartition(topic, p): offset for p, offset in commits.items()}
            return offsets, f"{settings.app_id}-intake"
        offsets = {}
        for _stream, event in unacked:
            message = event.message
            tp = TopicPartition(message.topic, message.partition)
            offsets[tp] = max(offsets.get(tp, 0), message.offset + 1)
        return offsets, settings.app_id

    async def _encode(
        self, checkpoints: list[PendingCheckpoint], spread: float
    ) -> list[Checkpoint]:
        """Encode the checkpoints' visitor states, spread over ``spread`` seconds.

        A slice at a time, letting the agent apply messages in between (the store encodes
        a state it is about to change first; see ``PendingCheckpoint``), and paced so the
        encoding ends about ``spread`` after it began: ``ENCODE_SPREAD`` of the time since
        the previous checkpoint, at most of the interval (a backlog's checkpoints, due by
        the event cap, come sooner and go faster; their states wait in memory meanwhile).
        With live traffic a checkpoint encodes some 150,000 visitors (0.8 per event at
        20,000 events/s), about a second of CPU: taken as fast as the loop allowed, it
        left the agent a fraction of the core for that second, and the input queued
        behind it (at 19,766 events/s, 60-s runs: p99 4.5 and 6.7 s; paced, 3.5-5.1 s
        in five runs). A flush that must wait for this checkpoint (shutdown, rebalance,
        input at the event cap) ends the pacing (``_hurry``).
        """
        runtime = self._runtime
        total = sum(len(pending.pending) for pending in checkpoints)
        began = time.monotonic()
        done = 0
        finished: list[Checkpoint] = []
        for pending in checkpoints:
            while pending.pending:
                before = len(pending.pending)
                pending.encode_some(ENCODE_SLICE)
                done += before - len(pending.pending)
                ahead = done / total * spread - (time.monotonic() - began)
                if ahead <= 0 or self._hurry.is_set() or runtime.stopping:
                    await asyncio.sleep(0)
                    continue
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._hurry.wait(), min(ahead, ENCODE_PAUSE_S))
            finished.append(pending.finish())
            await asyncio.sleep(0)  # finish drops what is not hot: some 0.1 s each
        return finished

    async def _write_checkpoints(self, checkpoints: list[Checkpoint]) -> int:
        """Every partition's changed visitor records, delivered, then the partition records.

        A partition's record (its sources) must not be durable without the visitor records
        written before it. Returns the number of records written.
        """
        written = 0
        for cp in checkpoints:
            written += len(cp.writes)
            await self._write_checkpoint(cp.partition, cp.visitors)
        owns = [(cp.partition, cp.own) for cp in checkpoints if cp.own is not None]
        if owns:
            if self._transactions is None:  # in a transaction all or none are durable
                await self._deliver_output()
            for partition, own in owns:
                await self._write_checkpoint(partition, [(WATERMARK_KEY, own)])
        return written

    async def _deliver_output(self) -> None:
        """Wait until Kafka has every output and changelog record sent so far, or exit."""
        try:
            await self._output.flush()
        except StreamError:
            # Kafka refused checkpoint or output records even after the client's retries.
            # The changed visitors were drained from the dirty set, so no later flush would
            # write them again, and acknowledging anything from now on could lose events.
            # Stop the way a crash does (no flush, no commit, nothing acknowledged); the
            # restarted worker recovers from the changelog and the redelivered input.
            exit_unrecoverable("output not delivered")

    async def _write_checkpoint(
        self, partition: int, writes: Sequence[tuple[bytes, bytes | None]]
    ) -> None:
        """Write records to the table store and its changelog, in the partition they belong to.

        The changelog records go through the output producer with an explicit partition:
        the same records Faust's ``send_changelog`` would write (key, raw value, ``None``
        to delete), without its per-record bookkeeping. Faust recovers the table from them.
        """
        table = self._table
        changelog = table.changelog_topic.get_topic_name()
        records: list[tuple[bytes, bytes | None]] = []
        for key, value in writes:
            if key == WATERMARK_KEY:
                store_key = watermark_key(partition)
                table.data[store_key] = value
                records.append((store_key, value))
            else:
                records.append((key, value))  # already in the table's store (checkpoint)
        transactions = self._transactions
        for at in range(0, len(records), APPEND_SLICE):
            if at:
                await asyncio.sleep(0)  # a slice at a time, so the agent is not held up
            chunk = records[at : at + APPEND_SLICE]
            if transactions is not None:
                await transactions.send_to_partition(changelog, partition, chunk, checkpoint=True)
            else:
                await self._output.send_to_partition(changelog, partition, chunk)


def _session_key(row: SessionRow) -> bytes:
    """Key of a sessions topic record: its session."""
    return row.session_id.encode()


async def _finished(task: asyncio.Future[Any] | None, failure: str) -> None:
    """Wait for ``task`` (if any); if it failed, stop the way a crash does."""
    if task is None:
        return
    try:
        await task
    except Exception:
        exit_unrecoverable(failure)
