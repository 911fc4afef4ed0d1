"""One partition's share of the worker's state, with exactly-once application of messages.

The worker's state for a partition is a ``Sessionizer`` over the visitor states of the
visitors hashed to that partition. This class adds what the Kafka adapter needs to make
crashes harmless, and nothing about Kafka itself:

* every visitor record carries the offset of the last message applied to it, so a message
  redelivered after a crash is skipped for the visitors it already reached (exactly once
  per visitor, whatever was or was not persisted before the crash);
* per input partition, the source (input offset, index in the message) of the last event
  taken from it: the intake forwards each input partition's events in order, so an event
  at or before that source was forwarded twice (the intake re-read its input after a
  crash or a rebalance) and is dropped, never called late;
* the event-time progress of every input partition (``InputProgress``), merged from the
  reports that come with the forwarded events. The watermark is the slowest input
  partition's progress minus the allowed lateness, so how unevenly the input partitions
  are read never makes an event late (docs/architecture.md, "Event time across
  partitions");
* the visitor records changed since the last checkpoint are tracked, so a checkpoint writes
  only those (batched state updates), after the rows they produced reached ClickHouse;
* the watermark, the input progress and sources are part of the checkpoint, so a
  restarted worker calls the same events late and drops the same re-forwarded ones;
* so is the next message offset the partition expects: every message is applied in offset
  order, and a message arriving past a gap (the consumer skipped offsets, which Faust's
  commit bookkeeping can do around a rebalance) is reported by :meth:`gap` so the adapter
  fetches and applies the missing ones first.

Record layout (the value stored in the Faust table): 8-byte big-endian signed offset of
the last applied message, then ``VisitorState.to_bytes()``. The partition's own record
(key ``WATERMARK_KEY``): the 8-byte watermark, the 8-byte next expected offset (-1:
unknown), then a JSON object ``{"t": input topic, "n": input partitions, "p": [[input
partition, progress ms], ...], "s": [[input partition, offset, index], ...]}``, plus
``"d": 1`` when the partition takes its input directly (``apply_direct``), ``"i"``
naming the pseudonymisation of its visitor keys under ``JOURNEY_PII`` hash/drop, and
``"c"`` the offset of the next customer signal to apply (``apply_signals``). Customer
records (key ``CUSTOMER_PREFIX`` and the customer key) hold a ``CustomerState``. Records
written before the JSON existed (8 or 16 bytes) still load.

The partition's record must never be durable without the visitor records written before
it (the sources it holds would drop the redelivered events of a visitor whose record was
lost): the adapter delivers the visitor records of a checkpoint before its own record
(``Checkpoint.visitors``, then ``Checkpoint.own``).
"""

from __future__ import annotations

import itertools
import logging
import struct
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, MutableMapping
from dataclasses import dataclass

import msgspec
import orjson

from streams.engine.customers import (
    CustomerState,
    CustomerTransition,
    Signal,
    apply_signal,
    decode_customer,
    encode_customer,
)
from streams.engine.events import Event
from streams.engine.progress import InputProgress, ProgressReport
from streams.engine.sessionizer import EngineOutput, SessionConfig, Sessionizer
from streams.engine.stages import StageRules
from streams.engine.state import Corrupt, VisitorState, decode_state
from streams.worker.codec import Forwarded, Source, report_in_bounds

log = logging.getLogger(__name__)

_OFFSET = struct.Struct(">q")
#: Table key holding a partition's watermark (visitor keys are never empty).
WATERMARK_KEY = b""
#: Table keys of customer records start with this (visitor keys never start with NUL).
CUSTOMER_PREFIX = b"\x00customer:"


def customer_record_key(customer_key: str) -> bytes:
    """Table key of a customer's record (in the partition its customer key hashes to)."""
    return CUSTOMER_PREFIX + customer_key.encode()


def decode_visitor(key: str, record: bytes) -> VisitorState | Corrupt:
    """The state in visitor ``key``'s record (after its 8-byte applied offset), or Corrupt."""
    if len(record) <= _OFFSET.size:
        return Corrupt(f"a visitor record of {len(record)} bytes")
    return decode_state(record[_OFFSET.size :], key)


def _decode_visitor(key: str, record: bytes) -> VisitorState:
    """The state in visitor ``key``'s record; a new visitor's if it cannot be decoded.

    Records are screened when the table is recovered (``worker/changelog.py``), which
    counts and dead-letters a corrupt one and keeps it out of the store; this is the last
    guard, so that nothing that reaches the store anyway can stop the partition.
    """
    state = decode_visitor(key, record)
    if isinstance(state, Corrupt):
        log.error("visitor record of %r cannot be decoded (%s); starting it empty", key,
                  state.detail)  # fmt: skip
        return VisitorState(visitor_key=key)
    return state


class _OwnExtra(msgspec.Struct, frozen=True):
    """The JSON part of a partition's record (see the module docstring)."""

    n: int
    p: list[tuple[int, int]]
    s: list[tuple[int, int, int]]
    t: str | None = None
    d: int = 0
    i: str = ""
    c: int = -1


_decode_own_extra = msgspec.json.Decoder(_OwnExtra).decode


@dataclass(frozen=True, slots=True)
class OwnRecord:
    """A partition's record decoded: watermark, next offset (None: unknown) and the rest."""

    watermark: int
    next_offset: int | None = None
    extra: _OwnExtra | None = None


def decode_own_record(value: bytes) -> OwnRecord | Corrupt:
    """The partition's record (key ``WATERMARK_KEY``) decoded, or why it cannot be."""
    size = _OFFSET.size
    if len(value) < size or size < len(value) < 2 * size:
        return Corrupt(f"a partition record of {len(value)} bytes")
    watermark: int = _OFFSET.unpack_from(value)[0]
    if len(value) == size:
        return OwnRecord(watermark)
    next_offset: int = _OFFSET.unpack_from(value, size)[0]
    if next_offset < -1:
        return Corrupt(f"next offset {next_offset}")
    extra = None
    if len(value) > 2 * size:
        try:
            extra = _decode_own_extra(value[2 * size :])
        except msgspec.DecodeError as exc:
            return Corrupt(f"partition record: {exc}")
        if not report_in_bounds(extra.n, extra.p):
            return Corrupt(f"partition record: progress of {extra.n} input partitions")
    return OwnRecord(watermark, next_offset if next_offset >= 0 else None, extra)


def _every_key(raw: bytes) -> bool:
    return True


#: How long a visitor written at a checkpoint stays in memory as objects (wall clock).
#: A shopper's next click usually comes within seconds (the traffic model's median gap
#: is about 7 s, its 90th percentile 18 s); kept this long, it finds its state and its
#: open session's running summary ready instead of decoding and re-summarising them.
HOT_MS = 20_000
#: At most this many visitors of one partition stay in memory beyond their checkpoint
#: (the oldest go first): a burst of new visitors must not hold every one as objects.
#: At 20,000 events/s over 4 partitions a partition writes about 9,000 visitors per 2-s
#: checkpoint, so 25,000 kept them some 5 s, less than most gaps between clicks: a
#: quarter of a live event's cost went to dropping, decoding and re-summarising states
#: (p99 22 s at 19,800 events/s; 10 s with 50,000, and 985 B per open session for a
#: million one-event visitors opened at once, against 881 B).
HOT_LIMIT = 50_000


class TieredStore(MutableMapping[str, VisitorState]):
    """Visitor states: recently written ones as objects, the rest as their checkpoint bytes.

    Most open sessions sit idle until they time out (30 minutes by default), and as
    objects a visitor's state costs several times its bytes. So a state written at a
    checkpoint stays in ``hot`` for ``hot_ms`` more (the visitors active now, whose next
    event is likely soon; at most ``hot_limit`` of them, the oldest are dropped first),
    every other state is dropped from memory (:meth:`retire`), and its record in
    ``cold`` (the table's store, where the checkpoint put the bytes) is decoded again when
    the visitor's next event or its session's close needs it (``load``). A state read
    from ``cold`` and not changed leaves memory at the next checkpoint. The keys that
    changed since the last :meth:`drain` are remembered, so a checkpoint writes only those.
    """

    __slots__ = (
        "_cold", "_deleted", "_generations", "_load", "_loaded", "_owns", "_written_at",
        "dirty", "hot", "hot_limit", "hot_ms", "snapshot",
    )  # fmt: skip

    def __init__(
        self,
        cold: MutableMapping[bytes, bytes],
        load: Callable[[str, bytes], VisitorState],
        owns: Callable[[bytes], bool],
        hot_ms: int = HOT_MS,
        hot_limit: int = HOT_LIMIT,
    ) -> None:
        """``load(key, record)`` decodes a record; ``owns`` tells this partition's keys in cold."""
        self.hot: dict[str, VisitorState] = {}
        self._cold = cold
        self._load = load
        self._owns = owns
        self.hot_ms = hot_ms
        self.hot_limit = hot_limit
        self.dirty: set[str] = set()
        self._deleted: set[str] = set()
        #: Keys decoded from ``cold`` since the last checkpoint.
        self._loaded: set[str] = set()
        #: Key -> number of the checkpoint that last wrote it (for those kept in ``hot``).
        self._written_at: dict[str, int] = {}
        #: (number, wall ms, keys written) of the checkpoints whose keys may still be hot.
        self._generations: deque[tuple[int, int, list[str]]] = deque()
        #: The checkpoint being encoded, if any: a state it has not encoded yet is encoded
        #: before anyone may change it (see ``PendingCheckpoint``).
        self.snapshot: PendingCheckpoint | None = None

    def get(self, key: str, default: object = None) -> VisitorState | None:  # type: ignore[override]
        """The state of ``key`` (decoded from its record if it is not in memory), or None."""
        snapshot = self.snapshot
        if snapshot is not None and key in snapshot.pending:
            snapshot.encode(key)
        state = self.hot.get(key)
        if state is None:
            record = self._cold.get(key.encode())
            if record:  # None or b"" is a deletion Faust recovered
                state = self.hot[key] = self._load(key, record)
                self._loaded.add(key)
        return state

    def __getitem__(self, key: str) -> VisitorState:
        state = self.get(key)
        if state is None:
            raise KeyError(key)
        return state

    def __setitem__(self, key: str, value: VisitorState) -> None:
        snapshot = self.snapshot
        if snapshot is not None and key in snapshot.pending:
            snapshot.encode(key)
        self.hot[key] = value
        self.dirty.add(key)
        self._deleted.discard(key)

    def __delitem__(self, key: str) -> None:
        snapshot = self.snapshot
        if snapshot is not None and key in snapshot.pending:
            snapshot.encode(key)
        if self.hot.pop(key, None) is None and key.encode() not in self._cold:
            raise KeyError(key)
        self.dirty.add(key)
        self._deleted.add(key)

    def __iter__(self) -> Iterator[str]:
        yield from self.hot
        for raw, record in list(self._cold.items()):
            if record and raw[:1] != b"\x00" and self._owns(raw):
                key = raw.decode()
                if key not in self.hot:
                    yield key

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def items(self) -> Iterator[tuple[str, VisitorState]]:  # type: ignore[override]
        """Every state; those only in ``cold`` are decoded without being kept in memory."""
        yield from list(self.hot.items())
        for raw, record in list(self._cold.items()):
            if record and raw[:1] != b"\x00" and self._owns(raw):
                key = raw.decode()
                if key not in self.hot:
                    yield key, self._load(key, record)

    def record(self, key: str) -> bytes | None:
        """The checkpointed record of ``key``, if any."""
        return self._cold.get(key.encode()) or None

    def put_record(self, key: str, record: bytes | None) -> None:
        """Store (or with None remove) the checkpointed record of ``key``."""
        if record is None:
            self._cold.pop(key.encode(), None)
        else:
            self._cold[key.encode()] = record

    def retire(self, written: list[str], now_ms: int) -> None:
        """After a checkpoint that wrote ``written`` (all clean now): drop what is not hot.

        Dropped: states read from ``cold`` since the last checkpoint and not written, and
        states last written ``hot_ms`` ago or earlier, or by the oldest checkpoints while
        more than ``hot_limit`` states are kept (never those of this checkpoint).
        """
        hot = self.hot
        written_at = self._written_at
        generations = self._generations
        number = generations[-1][0] + 1 if generations else 0
        for key in written:
            written_at[key] = number
        for key in self._loaded:
            if key not in written_at and key not in self.dirty:
                hot.pop(key, None)
        self._loaded = set()
        generations.append((number, now_ms, written))
        oldest = now_ms - self.hot_ms
        limit = self.hot_limit
        # The checkpoint just made stays (the visitors it wrote are the active ones), up to
        # the limit: one that wrote more (a burst of new visitors, a backlog) keeps those
        # it wrote last, encoded as they changed after the take (see PendingCheckpoint).
        while len(generations) > 1 and (generations[0][1] <= oldest or len(written_at) > limit):
            gone, _, keys = generations.popleft()
            for key in keys:
                if written_at.get(key) == gone:
                    del written_at[key]
                    if key not in self.dirty:
                        hot.pop(key, None)
        excess = len(written_at) - limit
        for key in written[: max(0, excess)]:
            if written_at.get(key) == number:
                del written_at[key]
                if key not in self.dirty:
                    hot.pop(key, None)

    def drain(self) -> set[str]:
        """The keys changed since the last call; resets the record."""
        dirty, self.dirty = self.dirty, set()
        return dirty

    def drain_deleted(self) -> set[str]:
        """The keys deleted (and not set again) since the last call; resets the record.

        A changed key neither in memory nor deleted is a visitor whose events did not
        reach its state (late or duplicate ones): its record stays, with a new offset.
        """
        deleted, self._deleted = self._deleted, set()
        return deleted


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """Table writes of one partition: (key, value or None to delete).

    ``visitors`` must be durable before ``own`` (the partition's record, None when it did
    not change) is written.
    """

    partition: int
    visitors: list[tuple[bytes, bytes | None]]
    own: bytes | None = None

    @property
    def writes(self) -> list[tuple[bytes, bytes | None]]:
        """Every write in order: the visitors, then the partition's record."""
        if self.own is None:
            return self.visitors
        return [*self.visitors, (WATERMARK_KEY, self.own)]


class PendingCheckpoint:
    """A checkpoint taken (:meth:`PartitionState.begin_checkpoint`) and not yet encoded.

    ``pending`` maps each visitor still to encode to its applied offset at the take. The
    owner encodes a slice at a time (:meth:`encode_some`) and the store encodes a visitor
    out of turn when the sessionizer is about to change it (``TieredStore.snapshot``), so
    every record is the state at the take, as if all had been encoded then. Each record
    goes into the store's ``cold`` mapping as it is encoded; :meth:`finish` then lets the
    store drop the states it no longer keeps and returns the ``Checkpoint``.
    """

    __slots__ = ("_state", "own", "pending", "writes", "written")

    def __init__(self, state: PartitionState) -> None:
        self._state = state
        self.pending: dict[str, int] = {}
        self.writes: list[tuple[bytes, bytes | None]] = []
        #: Keys encoded from their state in memory.
        self.written: list[str] = []
        self.own: bytes | None = None

    def encode(self, key: str) -> None:
        """Encode the pending visitor ``key`` now (it is about to change)."""
        offset = self.pending.pop(key)
        store = self._state.store
        value = _OFFSET.pack(offset) + store.hot[key].to_bytes()
        self.writes.append((key.encode(), value))
        store.put_record(key, value)
        self.written.append(key)
        if not self.pending:
            store.snapshot = None

    def encode_some(self, count: int) -> bool:
        """Encode up to ``count`` pending visitors; True while some remain."""
        pending = self.pending
        for key in list(itertools.islice(pending, count)):
            self.encode(key)
        return bool(pending)

    def finish(self, now_ms: int | None = None) -> Checkpoint:
        """The checkpoint, once every visitor is encoded; the store drops what is not hot.

        ``now_ms``: the wall clock (read when not given).
        """
        while self.encode_some(len(self.pending)):
            pass
        state = self._state
        store = state.store
        store.retire(self.written, int(time.time() * 1000) if now_ms is None else now_ms)
        # Offsets are kept for the visitors this checkpoint wrote and those changed since
        # its take; any other's is the one its record holds (read from there when needed).
        applied = state._applied
        kept = {key: applied[key] for key in self.written if key in applied}
        for key in store.dirty:
            offset = applied.get(key)
            if offset is not None:
                kept[key] = offset
        state._applied = kept
        return Checkpoint(state.partition, self.writes, self.own)


class PartitionState:
    """The sessionizer of one partition plus offsets, sources, input progress and checkpoints."""

    def __init__(
        self,
        partition: int,
        config: SessionConfig,
        rules: StageRules,
        records: Iterable[tuple[bytes, bytes]] = (),
        loaded_ms: int | None = None,
        cold: MutableMapping[bytes, bytes] | None = None,
        owns: Callable[[bytes], bool] | None = None,
        hot_ms: int = HOT_MS,
        hot_limit: int = HOT_LIMIT,
        direct: bool = False,
        ids: str = "",
    ) -> None:
        """Rebuild from the table records of this partition (empty for a new partition).

        ``cold`` is where checkpointed visitor records are kept, by key (the table's
        store, which the worker's records of every partition share; ``owns`` tells this
        partition's keys among them). Without it the records are kept in a private
        mapping. ``loaded_ms`` (wall clock) counts as the time a message was last applied.
        ``hot_ms`` and ``hot_limit``: how long and how many written visitors stay in
        memory as objects (``TieredStore``). ``direct``: events come straight from the
        input partition of the same number (:meth:`apply_direct`), not through the
        by-visitor topic; the mode is recorded with the partition (``recorded_direct``).
        ``ids``: what its visitor keys are (``Settings.pii_identity``: ``""`` raw ids), also
        recorded (``recorded_ids``).
        """
        self.partition = partition
        self.direct = direct
        self.ids = ids
        #: The mode the partition's record was written in (False for a new partition).
        self.recorded_direct = False
        #: The visitor keys' pseudonymisation the record was written with ("" raw ids).
        self.recorded_ids = ""
        #: Bumped by the adapter at every load: input fetched before it is not applied.
        self.epoch = 0
        #: Applied offset of the visitors in memory (the others' is in their record).
        self._applied: dict[str, int] = {}
        watermark: int | None = None
        #: Offset of the next message to apply; None until known (a partition never seen).
        self.next_offset: int | None = None
        #: True when the table held this partition's own record: something was checkpointed.
        #: Without one nothing of the partition was ever acknowledged (every checkpoint that
        #: follows an applied message writes it), so every message in the log is still due.
        self.checkpointed = False
        #: Event-time progress of every input partition, as reported with the messages.
        self.input = InputProgress()
        #: Input partition -> (offset, index) of the last event taken from it.
        self.sources: dict[int, tuple[int, int]] = {}
        #: The input topic ``sources`` and ``input`` refer to (None until a message says).
        self.input_topic: str | None = None
        #: Offset of the next customer signal to apply (None: none applied yet).
        self.signals_next: int | None = None
        #: Customers changed since the last checkpoint (the others are in their record).
        self.customers: dict[str, CustomerState] = {}
        private = cold is None
        records_of: MutableMapping[bytes, bytes] = {} if cold is None else cold
        self._cold = records_of
        for raw_key, value in records:
            if raw_key == WATERMARK_KEY:
                own = decode_own_record(value)
                if isinstance(own, Corrupt):
                    # Screened at recovery (worker/changelog.py); the last guard: as if the
                    # partition had never been checkpointed (every message in the log due).
                    log.error("partition %d: its record cannot be decoded (%s); ignored",
                              partition, own.detail)  # fmt: skip
                    continue
                self.checkpointed = True
                watermark = self._load_own_record(own)
            elif private:
                records_of[raw_key] = value
        self.store = TieredStore(records_of, _decode_visitor, owns or _every_key, hot_ms, hot_limit)
        self.sessionizer = Sessionizer(config, rules, self.store, external_watermark=True)
        if watermark is not None:
            self.sessionizer.restore_watermark(watermark)
        self._lateness_ms = config.allowed_lateness_ms
        self._checkpointed_record = self._own_record() if self.checkpointed else None
        self.open_sessions = self.sessionizer.indexed_sessions
        #: Events skipped because their visitor's record already held their message.
        self.redelivered = 0
        #: Wall time of the last message applied (loading counts as one).
        self.applied_ms: int | None = loaded_ms

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

    def apply(self, message: Forwarded, offset: int, now_ms: int) -> EngineOutput:
        """Apply the message at ``offset``: its new events, then its progress report.

        Skipped: events of visitors whose record already holds this message (a redelivery
        after a crash), and events whose source is not past the last one taken from their
        input partition (forwarded twice; counted in ``EngineOutput.duplicates``). Every
        source seen moves the last one, skipped or not: after a restore from a checkpoint
        older than some visitor records, a redelivered message skipped for its visitor
        must still let a later copy of it be recognised. Then the report raises the
        watermark to the slowest input partition's progress minus the allowed lateness.
        Messages must come in offset order apart from redeliveries: call :meth:`gap` first.
        """
        if self.next_offset is None or offset >= self.next_offset:
            self.next_offset = offset + 1
        self.applied_ms = now_ms
        if message.topic is not None and message.topic != self.input_topic:
            self._switch_topic(message.topic)
        events = message.events
        if message.sources:
            fresh, offsets, copies = self._sift(events, message.sources, offset)
        else:
            applied = self._applied_of
            fresh = [ev for ev in events if applied(ev.visitor_key) < offset]
            offsets, copies = [offset] * len(fresh), 0
            self.redelivered += len(events) - len(fresh)
        return self._take(fresh, offsets, copies, message.report, now_ms)

    def apply_direct(
        self,
        topic: str,
        events: list[Event],
        sources: list[Source],
        report: ProgressReport | None,
        now_ms: int,
    ) -> EngineOutput:
        """Apply events read straight from the input partition of this number, then ``report``.

        The path without the by-visitor hop (input keyed by visitor; docs/architecture.md):
        each event's input offset stands in for the message offset of :meth:`apply`. A
        visitor whose record already holds an event's input offset skips it (applied
        before a crash, re-read from the last commit), and an event whose source is not
        past the last one taken from its input partition is a copy (counted in
        ``EngineOutput.duplicates``). ``events`` come in input order.
        """
        self.applied_ms = now_ms
        if topic != self.input_topic:
            self._switch_topic(topic)
        fresh, offsets, copies = self._sift(events, sources, None)
        return self._take(fresh, offsets, copies, report, now_ms)

    def _sift(
        self, events: list[Event], sources: list[Source], offset: int | None
    ) -> tuple[list[Event], list[int], int]:
        """The events to apply, each with its offset, and how many were copies.

        ``offset``: the message offset every event is applied at (the hop), or None for
        each event's own input offset (direct). An event is skipped when its visitor's
        record already holds that offset (counted in ``redelivered``), or else dropped as
        a copy when its source is not past the last one taken from its input partition.
        Every source seen moves the last one, skipped or not: after a restore from a
        checkpoint older than some visitor records, a skipped event must still let a
        later copy of it be recognised.
        """
        applied = self._applied_of
        last_sources = self.sources
        fresh: list[Event] = []
        offsets: list[int] = []
        copies = skipped = 0
        for ev, (part, in_offset, index) in zip(events, sources, strict=True):
            source = (in_offset, index)
            last = last_sources.get(part)
            seen = last is not None and source <= last
            if not seen:
                last_sources[part] = source
            at = in_offset if offset is None else offset
            if applied(ev.visitor_key) >= at:
                skipped += 1
            elif seen:
                copies += 1
            else:
                fresh.append(ev)
                offsets.append(at)
        self.redelivered += skipped
        return fresh, offsets, copies

    def _take(
        self,
        fresh: list[Event],
        offsets: list[int],
        copies: int,
        report: ProgressReport | None,
        now_ms: int,
    ) -> EngineOutput:
        """Sessionize ``fresh`` (each applied at its offset), then raise the watermark."""
        watermark: int | None = None
        if report is not None:
            self.input.update(report)
            low = self.input.low_ms()
            if low is not None:
                watermark = low - self._lateness_ms
        out = self.sessionizer.process(fresh, now_ms, watermark)
        out.duplicates += copies
        dirty = self.store.dirty
        applied_now = self._applied
        for ev, offset in zip(fresh, offsets, strict=True):
            applied_now[ev.visitor_key] = offset
            # The visitor's record must be rewritten even when its state did not change
            # (duplicates, late events): its applied offset did.
            dirty.add(ev.visitor_key)
        self._count(out)
        return out

    def apply_signals(
        self, signals: Iterable[tuple[int, Signal | Corrupt]]
    ) -> tuple[list[CustomerTransition], list[tuple[int, Corrupt]]]:
        """Apply customer signals at their offsets of the signals topic, in order.

        A signal below :attr:`signals_next` was taken before (read again after a restart
        from an earlier position) and is skipped; applying one again would change nothing
        anyway (``apply_signal`` is idempotent). A record that did not decode is taken
        and skipped. Returns the customer transitions made, and the records that did not
        decode taken now (to dead-letter once).
        """
        made: list[CustomerTransition] = []
        corrupt: list[tuple[int, Corrupt]] = []
        customers = self.customers
        for offset, signal in signals:
            if self.signals_next is not None and offset < self.signals_next:
                continue
            self.signals_next = offset + 1
            if isinstance(signal, Corrupt):
                corrupt.append((offset, signal))
                continue
            key = signal.customer_key
            state = customers.get(key)
            if state is None:
                state = self._recorded_customer(key)
            before = (state.first_purchase_session, state.retained, state.advocate)
            transition = apply_signal(state, signal)
            if (state.first_purchase_session, state.retained, state.advocate) != before:
                customers[key] = state
            if transition is not None:
                made.append(transition)
        return made, corrupt

    def _recorded_customer(self, key: str) -> CustomerState:
        """The customer's state as its record holds it, or a new one."""
        record = self._cold.get(customer_record_key(key))
        if record is None:
            return CustomerState()
        state = decode_customer(record)
        if isinstance(state, Corrupt):
            # Screened at recovery (worker/changelog.py): only a record written since.
            log.error("customer record of %r cannot be decoded (%s); starting it empty",
                      key, state.detail)  # fmt: skip
            return CustomerState()
        return state

    def _switch_topic(self, topic: str) -> None:
        """Messages now come from another input topic: its offsets and progress start afresh.

        The watermark stays (it never goes back). Without this, a worker pointed at a new
        topic would take its low offsets for copies of the old topic's and drop them.
        """
        if self.input_topic is not None:
            log.warning(
                "partition %d: input topic changed from %r to %r; input progress and sources "
                "start afresh", self.partition, self.input_topic, topic,
            )  # fmt: skip
            self.sources = {}
            self.input = InputProgress()
        self.input_topic = topic

    def _applied_of(self, key: str) -> int:
        """Offset of the last message applied to ``key``'s visitor (-1: none)."""
        offset = self._applied.get(key)
        if offset is None:
            record = self.store.record(key)
            if record is None or len(record) < _OFFSET.size:
                return -1
            offset = _OFFSET.unpack_from(record)[0]
        return offset

    def checkpoint(self, now_ms: int | None = None) -> Checkpoint:
        """Records changed since the last checkpoint, to write after the rows are durable.

        :meth:`begin_checkpoint` and its whole encoding at once (tests, and callers that
        do not mind the pause).
        """
        return self.begin_checkpoint().finish(now_ms)

    def begin_checkpoint(self) -> PendingCheckpoint:
        """Take the records changed since the last checkpoint, to be encoded bit by bit.

        The checkpoint holds the state as it is now: the visitors changed since the last
        one, each with its applied offset now, and the partition's record now. Encoding
        some 50,000 visitor states at once held the event loop for up to a second at
        20,000 events/s; instead the caller encodes them a slice at a time between
        messages (:meth:`PendingCheckpoint.encode_some`), and a state the sessionizer is
        about to change is encoded first, as it was (``TieredStore.snapshot``). Deletions
        and offset-only records are made here: they cost no encoding.
        """
        store = self.store
        if store.snapshot is not None:
            raise RuntimeError("a checkpoint is still being encoded")
        deleted = store.drain_deleted()
        pending = PendingCheckpoint(self)
        applied = self._applied
        writes = pending.writes
        for key in store.drain():
            if key in store.hot:
                pending.pending[key] = self._applied_of(key)
                continue
            raw_key = key.encode()
            if key in deleted:
                writes.append((raw_key, None))
                store.put_record(key, None)
                applied.pop(key, None)
                continue
            # Not in memory, so unchanged since its record (its events were late or
            # duplicates): only the applied offset moves, the state stays as recorded.
            recorded = store.record(key)
            offset = applied.get(key)
            if recorded is None or offset is None:
                continue  # nothing recorded and nothing to record
            value = _OFFSET.pack(offset) + recorded[_OFFSET.size :]
            writes.append((raw_key, value))
            store.put_record(key, value)
        if self.customers:
            cold = self._cold
            for key, customer in self.customers.items():
                raw_key = customer_record_key(key)
                value = encode_customer(customer)
                writes.append((raw_key, value))
                cold[raw_key] = value
            self.customers = {}
        record: bytes | None = self._own_record()
        if record == self._checkpointed_record:
            record = None
        else:
            self._checkpointed_record = record
        pending.own = record
        if pending.pending:
            store.snapshot = pending
        return pending

    def _own_record(self) -> bytes:
        """The partition's record: watermark, next offset, input progress and sources."""
        extra: dict[str, object] = {
            "t": self.input_topic,
            "n": self.input.partitions,
            "p": sorted(self.input.progress.items()),
            "s": [(part, *source) for part, source in sorted(self.sources.items())],
        }
        if self.direct:
            extra["d"] = 1
        if self.ids:
            extra["i"] = self.ids
        if self.signals_next is not None:
            extra["c"] = self.signals_next
        next_offset = -1 if self.next_offset is None else self.next_offset
        return (
            _OFFSET.pack(self.sessionizer.watermark_ms)
            + _OFFSET.pack(next_offset)
            + orjson.dumps(extra)
        )

    def _load_own_record(self, own: OwnRecord) -> int:
        """Restore next offset, progress and sources from the partition's record; its watermark."""
        self.next_offset = own.next_offset
        extra = own.extra
        if extra is not None:
            self.input = InputProgress(extra.n, {part: ms for part, ms in extra.p})
            self.sources = {part: (offset, index) for part, offset, index in extra.s}
            self.input_topic = extra.t
            self.recorded_direct = bool(extra.d)
            self.recorded_ids = extra.i
            self.signals_next = extra.c if extra.c >= 0 else None
        return own.watermark

    def _count(self, out: EngineOutput) -> None:
        self.open_sessions += out.opened - out.closed - len(out.removed_session_ids)
