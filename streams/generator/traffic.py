"""The traffic model: visitors arrive, run their sessions, and events come out in time order.

Pure: a seeded ``random.Random`` and a start time in, messages out; no clock, no I/O.
Each visitor plans one session at a time (a returning visitor's next one starts more than
30 minutes after the last event), and a heap merges all visitors' planned events into
event-time order. The event density is held at ``events_per_s`` by adding visitors: the
run keeps a schedule of one slot every ``1 / events_per_s`` seconds of event time (valid
events only, so malformed ones come on top in their share), and whenever the next slot
comes before every event already planned, a new visitor arrives in it. Events of
sessions already under way fill slots first, so as sessions accumulate fewer new visitors
are needed, down to the steady state where arrivals make up what ongoing sessions do not
send. The density never falls below the rate, whatever the session model; it rises above
it only where ongoing sessions alone send more (not seen with the default personas).

The run starts "mid-flight": the schedule begins a warm-up period before ``start`` and
events before ``start`` are dropped, so the first sessions are already in progress, as on
a live site. The warm-up is bounded (at most 600 s and 50,000 events of event
time), so at high rates the first minutes still hold more new visitors than the steady
state, which is reached about three minutes of event time after the schedule began.

``stats.sessions`` counts sessions the way the engine cuts them (SPEC section 4): per
visitor key, over the events actually emitted, a new session when the gap since the
visitor's previous event exceeds ``session_timeout_ms`` or the event is more than
``max_session_ms`` after the session's first event. A session under way at ``start``
counts from its first event after ``start`` (``stats.sessions_under_way`` says how many).
"""

from __future__ import annotations

import heapq
import math
import random
from bisect import bisect
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import accumulate, chain
from typing import Any

from streams.generator.catalog import DEVICES, LOCALES, build_catalog
from streams.generator.malformed import INVALID_JSON, MALFORMED_KINDS, malformed
from streams.generator.personas import PERSONAS, SCRIPTS, Persona, Store
from streams.generator.session import (
    Event,
    PastHorizon,
    PlannedEvent,
    SessionWriter,
    Visitor,
    new_id,
)

VALID = "valid"
_WARMUP_MAX_S = 600.0
_WARMUP_MAX_EVENTS = 50_000
#: How far past the schedule's end of a --events run sessions are still planned: enough
#: for ongoing sessions running ahead of the schedule; every second of it costs planning.
_HORIZON_MARGIN_MS = 2_000
_HORIZON_MARGIN = 1.03
#: Gap before a returning visitor's next session: always over the 30-minute timeout.
_RETURN_MIN_S = 31 * 60
_RETURN_MEDIAN_S = 40 * 60
_RETURN_MAX_S = 6 * 3600


@dataclass(frozen=True, slots=True)
class TrafficConfig:
    """What to generate; times are seconds of event time after ``start``.

    ``max_events`` counts every message, malformed ones included; ``spike`` is the
    (start, end) window in which sessions' purchase decisions are scaled by
    ``spike_purchase_factor`` (the abandonment-spike scenario).
    """

    events_per_s: float = 50.0
    max_events: int | None = None
    duration_s: float | None = None
    malformed_ratio: float = 0.0
    spike: tuple[float, float] | None = None
    spike_purchase_factor: float = 0.1
    session_timeout_ms: int = 30 * 60 * 1000
    max_session_ms: int = 24 * 3600 * 1000

    def __post_init__(self) -> None:
        """Reject impossible values early, naming the option."""
        if self.events_per_s <= 0:
            raise ValueError("events_per_s must be greater than zero")
        if not 0.0 <= self.malformed_ratio < 1.0:
            raise ValueError("malformed_ratio must be in [0, 1)")
        if self.session_timeout_ms <= 0 or self.max_session_ms <= 0:
            raise ValueError("session_timeout_ms and max_session_ms must be positive")


@dataclass(slots=True)
class GeneratedMessage:
    """One Kafka message: a valid event, a malformed event dict, or raw broken bytes."""

    key: str
    ts_ms: int
    kind: str  # "valid" or one of malformed.MALFORMED_KINDS
    event: Event | None = None
    raw: bytes | None = None


@dataclass(slots=True)
class TrafficStats:
    """Running totals of a generation run.

    ``sessions`` are counted as the engine cuts them, over the valid events emitted
    (see the module docstring); ``sessions_under_way`` of them had begun before the run's
    start, in the warm-up, so the run holds only their later events.
    """

    events: int = 0
    malformed: int = 0
    sessions: int = 0
    sessions_under_way: int = 0


class TimestampFormat:
    """RFC 3339 UTC timestamps with milliseconds, formatting each second only once."""

    __slots__ = ("_prefix", "_second")

    def __init__(self) -> None:
        """Start with an empty one-second cache (events come in time order)."""
        self._second = -1
        self._prefix = ""

    def __call__(self, ts_ms: int) -> str:
        """``ts_ms`` (epoch milliseconds) as ``YYYY-MM-DDTHH:MM:SS.mmmZ``."""
        second, millis = divmod(ts_ms, 1000)
        if second != self._second:
            self._second = second
            self._prefix = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        return f"{self._prefix}.{millis:03d}Z"


_PERSONA_CUM = list(accumulate(p.weight for p in PERSONAS))
_DEVICE_CUM = list(accumulate(row[-1] for row in DEVICES))
_LOCALE_CUM = list(accumulate(row[-1] for row in LOCALES))


class TrafficModel:
    """Iterates the messages of one run; ``stats`` is updated as they are produced."""

    def __init__(self, config: TrafficConfig, rng: random.Random, start: datetime) -> None:
        """A run of ``config`` drawing from ``rng``, with event time beginning at ``start``."""
        if start.tzinfo is None:
            raise ValueError("start must be timezone-aware (UTC)")
        self.config = config
        self.rng = rng
        self.start_ms = int(start.timestamp() * 1000)
        # Sessions are planned in the frame of ``start``; what is emitted may be moved
        # later as a whole (``shift_start``), once the warm-up has been simulated.
        self._plan_start_ms = self.start_ms
        self._shift_ms = 0
        # Valid events per second of event time; malformed ones come on top, in their share.
        self._density = config.events_per_s * (1.0 - config.malformed_ratio)
        self.stats = TrafficStats()
        self._store = Store.of(build_catalog())
        self._format = TimestampFormat()
        # Valid events get ids "<run prefix><send counter>": unique within a run by the
        # counter and across runs by the 96 random prefix bits, and cheap to make.
        run = f"{rng.getrandbits(96):024x}"
        self._id_prefix = f"{run[:8]}-{run[8:12]}-{run[12:16]}-{run[16:20]}-{run[20:24]}"
        self._visitors = 0
        self._events = self._timeline()
        self._first: tuple[PlannedEvent, Visitor] | None = None
        self._contexts: dict[tuple[int, int], dict[str, str]] = {}
        if config.spike is not None:
            low, high = config.spike
            start_ms = self._plan_start_ms
            self._spike_ms = (start_ms + int(low * 1000), start_ms + int(high * 1000))
        else:
            self._spike_ms = (0, -1)
        # The last event time the run can send: sessions are planned no further.
        self._horizon_ms = math.inf
        if config.duration_s is not None:
            self._horizon_ms = self._plan_start_ms + config.duration_s * 1000.0
        elif config.max_events is not None:
            # Valid events alone fill max_events by then (the density never falls below
            # the schedule); the margin covers ongoing sessions running ahead of it.
            self._horizon_ms = (
                self._plan_start_ms
                + _HORIZON_MARGIN_MS
                + _HORIZON_MARGIN * (config.max_events * 1000.0 / self._density)
            )

    # --- visitors and sessions ---------------------------------------------------------

    def _spawn(self, at_ms: int) -> Visitor:
        rng = self.rng
        # What rng.choices(population, cum_weights=...) draws, without its per-call cost
        # (a visitor arrives for about every event at high rates).
        random = rng.random
        persona: Persona = PERSONAS[bisect(_PERSONA_CUM, random() * _PERSONA_CUM[-1])]
        device = bisect(_DEVICE_CUM, random() * _DEVICE_CUM[-1])
        locale = bisect(_LOCALE_CUM, random() * _LOCALE_CUM[-1])
        context = self._contexts.get((device, locale))
        if context is None:
            # Shared by all visitors on that device and locale: nothing writes to it.
            device_type, user_agent, _ = DEVICES[device]
            context = {"user_agent": user_agent, "locale": LOCALES[locale][0],
                       "device_type": device_type}  # fmt: skip
            self._contexts[(device, locale)] = context
        self._visitors += 1
        lo, hi = persona.sessions
        return Visitor(
            seq=self._visitors,
            persona=persona.name,
            anonymous_id=new_id(rng),
            context=context,
            account_id=f"cust_{rng.randrange(10**9):09d}" if persona.has_account else None,
            logged_in=persona.has_account and rng.random() < 0.5,
            pings=rng.random() < 0.5,
            sends_campaign=rng.random() < 0.5,
            epoch_ms=rng.random() < 0.1,
            sessions_left=rng.randint(lo, hi),
        )

    def _plan_session(self, visitor: Visitor, at_ms: int) -> list[PlannedEvent]:
        """The session's events up to the run's horizon (none if it starts after it)."""
        visitor.sessions_left -= 1
        in_spike = self._spike_ms[0] <= at_ms < self._spike_ms[1]
        factor = self.config.spike_purchase_factor if in_spike else 1.0
        writer = SessionWriter(self.rng, visitor, at_ms, self._horizon_ms)
        try:
            SCRIPTS[visitor.persona](writer, self._store, factor)
        except PastHorizon:
            visitor.sessions_left = 0  # nothing of theirs after the horizon is ever sent
        visitor.sessions_done += 1
        return writer.events

    def _return_gap_ms(self) -> int:
        gap = _RETURN_MIN_S + self.rng.lognormvariate(0.0, 1.0) * (_RETURN_MEDIAN_S - _RETURN_MIN_S)
        return int(min(gap, _RETURN_MAX_S) * 1000)

    # --- the run --------------------------------------------------------------------------

    def _timeline(self) -> Iterator[tuple[PlannedEvent, Visitor]]:
        """Every visitor's planned events merged in event-time order, forever.

        Valid events have one slot each, ``slot_ms`` apart from the warm-up's beginning.
        A visitor arrives, at a random point of the next free slot, whenever that point
        comes before every planned event; otherwise the earliest planned event takes the
        slot. So by any time ``t`` at least ``(t - first) / slot_ms`` events have come.
        """
        density = self._density
        slot_ms = 1000.0 / density
        warmup_s = min(_WARMUP_MAX_S, _WARMUP_MAX_EVENTS / density)
        first_slot = self._plan_start_ms - warmup_s * 1000.0
        rng = self.rng
        emitted = 0
        # Heap of (time of the visitor's next event, visitor seq, visitor, events, index).
        heap: list[tuple[int, int, Visitor, list[PlannedEvent], int]] = []
        # Where the next arrival would fall; drawn again only once a slot is taken, so
        # arrival times never go back (the next slot starts after this one ends).
        arrival = first_slot + rng.random() * slot_ms
        while True:
            if not heap or arrival < heap[0][0]:
                at = int(arrival)
                visitor = self._spawn(at)
                events = self._plan_session(visitor, at)
                if not events:
                    return  # arrivals have passed the horizon: nothing more can be sent
                heapq.heappush(heap, (events[0].ts_ms, visitor.seq, visitor, events, 0))
            _, seq, visitor, events, index = heap[0]
            planned = events[index]
            if index + 1 < len(events):
                heapq.heapreplace(heap, (events[index + 1].ts_ms, seq, visitor, events, index + 1))
            elif visitor.sessions_left > 0:
                nxt = self._plan_session(visitor, planned.ts_ms + self._return_gap_ms())
                if nxt:
                    heapq.heapreplace(heap, (nxt[0].ts_ms, seq, visitor, nxt, 0))
                else:
                    heapq.heappop(heap)
            else:
                heapq.heappop(heap)
            emitted += 1
            arrival = first_slot + (emitted + rng.random()) * slot_ms
            yield planned, visitor

    def warm_up(self) -> None:
        """Simulate the warm-up now (up to the first event at or after the start).

        Iterating does it anyway; calling it first lets a caller time the start after it
        (see :meth:`shift_start`).
        """
        if self._first is None:
            for item in self._events:
                if item[0].ts_ms >= self._plan_start_ms:
                    self._first = item
                    return

    def shift_start(self, start: datetime) -> None:
        """Move the run, as a whole, to begin at ``start`` (before any message is taken).

        For a run starting "now": the warm-up can take seconds at high rates, and events
        stamped with the time before it would reach a live consumer that much late.
        """
        if self.stats.events or self.stats.malformed:
            raise RuntimeError("shift_start after messages were taken")
        self._shift_ms = int(start.timestamp() * 1000) - self._plan_start_ms
        self.start_ms = self._plan_start_ms + self._shift_ms

    def __iter__(self) -> Iterator[GeneratedMessage]:
        """The run's messages in event-time order, until ``max_events`` or ``duration_s``."""
        config, rng, stats, fmt = self.config, self.rng, self.stats, self._format
        plan_start_ms, shift = self._plan_start_ms, self._shift_ms
        end_ms = None if config.duration_s is None else plan_start_ms + config.duration_s * 1000
        limit = config.max_events
        ratio = config.malformed_ratio
        timeout_ms, max_session_ms = config.session_timeout_ms, config.max_session_ms
        sent = 0
        first, self._first = self._first, None
        for planned, visitor in chain(() if first is None else (first,), self._events):
            ts = planned.ts_ms
            if ts < plan_start_ms:
                continue  # warm-up: the site was busy before we started listening
            if end_ms is not None and ts > end_ms:
                return
            render: Callable[[int], Any] = int if visitor.epoch_ms else fmt
            # Each message slot is malformed with probability ``ratio``, independently,
            # so the malformed share of all messages is binomial(n, ratio).
            while ratio and rng.random() < ratio:
                if limit is not None and sent >= limit:
                    return
                kind = rng.choice(MALFORMED_KINDS)
                broken = malformed(kind, planned.event, ts + shift, rng, render)
                stats.malformed += 1
                sent += 1
                if kind == INVALID_JSON:
                    assert isinstance(broken, bytes)
                    yield GeneratedMessage(visitor.anonymous_id, ts + shift, kind, raw=broken)
                else:
                    assert isinstance(broken, dict)
                    yield GeneratedMessage(visitor.anonymous_id, ts + shift, kind, event=broken)
            if limit is not None and sent >= limit:
                return
            event = planned.event
            event["event_id"] = f"{self._id_prefix}{stats.events:08x}"
            event["timestamp"] = render(ts + shift)
            # The engine's cut (SPEC section 4); a visitor's events come in time order.
            if (
                visitor.last_ms is None
                or ts - visitor.last_ms > timeout_ms
                or ts - visitor.session_first_ms > max_session_ms
            ):
                visitor.session_first_ms = ts
                stats.sessions += 1
                stats.sessions_under_way += not planned.first_in_session
            visitor.last_ms = ts
            stats.events += 1
            sent += 1
            yield GeneratedMessage(visitor.anonymous_id, ts + shift, VALID, event=event)
        if limit is not None and sent < limit:
            # The horizon ended the timeline first: a run must never stop short silently.
            raise RuntimeError(f"the traffic model ran out after {sent} of {limit} messages")
