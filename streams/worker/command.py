"""``journey worker``: run the Faust worker with settings from ``JOURNEY_*`` variables."""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
from pathlib import Path

from streams.settings import Settings


def _settings_help() -> str:
    lines = ["settings (environment variables, default in parentheses):"]
    for name, default, doc in Settings.describe():
        lines.append(f"  {name} ({default})\n      {doc}")
    return "\n".join(lines)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``journey worker``."""
    parser = sub.add_parser(
        "worker",
        help="run the real-time worker (Kafka -> sessions -> ClickHouse + /metrics)",
        description=(
            "Consume clickstream events from Kafka, sessionize them, attribute journey "
            "stages, write ClickHouse tables and serve Prometheus metrics."
        ),
        epilog=_settings_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--loglevel", default="warning", choices=["debug", "info", "warning", "error"]
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        metavar="N",
        help=(
            "run N worker processes of one consumer group, one core each (default 1). "
            "With N > 1 this process supervises them: worker I gets JOURNEY_DATA_DIR/worker-I "
            "and metrics port JOURNEY_METRICS_PORT + I; SIGTERM/SIGINT stops all, one "
            "exiting stops all with its status. Needs JOURNEY_CLICKHOUSE_URL and "
            "N <= JOURNEY_PARTITIONS"
        ),
    )
    parser.set_defaults(func=run)


#: Allocations between young-generation collections (CPython's default is 700).
GC_YOUNG_THRESHOLD = 50_000


def tune_garbage_collector() -> None:
    """Collect cyclic garbage less often; the objects built at start-up are never scanned.

    The worker allocates several objects per event (rows, summaries, messages) and keeps
    every open session's state, nearly all freed by reference counting, never in a cycle.
    With the default thresholds the collector ran every 700 allocations and walked the
    live state again and again: 3-7 us per event of the sessionizer's 12 (measured,
    docs/architecture.md "Hot path"). ``gc.freeze`` moves what exists after start-up (the
    modules, Faust, the clients) out of every later collection.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 20, 20)


def run(args: argparse.Namespace) -> int:
    """Build everything from the settings, fail fast on a wrong one, then run until stopped.

    With ``--processes N`` > 1, supervise N such workers instead (streams.worker.supervisor).
    """
    from streams.worker.supervisor import check_process_count, run_group

    settings = Settings.from_env()
    check_process_count(settings, args.processes)
    logging.basicConfig(level=args.loglevel.upper(), stream=sys.stderr)
    if args.processes > 1:
        # The children inherit the environment (PATH, PYTHONPATH, JOURNEY_*), see there.
        return run_group(settings, args.processes, args.loglevel, os.environ)
    # Heavy imports here: `journey --help` must not pay for faust and chdb.
    import faust

    from streams.clickhouse.backend import resolve_target
    from streams.clickhouse.process import WriterProcess
    from streams.engine.stages import load_stage_rules
    from streams.metrics import JourneyMetrics, serve_metrics
    from streams.sink import ClickHouseSink
    from streams.worker.app import build_app
    from streams.worker.output import OutputProducer, SessionsPublisher, transactional_id
    from streams.worker.repair import GapFetcher
    from streams.worker.topics import ensure_topics

    rules = load_stage_rules(settings.stage_rules or None)
    ensure_topics(settings)
    data_dir = Path(settings.data_dir)
    (data_dir / "faust").mkdir(parents=True, exist_ok=True)
    # A server's password file is read here; the address goes to the child over a pipe,
    # never on a command line (see streams.clickhouse.process).
    target = resolve_target(settings.clickhouse_url or str(data_dir / "clickhouse"), settings)
    # The writes run in a child process of their own (see streams.clickhouse.process). It
    # publishes the session rows too, unless they go in the worker's transactions.
    exactly_once = settings.exactly_once
    writer = WriterProcess(
        target,
        after=None if exactly_once else SessionsPublisher(settings),
        retention_days=settings.retention_days,
    )
    metrics = JourneyMetrics.create(rules=rules)
    serve_metrics(metrics, settings)
    sink = ClickHouseSink(
        writer,
        metrics,
        max_rows=settings.flush_rows,
        flush_interval_s=settings.flush_interval_s,
    )
    app = build_app(
        settings=settings,
        rules=rules,
        metrics=metrics,
        sink=sink,
        output=OutputProducer(settings, transactional_id(settings) if exactly_once else None),
        reader=GapFetcher(settings),
    )
    tune_garbage_collector()
    worker = faust.Worker(app, loglevel=args.loglevel, quiet=True, redirect_stdouts=False)
    # Runs until SIGTERM/SIGINT, then stops the agents (flushing and committing) and exits.
    worker.execute_from_commandline()
