"""The sessionizer: cuts each visitor's events into sessions (SPEC section 4), exactly.

Design. For every visitor the state keeps the events of its *open* sessions. When events
arrive for a visitor they are merged into that sorted list and the visitor's open events
are re-sessionized from scratch; the result is therefore exactly what an in-order run gives,
whatever the arrival order, as long as no accepted event precedes a closed session.
The watermark guarantees that:

* watermark = event-time progress - allowed_lateness, never decreasing. The progress is
  the highest event time seen (one ordered source; the wall clock may also push it when
  the input is idle, see ``Sessionizer.advance``), or, in the worker, the progress of the
  slowest input partition, given by the caller (``external_watermark``, see
  ``streams.engine.progress``);
* an event with ``ts_ms < watermark`` is late: returned in ``EngineOutput.late``, never merged;
* a session closes once ``watermark > last_event + session_timeout``. Every event accepted
  afterwards has ``ts_ms >= watermark``, so its gap to the closed session exceeds the
  timeout: a closed session can never change again, and the next event starts a new one.

Re-sessionizing can change ids: an event earlier than a session's first event gives the
session a new id, and an event filling a gap merges two open sessions into the earlier one.
The ids that disappear are returned in ``EngineOutput.removed_session_ids`` (tombstones).
"""

from __future__ import annotations

import heapq
import itertools
from bisect import bisect_right
from collections.abc import Iterable, MutableMapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field

from streams.engine.events import Event
from streams.engine.rows import OrderRow, SessionRow, StageTransition
from streams.engine.stages import StageRules
from streams.engine.state import (
    MAX_REMEMBERED_ORDERS,
    OpenSession,
    StoredEvent,
    VisitorState,
    stored,
)
from streams.engine.summary import BIT_NAMES, Prior, SessionAcc, SessionSummary, session_id

_NEVER = -(2**62)  # the watermark before any event: nothing is late
_NO_KEYS: frozenset[str] = frozenset()
#: What a visitor's first session inherits: nothing.
_FIRST_PRIOR = Prior(False, False, "")
_FOREVER = 2**62


@dataclass(frozen=True, slots=True)
class SessionConfig:
    """Sessionization parameters in milliseconds (SPEC section 4 defaults).

    The adapters build it from their settings (``Settings.session_config``); the engine
    knows nothing of settings.

    ``idle_grace_ms``: after this much wall time without any event, the watermark follows
    the wall clock at ``now - allowed_lateness - idle_grace`` so sessions still close when
    traffic stops; while events flow, only event time moves the watermark (a consumer
    catching up on a backlog never turns its own backlog late).
    """

    session_timeout_ms: int = 30 * 60 * 1000
    max_session_ms: int = 24 * 3600 * 1000
    allowed_lateness_ms: int = 10 * 60 * 1000
    idle_grace_ms: int = 60 * 1000
    split_on_campaign: bool = False


@dataclass(slots=True)
class EngineOutput:
    """What one call produced; adapters write/publish it, then commit offsets.

    ``sessions`` holds the latest row of every session created, changed or closed in the
    call (``closed == 1`` for final rows); ``removed_session_ids`` are sessions that ceased
    to exist (merged into another or re-identified) and must be deleted downstream; never
    both for one id. ``removed_starts`` gives each removed id its start (epoch ms), so a
    store sorted by start finds the row to delete without a scan. ``opened`` counts new
    session ids (a re-identified session counts again, with its old id in
    ``removed_session_ids``), ``closed`` counts final rows.
    """

    sessions: list[SessionRow] = field(default_factory=list)
    removed_session_ids: list[str] = field(default_factory=list)
    removed_starts: dict[str, int] = field(default_factory=dict)
    orders: list[OrderRow] = field(default_factory=list)
    transitions: list[StageTransition] = field(default_factory=list)
    late: list[Event] = field(default_factory=list)
    duplicates: int = 0
    opened: int = 0
    closed: int = 0
    watermark_ms: int = _NEVER


class _Collector:
    """Accumulates one call's output, keeping only the latest row per session/order."""

    __slots__ = ("orders", "out", "removed", "rows")

    def __init__(self) -> None:
        self.out = EngineOutput()
        self.rows: dict[str, SessionRow] = {}
        self.removed: dict[str, int] = {}
        self.orders: dict[str, OrderRow] = {}

    def row(self, row: SessionRow) -> None:
        self.rows[row.session_id] = row
        if self.removed:  # rarely any: most calls remove no session
            self.removed.pop(row.session_id, None)

    def remove(self, sid: str, start_ms: int) -> None:
        self.rows.pop(sid, None)
        self.removed[sid] = start_ms

    def finish(self, watermark: int) -> EngineOutput:
        out = self.out
        out.sessions = list(self.rows.values())
        out.removed_session_ids = sorted(self.removed)
        out.removed_starts = self.removed
        out.orders = list(self.orders.values())
        out.watermark_ms = watermark
        return out


class Sessionizer:
    """Streaming sessionizer over a visitor-state store (a dict, or a Faust table).

    Call ``process`` with batches of accepted events in arrival order, ``advance`` with the
    wall clock when idle, ``close_all`` at the end of a replay. The store maps visitor key
    to ``VisitorState``; the heap of close deadlines is rebuilt from it on construction.
    It holds, for every visitor with an open session, an entry at or before that visitor's
    first open session's deadline: about one entry per visitor, however many events (an
    entry per event grew it by every event of the last half hour).

    With ``external_watermark`` the events never move the watermark: the caller tracks
    event-time progress (over several input partitions, whose events interleave in any
    order) and raises the watermark through ``process(..., watermark_ms=...)``; the wall
    clock is then the caller's business too.
    """

    def __init__(
        self,
        config: SessionConfig,
        rules: StageRules,
        store: MutableMapping[str, VisitorState] | None = None,
        external_watermark: bool = False,
    ) -> None:
        """Create a sessionizer; an existing ``store`` (after a restart) is indexed."""
        self.config = config
        self.rules = rules
        self.store: MutableMapping[str, VisitorState] = {} if store is None else store
        self.external_watermark = external_watermark
        self._deadlines: list[tuple[int, str]] = []
        self._max_ts = _NEVER
        self._watermark = _NEVER
        self._last_event_wall: int | None = None
        #: Open sessions in the store when it was indexed.
        self.indexed_sessions = 0
        for key, state in self.store.items():
            if state.sessions:
                self._deadlines.append((state.sessions[0].last_ts + config.session_timeout_ms, key))
                self.indexed_sessions += len(state.sessions)
            if state.events:
                self._max_ts = max(self._max_ts, state.events[-1].ts_ms)
        heapq.heapify(self._deadlines)
        if self._max_ts != _NEVER and not external_watermark:
            # Events in the store were accepted, so the watermark was at least this high.
            self._watermark = self._max_ts - config.allowed_lateness_ms

    @property
    def watermark_ms(self) -> int:
        """Current watermark: events strictly below it are late."""
        return self._watermark

    def restore_watermark(self, watermark_ms: int) -> None:
        """Raise the watermark to a checkpointed value after a restart (never lowers it).

        The stores' events alone under-estimate it once sessions have closed; without this a
        restarted worker would accept events that the crashed one had already called late.
        """
        if watermark_ms > self._watermark:
            self._watermark = watermark_ms
            self._max_ts = max(self._max_ts, watermark_ms + self.config.allowed_lateness_ms)

    def process(
        self, events: Iterable[Event], now_ms: int | None = None, watermark_ms: int | None = None
    ) -> EngineOutput:
        """Sessionize a batch of events (arrival order); ``now_ms`` is the wall clock, if known.

        Lateness is decided event by event in arrival order, so the result does not depend
        on how the input is split into batches. With ``external_watermark``, every event is
        judged against the watermark before the call, and the watermark then rises to
        ``watermark_ms`` (if given and higher), closing the sessions it passes.
        """
        col = _Collector()
        lateness = self.config.allowed_lateness_ms
        watermark, max_ts = self._watermark, self._max_ts
        track = not self.external_watermark
        groups: dict[str, list[Event]] = {}
        late = col.out.late
        for ev in events:
            ts = ev.ts_ms
            if ts < watermark:
                late.append(ev)
                continue
            if track and ts > max_ts:
                max_ts = ts
                if ts - lateness > watermark:
                    watermark = ts - lateness
            group = groups.get(ev.visitor_key)
            if group is None:
                groups[ev.visitor_key] = [ev]
            else:
                group.append(ev)
        self._watermark, self._max_ts = watermark, max_ts
        if now_ms is not None and (groups or late):
            self._last_event_wall = now_ms
        for key, group in groups.items():
            self._ingest(key, group, col)
        if track and now_ms is not None:
            self._follow_clock(now_ms)
        if watermark_ms is not None and watermark_ms > self._watermark:
            self._watermark = watermark_ms
        self._close_due(col)
        return col.finish(self._watermark)

    def advance(self, now_ms: int) -> EngineOutput:
        """Let the wall clock move an idle watermark, then close the sessions it passed.

        If no event arrived for ``idle_grace_ms`` of wall time (as seen by the ``now_ms``
        passed to ``process``/``advance``), the watermark becomes at least
        ``now_ms - allowed_lateness_ms - idle_grace_ms``.
        """
        col = _Collector()
        self._follow_clock(now_ms)
        self._close_due(col)
        return col.finish(self._watermark)

    def close_all(self) -> EngineOutput:
        """Close every open session (end of a replay or an orderly shutdown of a test)."""
        col = _Collector()
        for key in list(self.store):
            state = self.store[key]
            if state.sessions or state.events:
                self._resessionize(state, col, _FOREVER, emit_open=False)
                self.store[key] = state
        self._deadlines.clear()
        return col.finish(self._watermark)

    def _replay_visitor(self, key: str, events: Iterable[Event], col: _Collector) -> None:
        """Replay one visitor's complete, sorted events and close all its sessions."""
        state = self.store.get(key) or VisitorState(key)
        seen = {ev.event_id for ev in state.events}
        for ev in events:
            if ev.event_id in seen:
                col.out.duplicates += 1
                continue
            seen.add(ev.event_id)
            state.events.append(stored(ev))
        if state.events:
            self._resessionize(state, col, _FOREVER, emit_open=False)
        self.store[key] = state

    # -- internals -------------------------------------------------------------------------

    def _follow_clock(self, now_ms: int) -> None:
        grace = self.config.idle_grace_ms
        if self._last_event_wall is None or now_ms - self._last_event_wall >= grace:
            # Never let the watermark go backwards: a clock step back must not reopen time.
            self._watermark = max(self._watermark, now_ms - self.config.allowed_lateness_ms - grace)

    def _ingest(self, key: str, group: list[Event], col: _Collector) -> None:
        state = self.store.get(key)
        if state is None:
            state = VisitorState(key)
            if len(group) == 1 and self._open(state, group[0], col):
                self.store[key] = state
                deadline = state.sessions[0].last_ts + self.config.session_timeout_ms
                heapq.heappush(self._deadlines, (deadline, key))
                return
        elif len(group) == 1 and self._continue(state, group[0], col):
            self.store[key] = state  # the deadline only moved later: nothing to queue
            return
        seen = {ev.event_id for ev in state.events}
        fresh: list[StoredEvent] = []
        for ev in group:
            if ev.event_id in seen:
                col.out.duplicates += 1
            else:
                seen.add(ev.event_id)
                fresh.append(stored(ev))
        if not fresh:
            return
        # The close deadline queued for the visitor (or an earlier one) is its first open
        # session's: a new entry is needed only when that comes earlier now.
        before = state.sessions[0].last_ts if state.sessions else None
        fresh.sort(key=_sort_key)
        if not self._append(state, fresh, col):
            if state.events and _sort_key(fresh[0]) < _sort_key(state.events[-1]):
                state.events = sorted(state.events + fresh, key=_sort_key)
            else:
                state.events.extend(fresh)
            self._resessionize(state, col, self._watermark, emit_open=True)
        self.store[key] = state  # reassign so a persistent table records the change
        if state.sessions:
            last_ts = state.sessions[0].last_ts
            if before is None or last_ts < before:
                heapq.heappush(self._deadlines, (last_ts + self.config.session_timeout_ms, key))

    def _open(self, state: VisitorState, ev: Event, col: _Collector) -> bool:
        """A new visitor's first event, the other common live case: a session of one event.

        Exactly what :meth:`_append` does for it, unless the session would close at once
        (its deadline already behind the watermark); then False, having changed nothing.
        """
        if ev.ts_ms + self.config.session_timeout_ms < self._watermark:
            return False
        first = stored(ev)
        state.events.append(first)
        acc = SessionAcc(state.visitor_key, first, _FIRST_PRIOR)
        acc.feed(state.events, 0, 1, self.rules)
        col.out.opened += 1
        mask, _ = _emit(
            col, state.visitor_key, acc.summary(False), 0, _FIRST_PRIOR, _NO_KEYS, set()
        )
        state.sessions = [OpenSession(first.ts_ms, first.event_id, first.ts_ms, mask, acc)]
        return True

    def _continue(self, state: VisitorState, ev: Event, col: _Collector) -> bool:
        """The commonest live case, one event continuing the visitor's one open session.

        Applies when the session's running summary covers all the visitor's events, the
        event follows them and is no copy of one, and neither a new session nor a close
        follows from it: then it is one step of the summary, exactly what :meth:`_append`
        would do, without the bookkeeping for several events and sessions. Returns False,
        having changed nothing, when the case does not apply.
        """
        if len(state.sessions) != 1:
            return False
        current = state.sessions[0]
        acc = current.acc
        events = state.events
        config = self.config
        ts = ev.ts_ms
        if (
            acc is None
            or acc.count != len(events)
            or config.split_on_campaign
            or ts < acc.last_ts
            or (ts == acc.last_ts and ev.event_id <= acc.last_id)
            or ts - acc.last_ts > config.session_timeout_ms
            or ts - current.first_ts > config.max_session_ms
            or ts + config.session_timeout_ms < self._watermark
        ):
            return False
        prior = acc.prior
        if (
            prior.returning != (state.closed_sessions > 0)
            or prior.purchased != state.purchased
            or prior.user_id != state.user_id
        ):
            return False
        event_id = ev.event_id
        for kept in events:
            if kept.event_id == event_id:
                col.out.duplicates += 1
                return True
        events.append(stored(ev))
        acc.feed(events, len(events) - 1, len(events), self.rules)
        summary = acc.summary(False)
        remembered = set(state.order_keys) if summary.orders else _NO_KEYS
        current.announced, _ = _emit(
            col, state.visitor_key, summary, current.announced, prior, remembered, set()
        )
        current.last_ts = ts
        return True

    def _append(self, state: VisitorState, fresh: list[StoredEvent], col: _Collector) -> bool:
        """The common case without a re-cut: sorted ``fresh`` events after all the visitor's.

        Applies when the visitor has at most one open session, whose running summary
        covers all its events (it is made here if the state was restored from its
        record), every fresh event follows them, and no session closes before the
        watermark now: the fresh events then continue the open session or start
        new ones, exactly as :meth:`_resessionize` would cut them, and only the sessions
        they touch are summarised (one step per event) and emitted. Returns False, having
        changed nothing, when the case does not apply.
        """
        config = self.config
        if config.split_on_campaign or len(state.sessions) > 1:
            return False
        timeout, max_len = config.session_timeout_ms, config.max_session_ms
        watermark = self._watermark
        events = state.events
        prior = Prior(state.closed_sessions > 0, state.purchased, state.user_id)
        current = state.sessions[0] if state.sessions else None
        open_acc: SessionAcc | None = None
        if current is None:
            if events:
                return False
            first_ts = last_ts = fresh[0].ts_ms
            start = 1
        else:
            open_acc = current.acc
            if open_acc is None and events and events[0].event_id == current.first_id:
                # Restored from its record (after a restart, or dropped from memory at a
                # checkpoint): summarise the one open session once, then go on from there.
                open_acc = current.acc = SessionAcc(state.visitor_key, events[0], prior)
                open_acc.feed(events, 0, len(events), self.rules)
            if (
                open_acc is None
                or open_acc.count != len(events)
                or open_acc.prior != prior
                or _sort_key(fresh[0]) <= open_acc.last_key
            ):
                return False
            first_ts, last_ts = current.first_ts, open_acc.last_ts
            start = 0
        # Cut first (nothing changes if a session would close), then apply.
        cuts: list[int] = []
        for i in range(start, len(fresh)):
            ts = fresh[i].ts_ms
            if ts - last_ts > timeout or ts - first_ts > max_len:
                if last_ts + timeout < watermark:
                    return False
                cuts.append(i)
                first_ts = ts
            last_ts = ts
        if last_ts + timeout < watermark:
            return False
        base = len(events)
        events.extend(fresh)
        key = state.visitor_key
        rules = self.rules
        remembered = set(state.order_keys)
        orders_seen: set[str] = set()
        sessions: list[OpenSession] = []
        bounds = zip([0, *cuts], [*cuts, len(fresh)], strict=True)
        for n, (lo, hi) in enumerate(bounds):
            if n == 0 and current is not None and open_acc is not None:
                acc = open_acc
                mask = current.announced
            else:
                acc = SessionAcc(key, events[base + lo], prior)
                mask = 0
                col.out.opened += 1
            acc.feed(events, base + lo, base + hi, rules)
            mask, prior = _emit(col, key, acc.summary(False), mask, prior, remembered, orders_seen)
            sessions.append(OpenSession(
                acc.first.ts_ms, acc.first.event_id, acc.last_ts, mask, acc))  # fmt: skip
        state.sessions = sessions
        return True

    def _close_due(self, col: _Collector) -> None:
        timeout = self.config.session_timeout_ms
        heap = self._deadlines
        while heap and heap[0][0] < self._watermark:
            _, key = heapq.heappop(heap)
            state = self.store.get(key)
            if state is None or not state.sessions:
                continue
            deadline = state.sessions[0].last_ts + timeout
            if deadline >= self._watermark:
                # Queued before the session went on: queue its deadline now. A visitor has
                # about one entry, not one per event (see _ingest).
                heapq.heappush(heap, (deadline, key))
                continue
            self._resessionize(state, col, self._watermark, emit_open=False)
            self.store[key] = state
            if state.sessions:
                heapq.heappush(heap, (state.sessions[0].last_ts + timeout, key))

    def _resessionize(
        self, state: VisitorState, col: _Collector, close_below: int, emit_open: bool
    ) -> None:
        """Re-cut ``state.events`` into sessions; close those with last + timeout < close_below.

        With ``emit_open`` False only the closing sessions are summarised (the open ones did
        not change: closing never alters what later sessions see about earlier ones).
        """
        events = state.events
        bounds = self._bounds(events)
        key = state.visitor_key
        timeout = self.config.session_timeout_ms
        rules = self.rules
        old = {(s.first_ts, s.first_id): s for s in state.sessions}
        firsts = [(events[lo].ts_ms, events[lo].event_id) for lo, _ in bounds]
        found = [old.pop(f, None) for f in firsts]
        masks = [-1 if s is None else s.announced for s in found]
        # A session whose first event is new opens (again, under a new id, when an earlier
        # event re-identified it: the old id is among the removed), whatever it inherits.
        new = [mask < 0 for mask in masks]
        for (f_ts, f_id), gone in old.items():
            # A vanished session lives on inside the new session holding its first event;
            # that session inherits what was already announced, so nothing is announced twice.
            col.remove(session_id(key, f_ts, f_id), f_ts)
            idx = bisect_right(firsts, (f_ts, f_id)) - 1
            masks[idx] = max(masks[idx], 0) | gone.announced
        prior = Prior(state.closed_sessions > 0, state.purchased, state.user_id)
        remembered = set(state.order_keys)
        orders_seen: set[str] = set()
        keep_from = 0
        sessions: list[OpenSession] = []
        for n, (lo, hi) in enumerate(bounds):
            last_ts = events[hi - 1].ts_ms
            closing = last_ts + timeout < close_below
            if not closing and not emit_open:
                sessions.extend(
                    OpenSession(firsts[i][0], firsts[i][1], events[bounds[i][1] - 1].ts_ms,
                                max(masks[i], 0), _kept_acc(found[i], events, *bounds[i]))
                    for i in range(n, len(bounds))
                )  # fmt: skip
                break
            acc = _reusable_acc(found[n], events, lo, hi, prior)
            if acc is None:
                acc = SessionAcc(key, events[lo], prior)
                acc.feed(events, lo, hi, rules)
            else:
                acc.feed(events, lo + acc.count, hi, rules)
            summary = acc.summary(closing)
            row = summary.row
            if new[n]:
                col.out.opened += 1
            mask, prior = _emit(col, key, summary, max(masks[n], 0), prior, remembered, orders_seen)
            if closing:
                col.out.closed += 1
                keep_from = hi
                state.closed_sessions += 1
                state.purchased = prior.purchased
                state.user_id = prior.user_id
                state.order_keys = (state.order_keys + list(summary.orders))[
                    -MAX_REMEMBERED_ORDERS:
                ]
                if row.has_cart and not row.converted:
                    col.out.transitions.append(StageTransition(
                        "cart_abandoned", "purchase", row.furthest_stage, row.session_id, key,
                        row.user_id, row.end_ms, row.channel, tuple(summary.cart)))  # fmt: skip
            else:
                sessions.append(OpenSession(firsts[n][0], firsts[n][1], last_ts, mask, acc))
        if keep_from:
            del state.events[:keep_from]
        state.sessions = sessions

    def _bounds(self, events: list[StoredEvent]) -> list[tuple[int, int]]:
        """(start, stop) index pairs of the sessions in sorted ``events``."""
        if not events:
            return []
        timeout = self.config.session_timeout_ms
        max_len = self.config.max_session_ms
        split_campaign = self.config.split_on_campaign
        bounds: list[tuple[int, int]] = []
        start = 0
        first = prev = events[0].ts_ms
        campaign = _campaign(events[0]) if split_campaign else None
        for i in range(1, len(events)):
            ev = events[i]
            ts = ev.ts_ms
            new = ts - prev > timeout or ts - first > max_len
            if split_campaign and not new:
                ev_campaign = _campaign(ev)
                if ev_campaign is not None and ev_campaign != campaign:
                    new = True
            if new:
                bounds.append((start, i))
                start, first = i, ts
                if split_campaign:
                    campaign = _campaign(ev)
            elif split_campaign and (ev_campaign := _campaign(ev)) is not None:
                campaign = ev_campaign
            prev = ts
        bounds.append((start, len(events)))
        return bounds


def _emit(
    col: _Collector,
    key: str,
    summary: SessionSummary,
    mask: int,
    prior: Prior,
    remembered: AbstractSet[str],
    orders_seen: set[str],
) -> tuple[int, Prior]:
    """Emit a summarised session: stages not yet announced, its row, orders not yet written.

    ``mask`` holds the stages announced before; ``remembered`` the order keys of closed
    sessions and ``orders_seen`` those of earlier sessions in this call (both skipped; the
    latter grows). Returns the stages announced now and what the next session inherits.
    """
    row = summary.row
    if summary.reached_bits & ~mask:
        for bit, ts, before in summary.reached:
            if not mask & bit:
                mask |= bit
                col.out.transitions.append(StageTransition(
                    "stage", BIT_NAMES[bit], before, row.session_id, key, row.user_id, ts,
                    row.channel))  # fmt: skip
    col.row(row)
    for okey, (ts, _eid, revenue, currency, order_id) in summary.orders.items():
        if okey in remembered or okey in orders_seen:
            continue
        orders_seen.add(okey)
        col.orders[okey] = OrderRow(okey, order_id, row.session_id, key, row.customer_key, ts,
                                    revenue, currency)  # fmt: skip
    purchased = prior.purchased or bool(row.converted)
    user_id = summary.last_user_id or prior.user_id
    if prior.returning and purchased == prior.purchased and user_id == prior.user_id:
        return mask, prior  # equal to what a new Prior would be
    return mask, Prior(True, purchased, user_id)


def _reusable_acc(
    session: OpenSession | None, events: list[StoredEvent], lo: int, hi: int, prior: Prior
) -> SessionAcc | None:
    """The open session's running summary when ``events[lo:hi]`` only extends what it saw.

    It saw ``acc.count`` events from the same first event up to ``acc.last_key``; if
    the event at that position still has that key, nothing was inserted before it (the
    events are sorted and distinct), so feeding the rest continues the same summary. An
    earlier session that changed what this one inherits (``prior``) makes it stale too.
    """
    acc = None if session is None else session.acc
    if acc is None or acc.prior != prior:
        return None
    end = lo + acc.count
    if end > hi or _sort_key(events[end - 1]) != acc.last_key:
        return None
    return acc


def _kept_acc(
    session: OpenSession | None, events: list[StoredEvent], lo: int, hi: int
) -> SessionAcc | None:
    """An unchanged open session keeps its running summary if it still covers it exactly."""
    acc = None if session is None else session.acc
    if acc is None or acc.count != hi - lo or _sort_key(events[hi - 1]) != acc.last_key:
        return None
    return acc


def _sort_key(ev: StoredEvent) -> tuple[int, str]:
    return (ev.ts_ms, ev.event_id)


def _campaign(ev: StoredEvent) -> tuple[str, str, str] | None:
    if ev.campaign_source or ev.campaign_medium:
        return (ev.campaign_source, ev.campaign_medium, ev.campaign_name)
    return None


def sessionize_all(
    events: Iterable[Event], config: SessionConfig, rules: StageRules
) -> EngineOutput:
    """Replay: sessionize complete input (any order) and close every session.

    Events are sorted by (visitor, ts_ms, event_id) and each visitor is run through the
    same re-sessionizing code as streaming, then closed; nothing is late in a replay.
    """
    sessionizer = Sessionizer(config, rules)
    col = _Collector()
    ordered = sorted(events, key=lambda ev: (ev.visitor_key, ev.ts_ms, ev.event_id))
    for key, group in itertools.groupby(ordered, key=lambda ev: ev.visitor_key):
        sessionizer._replay_visitor(key, group, col)
    return col.finish(sessionizer.watermark_ms)
