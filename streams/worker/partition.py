"""One partition's share of the worker's state, with exactly-once application of messages.

The worker's state for a partition is a ``Sessionizer`` over the visitor states of the
visitors hashed to that partition. This class adds what the Kafka adapter needs to make
crashes harmless, and nothing about Kafka itself:

* every visitor record carries the offset of the last message applied to it, so a message
  redelivered after a crash is skipped for the visitors it already reached (exactly once
  per visitor, whatever was or was not persisted before the crash);
* the visitor records changed since the last checkpoint are tracked, so a checkpoint writes
  only those (batched state updates), after the rows they produced reached ClickHouse;
* the watermark is part of the checkpoint, so a restarted worker calls the same events late;
* so is the next message offset the partition expects: every message is applied in offset
  order, and a message arriving past a gap (the consumer skipped offsets, which Faust's
  commit bookkeeping can do around a rebalance) is reported by :meth:`gap` so the adapter
  fetches and applies the missing ones first;
* the wall clock may move the watermark only after the partition has had neither a message
  nor a backlog for the idle grace period (the adapter says when messages are waiting), so
  a worker catching up, restarting, or stalled by a ClickHouse outage never turns its own
  backlog late.

Record layout (the value stored in the Faust table): 8-byte big-endian signed offset of
the last applied message, then ``VisitorState.to_bytes()``. The partition's own record
(key ``WATERMARK_KEY``): the 8-byte watermark, then the 8-byte next expected offset (absent
in records written before it existed).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator, MutableMapping
from dataclasses import dataclass

from streams.engine.events import Event
from streams.engine.sessionizer import EngineOutput, SessionConfig, Sessionizer
from streams.engine.stages import StageRules
from streams.engine.state import VisitorState

_OFFSET = struct.Struct(">q")
#: Table key holding a partition's watermark (visitor keys are never empty).
WATERMARK_KEY = b""


class TrackedStore(MutableMapping[str, VisitorState]):
    """A dict of visitor states that remembers which keys changed since :meth:`drain`."""

    __slots__ = ("_data", "dirty")

    def __init__(self, data: dict[str, VisitorState] | None = None) -> None:
        self._data: dict[str, VisitorState] = {} if data is None else data
        self.dirty: set[str] = set()

    def __getitem__(self, key: str) -> VisitorState:
        return self._data[key]

    def get(self, key: str, default: object = None) -> VisitorState | None:  # type: ignore[override]
        """Fast path for the engine's lookups (MutableMapping's get goes through KeyError)."""
        return self._data.get(key)

    def __setitem__(self, key: str, value: VisitorState) -> None:
        self._data[key] = value
        self.dirty.add(key)

    def __delitem__(self, key: str) -> None:
        del self._data[key]
        self.dirty.add(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def drain(self) -> set[str]:
        """The keys changed since the last call; resets the record."""
        dirty, self.dirty = self.dirty, set()
        return dirty


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """Table writes of one partition: (key, value or None to delete), watermark last."""

    partition: int
    writes: list[tuple[bytes, bytes | None]]


class PartitionState:
    """The sessionizer of one partition plus offsets, dirty tracking and checkpoints."""

    def __init__(
        self,
        partition: int,
        config: SessionConfig,
        rules: StageRules,
        records: Iterable[tuple[bytes, bytes]] = (),
        loaded_ms: int | None = None,
    ) -> None:
        """Rebuild from the table records of this partition (empty for a new partition).

        ``loaded_ms`` (wall clock) counts as activity: a partition loaded after a restart
        waits a full idle grace before the clock may move its watermark, so messages still
        on their way are not called late.
        """
        self.partition = partition
        self._applied: dict[str, int] = {}
        states: dict[str, VisitorState] = {}
        watermark: int | None = None
        #: Offset of the next message to apply; None until known (a partition never seen).
        self.next_offset: int | None = None
        #: True when the table held this partition's own record: something was checkpointed.
        #: Without one nothing of the partition was ever acknowledged (every checkpoint that
        #: follows an applied message writes it), so every message in the log is still due.
        self.checkpointed = False
        for raw_key, value in records:
            if raw_key == WATERMARK_KEY:
                self.checkpointed = True
                watermark = _OFFSET.unpack_from(value)[0]
                if len(value) >= 2 * _OFFSET.size:
                    self.next_offset = _OFFSET.unpack_from(value, _OFFSET.size)[0]
                continue
            key = raw_key.decode()
            self._applied[key] = _OFFSET.unpack_from(value)[0]
            states[key] = VisitorState.from_bytes(value[_OFFSET.size :])
        self.store = TrackedStore(states)
        self.sessionizer = Sessionizer(config, rules, self.store)
        if watermark is not None:
            self.sessionizer.restore_watermark(watermark)
        self._checkpointed_watermark = self.sessionizer.watermark_ms
        self._checkpointed_next = self.next_offset
        self.open_sessions = sum(len(state.sessions) for state in states.values())
        self.redelivered = 0
        #: Wall time of the last message applied (loading counts as one).
        self.applied_ms: int | None = loaded_ms
        self._idle_grace_ms = config.idle_grace_ms
        #: Wall time the partition last had work: a message applied or a backlog seen.
        self._busy_ms: int | None = loaded_ms

    def expect_from(self, offset: int) -> None:
        """Set the first offset to apply when none is known (the log start, for a new partition)."""
        if self.next_offset is None:
            self.next_offset = offset

    def gap(self, offset: int) -> range | None:
        """The offsets missing before ``offset`` (apply those first), or None if there are none.

        A message below the expected offset is a redelivery (applied per visitor or not at
        all, see :meth:`apply`); one above it means the consumer skipped messages.
        """
        expected = self.next_offset
        if expected is None or offset <= expected:
            return None
        return range(expected, offset)

    def apply(self, events: list[Event], offset: int, now_ms: int) -> EngineOutput:
        """Apply the events of the message at ``offset``; skip visitors it already reached.

        Messages must come in offset order apart from redeliveries: call :meth:`gap` first.
        """
        if self.next_offset is None or offset >= self.next_offset:
            self.next_offset = offset + 1
        applied = self._applied
        fresh = [ev for ev in events if applied.get(ev.visitor_key, -1) < offset]
        self.redelivered += len(events) - len(fresh)
        self.applied_ms = self._busy_ms = now_ms
        if not fresh:
            # A message redelivered after a crash, already applied in full. Handing the
            # sessionizer an empty batch with the clock would let it judge the partition idle
            # (it has seen no event in this process yet) and move the watermark to the wall
            # clock, turning the rest of the backlog late.
            return EngineOutput(watermark_ms=self.sessionizer.watermark_ms)
        out = self.sessionizer.process(fresh, now_ms)
        for ev in fresh:
            applied[ev.visitor_key] = offset
            # The visitor's record must be rewritten even when its state did not change
            # (duplicates, late events): its applied offset did.
            self.store.dirty.add(ev.visitor_key)
        self._count(out)
        return out

    def advance(self, now_ms: int, backlog: bool = False) -> EngineOutput:
        """Let the wall clock close sessions when the partition is idle.

        ``backlog`` says that messages for this partition are waiting to be applied. The
        sessionizer alone judges idleness by the time since the last event it was given,
        which a stalled consumer (slow producer sends, a ClickHouse outage, a rebalance)
        also reaches while its input piles up, and which a restarted worker reaches at once
        (it has been given no event yet); moving the watermark to the wall clock then would
        call the whole backlog late. So the clock is consulted only once the partition has
        had neither a message nor a backlog for the idle grace period.
        """
        if backlog:
            self._busy_ms = now_ms
        busy = self._busy_ms
        if busy is not None and now_ms - busy < self._idle_grace_ms:
            return EngineOutput(watermark_ms=self.sessionizer.watermark_ms)
        out = self.sessionizer.advance(now_ms)
        self._count(out)
        return out

    def checkpoint(self) -> Checkpoint:
        """Records changed since the last checkpoint, to write after the rows are durable."""
        writes: list[tuple[bytes, bytes | None]] = []
        data = self.store
        for key in sorted(self.store.drain()):
            state = data.get(key)
            if state is None:
                writes.append((key.encode(), None))
                self._applied.pop(key, None)
                continue
            offset = self._applied.get(key, -1)
            writes.append((key.encode(), _OFFSET.pack(offset) + state.to_bytes()))
        watermark = self.sessionizer.watermark_ms
        if watermark != self._checkpointed_watermark or self.next_offset != self._checkpointed_next:
            # An unknown next offset (nothing applied yet) is not written: -1 would read back
            # as "expect offset -1", which every message passes anyway, so the form is moot.
            record = _OFFSET.pack(watermark)
            if self.next_offset is not None:
                record += _OFFSET.pack(self.next_offset)
            writes.append((WATERMARK_KEY, record))
            self._checkpointed_watermark = watermark
            self._checkpointed_next = self.next_offset
        return Checkpoint(self.partition, writes)

    def _count(self, out: EngineOutput) -> None:
        self.open_sessions += out.opened - out.closed - len(out.removed_session_ids)
