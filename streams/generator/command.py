"""``journey generate``: synthetic online-store traffic into Kafka or a JSON Lines file.

Event time comes from the model, never from the wall clock once a run has started: with
``--seed`` and ``--start`` fixed the output is byte-identical. ``--start`` defaults to now,
taken once the model's warm-up (the traffic before the start, simulated and not sent) is
done, and with ``--rate`` the model's event density is that rate and sending is paced by
event time (an event stamped ``start + t`` leaves in the 10 ms tick at ``t`` seconds after
the run began), so a live worker sees events stamped "now" and the result is still
reproducible. The model adds visitors until every second of event time holds ``--rate``
events (``--sim-rate`` without ``--rate``); sending goes in whole batches per partition
(little Python work per event), and a fast run is split by visitor over several processes
(``--processes``; by default one per 8,000 events/s, at most one per core). The sessions
reported are counted as the engine cuts them (JOURNEY_SESSION_TIMEOUT_S,
JOURNEY_MAX_SESSION_S) over the events sent; those already under way at the start are
counted from their first event sent. A paced run that delivers less than 95 % of
``--rate`` says so on stderr at the end, and why (the model made fewer events, or sending
fell behind). Without ``--rate`` events leave as fast as possible and their timestamps run
ahead at ``--sim-rate`` events per second of event time.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import random
import secrets
import signal
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from itertools import chain
from multiprocessing.connection import Connection
from types import FrameType
from typing import Any

from streams.errors import ConfigError, JourneyError
from streams.generator.batching import Record, batch_records, single_records
from streams.generator.traffic import TrafficConfig, TrafficModel
from streams.settings import Settings

SCENARIOS = ("steady", "abandonment-spike")
DEFAULT_EVENTS = 10_000


def register(subparsers: Any) -> None:
    """Add the ``generate`` parser to the ``journey`` command."""
    p = subparsers.add_parser(
        "generate",
        help="send realistic synthetic store traffic to Kafka (or a file)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--rate",
        type=float,
        default=0.0,
        metavar="EVENTS_PER_S",
        help="paced sending at this many events/s, event time = wall time "
        "(default 0: as fast as possible)",
    )
    size = p.add_mutually_exclusive_group()
    size.add_argument(
        "--events",
        type=int,
        metavar="N",
        help=f"stop after N messages, malformed included (default {DEFAULT_EVENTS}"
        " when --duration is not given; 0 = no limit)",
    )
    size.add_argument(
        "--duration",
        type=float,
        metavar="SECONDS",
        help="stop after this many seconds of event time (with --rate: of wall "
        "time too); 0 = run until stopped (Ctrl-C / SIGTERM)",
    )
    p.add_argument("--seed", type=int, help="random seed (default: random, printed at the end)")
    p.add_argument(
        "--start",
        metavar="ISO",
        help="event time of the run's start, RFC 3339 (default: now, whole second)",
    )
    p.add_argument(
        "--sim-rate",
        type=float,
        default=50.0,
        metavar="EVENTS_PER_S",
        help="events per second of event time when --rate is 0 (default 50)",
    )
    p.add_argument(
        "--scenario",
        choices=SCENARIOS,
        default="steady",
        help="steady traffic, or abandonment-spike: carts stall at checkout "
        "for a stretch of the run",
    )
    p.add_argument(
        "--spike-start",
        default="0.4",
        metavar="AT",
        help="spike start: a fraction of the run (0.4) or seconds ('600s'); default 0.4",
    )
    p.add_argument(
        "--spike-duration",
        default="0.2",
        metavar="LENGTH",
        help="spike length: a fraction of the run or seconds ('300s'); default 0.2",
    )
    p.add_argument(
        "--malformed-ratio",
        type=float,
        default=0.0,
        metavar="R",
        help="share of messages broken in varied ways (default 0)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=1,
        metavar="K",
        help='K > 1 sends per-visitor batch envelopes {"batch": [...]} (default 1)',
    )
    p.add_argument("--topic", help="Kafka topic (default: JOURNEY_INPUT_TOPIC, 'clickstream')")
    p.add_argument(
        "--brokers", help="Kafka bootstrap servers (default: JOURNEY_BROKERS, '127.0.0.1:9092')"
    )
    p.add_argument(
        "--compression",
        choices=("none", "gzip", "lz4", "snappy", "zstd"),
        default="none",
        help="Kafka compression (lz4/snappy/zstd need their Python packages; default none)",
    )
    p.add_argument(
        "--processes",
        type=int,
        default=0,
        metavar="N",
        help="sending processes, each with its share of the visitors and of the rate "
        f"(default 0: one per {PROCESS_RATE:,} events/s of --rate, at most one per core)",
    )
    p.add_argument(
        "--out",
        metavar="FILE.jsonl",
        help="write JSON Lines to this file ('-' = stdout) instead of Kafka",
    )
    p.set_defaults(func=run)


def parse_start(raw: str | None, now: datetime) -> datetime:
    """``--start`` as an aware UTC datetime; default ``now`` floored to the second."""
    if raw is None:
        return now.astimezone(UTC).replace(microsecond=0)
    try:
        start = datetime.fromisoformat(raw.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ConfigError(
            f"--start {raw!r} is not an ISO time (e.g. 2025-06-01T12:00:00Z)"
        ) from None
    if start.tzinfo is None:
        raise ConfigError(f"--start {raw!r} needs an offset (e.g. Z or +02:00)")
    return start.astimezone(UTC)


def parse_offset(option: str, raw: str, span_s: float | None) -> float:
    """A spike position: ``'600s'`` seconds, or a fraction (0-1) of the planned span."""
    text = raw.strip().lower()
    try:
        if text.endswith("s"):
            value = float(text[:-1])
            if value < 0:
                raise ValueError
            return value
        fraction = float(text)
    except ValueError:
        raise ConfigError(
            f"{option} {raw!r}: use a fraction like 0.4 or seconds like 600s"
        ) from None
    if not 0.0 <= fraction <= 1.0:
        raise ConfigError(f"{option} {raw!r}: a fraction must be in [0, 1]; for seconds add 's'")
    if span_s is None:
        raise ConfigError(
            f"{option} {raw!r}: an unbounded run has no length; give seconds ('600s')"
        )
    return fraction * span_s


def build_config(args: argparse.Namespace, settings: Settings | None = None) -> TrafficConfig:
    """The model configuration the options describe (validated).

    ``settings`` give the session rules the engine will apply (JOURNEY_SESSION_TIMEOUT_S,
    JOURNEY_MAX_SESSION_S), by which the run counts its sessions; the defaults without.
    """
    if args.rate < 0:
        raise ConfigError("--rate must be 0 (as fast as possible) or positive")
    if args.sim_rate <= 0:
        raise ConfigError("--sim-rate must be positive")
    if not 0.0 <= args.malformed_ratio < 1.0:
        raise ConfigError("--malformed-ratio must be in [0, 1)")
    if args.batch_size < 1 or args.batch_size > 10_000:
        raise ConfigError("--batch-size must be between 1 and 10000 (the contract's batch limit)")
    if (args.events is not None and args.events < 0) or (
        args.duration is not None and args.duration < 0
    ):
        raise ConfigError("--events and --duration must be 0 (no limit) or positive")
    density = args.rate or args.sim_rate
    max_events: int | None = None
    duration: float | None = None
    if args.duration is not None:
        duration = args.duration or None
    else:
        max_events = DEFAULT_EVENTS if args.events is None else (args.events or None)
    span: float | None = duration
    if max_events is not None:
        span = max_events / density
    spike = None
    if args.scenario == "abandonment-spike":
        begin = parse_offset("--spike-start", args.spike_start, span)
        spike = (begin, begin + parse_offset("--spike-duration", args.spike_duration, span))
    rules = settings or Settings()
    return TrafficConfig(
        events_per_s=density,
        max_events=max_events,
        duration_s=duration,
        malformed_ratio=args.malformed_ratio,
        spike=spike,
        session_timeout_ms=round(rules.session_timeout_s * 1000),
        max_session_ms=round(rules.max_session_s * 1000),
    )


#: Paced sending wakes once per tick and then sends every record due by that time, so
#: sleeping costs per tick rather than per event; a record leaves at most a tick late.
TICK_MS = 10
#: A paced run delivering less than this share of ``--rate`` says so on stderr.
RATE_TOLERANCE = 0.95


@dataclass(slots=True)
class PumpStats:
    """What ``pump`` has sent so far, and how far sending lagged behind event time.

    ``behind_s`` is how late the last record left, in wall time past the end of the tick
    its event time falls in, and ``max_behind_s`` the worst of the run; both stay near 0
    while sending keeps up. ``first_ready_s`` is the clock when the first record was
    ready (the model's warm-up is over and sending begins).
    """

    records: int = 0
    events: int = 0
    last_ts_ms: int | None = None
    behind_s: float = 0.0
    max_behind_s: float = 0.0
    first_ready_s: float | None = None


def pump(
    records: Iterable[Record],
    send: Callable[[Record], None],
    pace_from_ms: int | None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    *,
    flush: Callable[[], None] = lambda: None,
    tick_ms: int = TICK_MS,
    stats: PumpStats | None = None,
) -> PumpStats:
    """Send ``records``; when ``pace_from_ms`` is set, one event-time second per wall second.

    A record stamped ``pace_from_ms + t`` is due ``t`` after the first record was ready
    (the call plus the model's warm-up). Paced sending sleeps only when the next record is
    not yet due, to the tick boundary at or after its time, then sends everything due by
    then back to back. ``flush`` is called when a record of a later tick comes up, before
    any sleep, so what a tick sent leaves together (a batching sink's cue). After a stall
    (a blocked send, a slow stretch of the model) the backlog goes out at once, but a
    record never leaves before it is due, so the long-term rate cannot exceed the records'
    own rate. ``stats`` (a new one by default) is updated as records go, so it is complete
    even if a send or Ctrl-C interrupts the run; it is also returned.
    """
    if tick_ms < 1:
        raise ValueError("tick_ms must be at least 1")
    stats = PumpStats() if stats is None else stats
    iterator = iter(records)
    first = next(iterator, None)
    if first is None:
        return stats
    # The clock starts once the first record exists: the model's warm-up (up to a second
    # at high rates) must not become a backlog sent in one burst.
    wall0 = stats.first_ready_s = clock()
    reached_ms = 0  # the tick last slept to: all due by then goes, whatever float says
    tick_sent_ms = None  # the tick of the records sent since the last flush
    for record in chain((first,), iterator):
        if pace_from_ms is not None:
            due_ms = record.ts_ms - pace_from_ms
            tick_of_due_ms = -(-due_ms // tick_ms) * tick_ms
            if tick_of_due_ms != tick_sent_ms:
                if tick_sent_ms is not None:
                    flush()
                tick_sent_ms = tick_of_due_ms
            now_ms = max((clock() - wall0) * 1000.0, reached_ms)
            if due_ms > now_ms:
                reached_ms = tick_of_due_ms
                sleep((reached_ms - now_ms) / 1000.0)
                stats.behind_s = 0.0  # caught up: nothing was due
            else:
                stats.behind_s = max(0.0, now_ms - tick_of_due_ms) / 1000.0
                stats.max_behind_s = max(stats.max_behind_s, stats.behind_s)
        send(record)
        stats.records += 1
        stats.events += record.events
        stats.last_ts_ms = record.ts_ms
    return stats


def rate_note(asked: float, stats: PumpStats, elapsed_s: float, event_span_s: float) -> str | None:
    """Why a paced run delivered under ``RATE_TOLERANCE`` of ``--rate``; None if it did not.

    ``event_span_s`` is the event time the run covered. Two causes are told apart: the
    traffic model made fewer events per second of event time than asked (nothing more was
    due), or sending ended behind event time (the machine could not produce and send that
    fast; a stall it caught up from is not a cause).
    """
    delivered = stats.events / elapsed_s if elapsed_s > 0 else 0.0
    if delivered >= RATE_TOLERANCE * asked:
        return None
    reasons = []
    made = stats.events / event_span_s if event_span_s > 0 else 0.0
    if made < RATE_TOLERANCE * asked:
        reasons.append(f"the traffic model made only {made:,.0f} events per second of event time")
    if stats.behind_s > 2 * TICK_MS / 1000.0:
        reasons.append(
            f"sending was {stats.behind_s:.2f} s behind event time at the end "
            f"({stats.max_behind_s:.2f} s at worst): producing and sending could not keep up"
        )
    if not reasons:
        reasons.append("in so short a run the last tick and the final flush weigh")
    return (
        f"journey generate: asked for --rate {asked:,.0f} events/s, delivered "
        f"{delivered:,.0f} events/s: {'; '.join(reasons)}"
    )


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    # `docker stop` sends SIGTERM: stop like Ctrl-C so the producer is flushed.
    raise KeyboardInterrupt


@dataclass(slots=True)
class SendResult:
    """What one sending process did: the model's totals and the pump's, and its times."""

    events: int
    malformed: int
    sessions: int
    sessions_under_way: int
    records: int
    warmup_s: float
    elapsed_s: float
    behind_s: float
    max_behind_s: float
    span_s: float  # event time the run covered
    interrupted: bool
    start: datetime


def processes_for(args: argparse.Namespace) -> int:
    """How many processes send: ``--processes``, or by the rate (one per 8,000 events/s).

    A process of the model and the batching producer makes about 15,000-20,000 events
    a second on one core at high rates (most of it planning sessions), so a fast run is
    split by visitor over several processes, each with its own share of the rate, of
    ``--events`` and its own producer. A file (``--out``) is written by one process.
    """
    if args.processes < 0:
        raise ConfigError("--processes must be 0 (by the rate) or positive")
    if args.out:
        if args.processes > 1:
            raise ConfigError("--processes applies to Kafka; a file is written by one process")
        return 1
    if args.processes:
        return int(args.processes)
    wanted = math.ceil((args.rate or 0.0) / PROCESS_RATE)
    return max(1, min(os.cpu_count() or 1, wanted))


#: Events per second one sending process is given before another is added (--processes 0).
PROCESS_RATE = 8_000


def shard_config(config: TrafficConfig, shard: int, shards: int) -> TrafficConfig:
    """Process ``shard``'s part of ``config``: its share of the rate and of ``max_events``."""
    max_events = config.max_events
    if max_events is not None:
        max_events = max_events // shards + (1 if shard < max_events % shards else 0)
    return replace(config, events_per_s=config.events_per_s / shards, max_events=max_events)


def _send(
    args: argparse.Namespace,
    settings: Settings,
    config: TrafficConfig,
    seed: int,
    shard: int = 0,
    shards: int = 1,
) -> SendResult:
    """Generate and send one process's traffic (all of it with ``shards`` 1)."""
    from streams.generator.sinks import FileSink, KafkaSink, RecordSink

    start = parse_start(args.start, datetime.now(UTC))
    # The start time is part of the seed so that two runs with one seed but different
    # starts do not share event ids (the engine would drop the second run as duplicates);
    # each process of a split run has visitors and ids of its own.
    part = f":{shard}/{shards}" if shards > 1 else ""
    model = TrafficModel(
        config, random.Random(f"journey-generate:{seed}:{start.isoformat()}{part}"), start
    )
    began = time.monotonic()
    if args.start is None:
        # "Now" is after the warm-up, which takes seconds at high rates: events stamped
        # with the time before it would reach a live worker that much late.
        model.warm_up()
        now = datetime.now(UTC)
        start = now.replace(microsecond=now.microsecond // 1000 * 1000)
        model.shift_start(start)
    if args.batch_size > 1:
        records = batch_records(model, args.batch_size)
    else:
        records = single_records(model)
    sink: RecordSink
    if args.out:
        sink = FileSink(args.out)
    else:
        topic = args.topic or settings.input_topic
        compression = None if args.compression == "none" else args.compression
        kafka = replace(settings, brokers=args.brokers or settings.brokers)
        sink = KafkaSink(kafka, topic, compression)
    previous = signal.signal(signal.SIGTERM, _stop_on_sigterm)
    sent = PumpStats()
    interrupted = False
    try:
        pump(
            records,
            sink.send,
            model.start_ms if args.rate else None,
            sleep=sink.sleep,
            flush=sink.flush,
            stats=sent,
        )
    except KeyboardInterrupt:
        interrupted = True
    finally:
        signal.signal(signal.SIGTERM, previous)
        sink.close()
    ended = time.monotonic()
    # Sending begins once the model's warm-up has made the first record.
    sending_from = sent.first_ready_s if sent.first_ready_s is not None else ended
    # The event time the run covered: all of --duration when it ran to the end.
    last_ms = sent.last_ts_ms if sent.last_ts_ms is not None else model.start_ms
    span_s = (last_ms - model.start_ms) / 1000.0
    if config.duration_s is not None and not interrupted:
        span_s = config.duration_s
    stats = model.stats
    return SendResult(
        events=stats.events,
        malformed=stats.malformed,
        sessions=stats.sessions,
        sessions_under_way=stats.sessions_under_way,
        records=sent.records,
        warmup_s=sending_from - began,
        elapsed_s=ended - sending_from,
        behind_s=sent.behind_s,
        max_behind_s=sent.max_behind_s,
        span_s=span_s,
        interrupted=interrupted,
        start=start,
    )


def _send_part(
    args: argparse.Namespace, seed: int, shard: int, shards: int, results: Connection
) -> None:
    """A child process of a split run: send its part, report the result (or the error)."""
    # Ctrl-C reaches the whole process group: the parent alone decides, and stops the
    # children with SIGTERM, which each handles as a single run does (flushed, counted).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        settings = Settings.from_env()
        config = shard_config(build_config(args, settings), shard, shards)
        results.send(_send(args, settings, config, seed, shard, shards))
    except JourneyError as exc:
        results.send(exc)
    except KeyboardInterrupt:
        results.send(JourneyError("stopped during the warm-up"))
    finally:
        results.close()


def _send_split(args: argparse.Namespace, seed: int, shards: int) -> list[SendResult]:
    """Run ``shards`` child processes, each sending its part; their results in order."""
    context = multiprocessing.get_context("spawn")  # no inherited loops, threads or sockets
    pipes, children = [], []
    for shard in range(shards):
        receive, send = context.Pipe(duplex=False)
        child = context.Process(
            target=_send_part, args=(args, seed, shard, shards, send), daemon=True
        )
        child.start()
        send.close()
        pipes.append(receive)
        children.append(child)
    previous = signal.signal(signal.SIGTERM, _stop_on_sigterm)
    outcomes: list[SendResult | BaseException] = []
    try:
        for receive in pipes:
            while True:
                try:
                    outcomes.append(receive.recv())
                    break
                except KeyboardInterrupt:
                    for child in children:  # each stops like a single run: flushed
                        if child.is_alive():
                            child.terminate()
                except EOFError:
                    outcomes.append(JourneyError("a sending process died without a result"))
                    break
    finally:
        signal.signal(signal.SIGTERM, previous)
        for child in children:
            child.join(30)
    errors = [o for o in outcomes if not isinstance(o, SendResult)]
    if errors:
        raise errors[0] if isinstance(errors[0], JourneyError) else JourneyError(str(errors[0]))
    return [o for o in outcomes if isinstance(o, SendResult)]


def run(args: argparse.Namespace) -> int:
    """Run ``journey generate``; prints a one-line summary and returns the exit status."""
    settings = Settings.from_env()
    config = build_config(args, settings)
    seed = args.seed if args.seed is not None else secrets.randbelow(2**31)
    shards = processes_for(args)
    if shards == 1:
        parts = [_send(args, settings, config, seed)]
    else:
        parts = _send_split(args, seed, shards)
    # Visitors never span processes, so sessions add up exactly.
    events = sum(p.events for p in parts)
    malformed = sum(p.malformed for p in parts)
    sessions = sum(p.sessions for p in parts)
    under_way = sum(p.sessions_under_way for p in parts)
    records = sum(p.records for p in parts)
    elapsed = max(p.elapsed_s for p in parts)
    warmup = max(p.warmup_s for p in parts)
    interrupted = any(p.interrupted for p in parts)
    start = min(p.start for p in parts)
    total = events + malformed
    target = args.out or f"topic {args.topic or settings.input_topic}"
    timespec = "milliseconds" if start.microsecond else "seconds"
    shown_start = start.isoformat(timespec=timespec).replace("+00:00", "Z")
    split = f" by {shards} processes" if shards > 1 else ""
    summary = (
        f"journey generate: {total} events ({malformed} malformed) in {sessions} "
        f"sessions as the engine counts them ({under_way} begun before the "
        f"start) -> {target}{' (stopped)' if interrupted else ''}; {records} messages"
        f"{split}; elapsed {elapsed:.2f} s ({total / elapsed if elapsed else 0.0:,.0f} "
        f"events/s) after a {warmup:.2f} s warm-up; seed {seed}, start {shown_start}"
    )
    print(summary, file=sys.stderr if args.out == "-" else sys.stdout)
    if args.rate:
        sent = PumpStats(
            records=records,
            events=total,
            behind_s=max(p.behind_s for p in parts),
            max_behind_s=max(p.max_behind_s for p in parts),
        )
        note = rate_note(args.rate, sent, elapsed, max(p.span_s for p in parts))
        if note:
            print(note, file=sys.stderr)
    return 0
