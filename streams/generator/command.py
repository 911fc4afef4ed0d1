"""``journey generate``: synthetic online-store traffic into Kafka or a JSON Lines file.

Event time comes from the model, never from the wall clock once a run has started: with
``--seed`` and ``--start`` fixed the output is byte-identical. ``--start`` defaults to now
(whole second), and with ``--rate`` the model's event density is that rate and sending is
paced by event time (an event stamped ``start + t`` leaves ``t`` seconds after the run
began), so a live worker sees events stamped "now" and the result is still reproducible.
Without ``--rate`` events leave as fast as possible and their timestamps run ahead at
``--sim-rate`` events per second of event time.
"""

from __future__ import annotations

import argparse
import random
import secrets
import signal
import sys
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from types import FrameType
from typing import Any

from streams.errors import ConfigError
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


def build_config(args: argparse.Namespace) -> TrafficConfig:
    """The model configuration the options describe (validated)."""
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
    return TrafficConfig(
        events_per_s=density,
        max_events=max_events,
        duration_s=duration,
        malformed_ratio=args.malformed_ratio,
        spike=spike,
    )


def pump(
    records: Iterable[Record],
    send: Callable[[Record], None],
    pace_from_ms: int | None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Send ``records``; when ``pace_from_ms`` is set, one event-time second per wall second.

    Returns the number of records sent.
    """
    sent = 0
    wall0 = clock()
    for record in records:
        if pace_from_ms is not None:
            ahead = wall0 + (record.ts_ms - pace_from_ms) / 1000.0 - clock()
            if ahead > 0.002:  # sleeping for less costs more than it saves
                sleep(ahead)
        send(record)
        sent += 1
    return sent


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    # `docker stop` sends SIGTERM: stop like Ctrl-C so the producer is flushed.
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    """Run ``journey generate``; prints a one-line summary and returns the exit status."""
    from streams.generator.sinks import FileSink, KafkaSink, RecordSink

    config = build_config(args)
    start = parse_start(args.start, datetime.now(UTC))
    seed = args.seed if args.seed is not None else secrets.randbelow(2**31)
    # The start time is part of the seed so that two runs with one seed but different
    # starts do not share event ids (the engine would drop the second run as duplicates).
    model = TrafficModel(
        config, random.Random(f"journey-generate:{seed}:{start.isoformat()}"), start
    )
    if args.batch_size > 1:
        records = batch_records(model, args.batch_size)
    else:
        records = single_records(model)
    sink: RecordSink
    if args.out:
        sink, target = FileSink(args.out), args.out
    else:
        settings = Settings.from_env()
        topic = args.topic or settings.input_topic
        compression = None if args.compression == "none" else args.compression
        sink, target = (
            KafkaSink(args.brokers or settings.brokers, topic, compression),
            f"topic {topic}",
        )
    previous = signal.signal(signal.SIGTERM, _stop_on_sigterm)
    sent = 0

    def send(record: Record) -> None:
        nonlocal sent
        sink.send(record)
        sent += 1

    began = time.monotonic()
    interrupted = False
    try:
        pump(records, send, model.start_ms if args.rate else None)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        signal.signal(signal.SIGTERM, previous)
        sink.close()
    elapsed = time.monotonic() - began
    stats = model.stats
    total = stats.events + stats.malformed
    summary = (
        f"journey generate: {total} events ({stats.malformed} malformed) in {stats.sessions} "
        f"sessions -> {target}{' (stopped)' if interrupted else ''}; "
        f"{sent} messages; elapsed {elapsed:.2f} s "
        f"({total / elapsed if elapsed else 0.0:,.0f} events/s); seed {seed}, "
        f"start {start.isoformat().replace('+00:00', 'Z')}"
    )
    print(summary, file=sys.stderr if args.out == "-" else sys.stdout)
    return 0
