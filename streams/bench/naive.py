"""The naive baseline: the Faust agent a team would write first, run by the bench.

``JOURNEY_CLICKHOUSE_URL=URL JOURNEY_BROKERS=B python -m streams.bench.naive --topic T
--app-id A --expected N --progress FILE --data-dir DIR`` (the URL and the Kafka settings,
``JOURNEY_KAFKA_*`` included, in the environment keep passwords out of the process list)

One agent, ``async for value in stream``: each message is validated with the engine's
``parse_payload``, sessionized on its own with ``Sessionizer.process([event])``, and every
session the call closes is written to the ClickHouse server with one insert. No batching
anywhere, which is the point: it shows what Faust's documented per-message path costs.
Once all ``N`` events arrived it closes every session still open and writes each with one
insert too, inside the timed span: the baseline stores every session the worker stores
(a run shorter than the session timeout would otherwise close none and write nothing).
The agent records its progress (events seen, inserts, wall time of the first and latest
one) in a small JSON file every 10,000 events and once all ``N`` arrived and were
written; the bench reads it and stops the process.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: Events between two progress records.
PROGRESS_EVERY = 10_000


def write_progress(path: Path, record: dict[str, Any]) -> None:
    """Replace ``path`` atomically with ``record`` (the bench never reads half a file)."""
    partial = path.with_suffix(".tmp")
    partial.write_text(json.dumps(record))
    os.replace(partial, path)


def read_progress(path: Path) -> dict[str, Any] | None:
    """The latest progress record, or None before the first one."""
    try:
        record: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """The options the bench passes."""
    parser = argparse.ArgumentParser(prog="python -m streams.bench.naive")
    parser.add_argument("--topic", required=True)
    parser.add_argument("--app-id", required=True)
    parser.add_argument("--expected", type=int, required=True)
    parser.add_argument("--progress", type=Path, required=True)
    parser.add_argument("--data-dir", type=Path, required=True)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Build the app and run its worker until the bench stops it (never returns)."""
    import faust

    from streams.clickhouse.backend import open_backend
    from streams.clickhouse.migrations import apply_migrations
    from streams.clickhouse.writer import ClickHouseWriter
    from streams.engine.intake import parse_payload
    from streams.engine.sessionizer import SessionConfig, Sessionizer
    from streams.engine.stages import load_stage_rules
    from streams.kafka_connection import client_config
    from streams.settings import Settings

    args = parse_args(sys.argv[1:] if argv is None else argv)
    settings = Settings.from_env()
    if not settings.clickhouse_url:
        raise SystemExit("set JOURNEY_CLICKHOUSE_URL to the ClickHouse server of the baseline")
    backend = open_backend(settings.clickhouse_url, settings)
    apply_migrations(backend)
    writer = ClickHouseWriter(backend, rollups=False)
    sessionizer = Sessionizer(SessionConfig(), load_stage_rules(None))
    app = faust.App(
        args.app_id,
        **client_config(settings, "faust"),
        store="memory://",
        datadir=str(args.data_dir),
        web_enabled=False,
        consumer_auto_offset_reset="earliest",
    )
    topic = app.topic(args.topic, key_serializer="raw", value_serializer="raw")
    progress: dict[str, Any] = {"events": 0, "inserts": 0, "first": None, "last": None}

    @app.agent(topic)
    async def sessionize(stream: Any) -> None:
        """Validate, sessionize and store each message on its own, as it arrives."""
        async for value in stream:
            now = time.time()
            if progress["first"] is None:
                progress["first"] = now
            for event in parse_payload(value, int(now * 1000)).events:
                out = sessionizer.process([event], int(now * 1000))
                for row in out.sessions:
                    if row.closed:
                        # The blocking driver call inside the agent, as naive code has it.
                        writer.write([row])
                        progress["inserts"] += 1
            progress["events"] += 1
            count = progress["events"]
            if count == args.expected:
                for row in sessionizer.close_all().sessions:
                    writer.write([row])
                    progress["inserts"] += 1
            progress["last"] = time.time()
            if count % PROGRESS_EVERY == 0 or count == args.expected:
                write_progress(args.progress, progress)

    worker = faust.Worker(app, loglevel="warning", quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
