"""Event-time progress across input partitions: what makes an event late (SPEC section 4).

An event is late only against the event-time progress of the slowest active *input*
partition, never against the fastest. A worker catching up on a backlog reads its input
partitions unevenly (one may run days of event time ahead of another within one fetch),
so a watermark taken from the highest event time seen would call most of the backlog late.
Flink keeps a watermark per source partition and takes the minimum, letting a partition
that has gone idle drop out; this module is that idea, carried across the worker's
repartition hop. Two halves, both pure:

* :class:`SourceProgress` lives in the intake, which reads the input partitions. Per
  owned input partition it knows the highest event time read so far and when a record
  last came. Its :meth:`~SourceProgress.report` gives each partition's progress: that
  highest event time, or, once the partition is *idle* (read to its end and without a
  record for ``idle_ms`` of wall time), at least ``now - idle_ms``. So an empty partition,
  or one whose traffic stopped, stops holding the others back after ``idle_ms``, and when
  every partition is idle the watermark follows the wall clock (sessions close when
  traffic stops).
* :class:`InputProgress` lives with the state of each by-visitor partition. The reports
  arrive in the same messages as the forwarded events, after them, so a report never
  overtakes the events it covers. It keeps the highest progress reported for every input
  partition (several intakes, one per worker, each report their own partitions) and its
  :meth:`~InputProgress.low_ms` is the minimum over all input partitions; one never
  reported holds it back.

With input in event-time order per partition, or out of order by less than the allowed
lateness, an event is never below ``low_ms - allowed lateness`` when it arrives: every
report covering its partition was made from events read before it.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ProgressReport:
    """One intake's view: the input topic's partition count and its partitions' progress.

    ``progress`` holds ``(input partition, event time in epoch ms)`` for every partition
    the intake owns and knows something about; partitions it has read nothing from and
    that are not idle yet are left out (unknown).
    """

    partitions: int
    progress: tuple[tuple[int, int], ...]


@dataclass(slots=True)
class _Source:
    top_ms: int | None
    last_record_ms: int


class SourceProgress:
    """The intake's per-input-partition event-time progress and idleness."""

    __slots__ = ("_sources", "idle_ms", "partitions")

    def __init__(self, idle_ms: int) -> None:
        """``idle_ms``: wall time a caught-up partition must go without records to be idle."""
        self.idle_ms = idle_ms
        #: Partition count of the input topic (0 while unknown).
        self.partitions = 0
        self._sources: dict[int, _Source] = {}

    def assign(self, partitions: Iterable[int], now_ms: int) -> None:
        """The partitions the intake owns now; a newly owned one counts as active at ``now_ms``.

        A partition moved to another intake leaves this one's reports (its new owner
        reports it); one that comes back starts afresh, since what it held may be stale.
        """
        owned = set(partitions)
        for partition in list(self._sources):
            if partition not in owned:
                del self._sources[partition]
        for partition in owned:
            if partition not in self._sources:
                self._sources[partition] = _Source(None, now_ms)

    def observe(self, tops: Mapping[int, int | None], now_ms: int) -> None:
        """Records were read: per partition, the highest accepted event time (None: none).

        Only accepted events count as traffic: a partition that gets nothing but rejected
        records (tombstones, health checks) still goes idle, or it would hold the
        watermark for ever.
        """
        sources = self._sources
        for partition, top in tops.items():
            source = sources.get(partition)
            if source is None:
                source = sources[partition] = _Source(None, now_ms)
            if top is None:
                continue
            source.last_record_ms = now_ms
            if source.top_ms is None or top > source.top_ms:
                source.top_ms = top

    def quiet(self, now_ms: int) -> list[int]:
        """The owned partitions without an accepted event for ``idle_ms``: idle if caught up."""
        return [p for p, source in self._sources.items() if self._quiet(source, now_ms)]

    def _quiet(self, source: _Source, now_ms: int) -> bool:
        return now_ms - source.last_record_ms >= self.idle_ms

    def report(self, caught_up: Collection[int], now_ms: int) -> ProgressReport:
        """Progress of every owned partition; ``caught_up``: those read up to their end."""
        progress: list[tuple[int, int]] = []
        for partition in sorted(self._sources):
            source = self._sources[partition]
            value = source.top_ms
            if partition in caught_up and self._quiet(source, now_ms):
                clock = now_ms - self.idle_ms
                value = clock if value is None else max(value, clock)
            if value is not None:
                progress.append((partition, value))
        return ProgressReport(self.partitions, tuple(progress))


class InputProgress:
    """Progress of every input partition as reported to one by-visitor partition."""

    __slots__ = ("partitions", "progress")

    def __init__(self, partitions: int = 0, progress: Mapping[int, int] | None = None) -> None:
        """Empty, or restored from a checkpoint."""
        #: Partition count of the input topic (the largest reported).
        self.partitions = partitions
        #: Input partition -> the highest event-time progress reported for it.
        self.progress: dict[int, int] = dict(progress or {})

    def update(self, report: ProgressReport) -> None:
        """Merge one report; progress never goes back (a restarted intake re-reads)."""
        if report.partitions > self.partitions:
            self.partitions = report.partitions
        progress = self.progress
        for partition, value in report.progress:
            if value > progress.get(partition, value - 1):
                progress[partition] = value

    def low_ms(self) -> int | None:
        """The slowest input partition's progress; None while any partition is unknown."""
        if not self.partitions:
            return None
        progress = self.progress
        low: int | None = None
        for partition in range(self.partitions):
            value = progress.get(partition)
            if value is None:
                return None
            if low is None or value < low:
                low = value
        return low
