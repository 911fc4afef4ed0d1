"""Cost of the per-flush ClickHouse work against a large ``sessions`` table.

Every worker flush recomputes ``session_minutes`` for the start minutes it touched and looks
up the stored rows of removed sessions. Both read ``sessions FINAL``; how much of the table
they read depends on its sort key. This fills a scratch database with N closed sessions
spread over 25 days of one month, then times both reads.

Usage::

    .venv/bin/python benchmarks/bench_rollup_refresh.py [--sessions 1000000]
        [--server clickhouse://127.0.0.1:9000] [--order-by "session_id"]

``--order-by`` re-creates ``sessions`` with another sort key first (to compare layouts; the
schema's is ``(start_ms, session_id)``). The database ``bench_rollup_<random>`` is dropped
at the end. Not a test: nothing here asserts on timing.
"""

from __future__ import annotations

import argparse
import random
import time
import uuid

from streams.clickhouse.dialect import FINAL
from streams.clickhouse.migrations import apply_migrations
from streams.clickhouse.server import ServerBackend
from streams.clickhouse.writer import SESSION_COLUMNS, ClickHouseWriter
from streams.engine.rows import SessionRow

DAY_MS = 86_400_000
MINUTE_MS = 60_000
STRING_COLUMNS = {
    "session_id", "visitor_key", "anonymous_id", "user_id", "customer_key", "landing_page",
    "exit_page", "referrer", "channel", "source", "medium", "campaign", "device",
    "furthest_stage",
}  # fmt: skip


def _fill(backend: ServerBackend, sessions: int, month_start: int, seed: int) -> None:
    rng = random.Random(seed)
    columns = SessionRow.columns()
    proto: dict[str, object] = {c: "" if c in STRING_COLUMNS else 0 for c in columns}
    proto.update(channel="Direct", device="desktop", furthest_stage="awareness", events=3)
    proto.update(closed=1)
    batch: list[tuple[object, ...]] = []
    for _ in range(sessions):
        row = dict(proto)
        row["session_id"] = uuid.UUID(int=rng.getrandbits(128)).hex
        row["start_ms"] = month_start + rng.randrange(0, 25 * DAY_MS)
        batch.append((*(row[c] for c in columns), 1, 0))
        if len(batch) >= 200_000:
            backend.insert("sessions", SESSION_COLUMNS, batch)
            batch = []
    if batch:
        backend.insert("sessions", SESSION_COLUMNS, batch)
    backend.execute("OPTIMIZE TABLE sessions FINAL")


def _ms(began: float) -> str:
    return f"{(time.perf_counter() - began) * 1000:,.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=1_000_000)
    parser.add_argument("--server", default="clickhouse://127.0.0.1:9000")
    parser.add_argument("--order-by", default=None, help="re-create sessions with this key")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    database = f"bench_rollup_{uuid.uuid4().hex[:8]}"
    admin = ServerBackend(f"{args.server}/default")
    admin.execute(f"CREATE DATABASE {database}")
    backend = ServerBackend(f"{args.server}/{database}")
    try:
        apply_migrations(backend)
        if args.order_by:
            ddl = backend.query("SHOW CREATE TABLE sessions")[0][0]
            backend.execute("DROP TABLE sessions")
            backend.execute(ddl.replace("ORDER BY (start_ms, session_id)",
                                        f"ORDER BY {args.order_by}"))  # fmt: skip
        month_start = 1_795_000_000_000 // (30 * DAY_MS) * (30 * DAY_MS)
        began = time.perf_counter()
        _fill(backend, args.sessions, month_start, seed=1)
        print(f"{args.sessions:,} sessions loaded in {_ms(began)}")
        writer = ClickHouseWriter(backend)
        minute = month_start + 20 * DAY_MS
        for k in range(args.repeat):
            touched = [minute + k * MINUTE_MS, minute + (k + 5) * MINUTE_MS]
            began = time.perf_counter()
            writer.refresh_rollups(touched)
            print(f"rollup refresh of 2 minutes: {_ms(began)}")
        pairs = backend.query("SELECT session_id, start_ms FROM sessions LIMIT 50")
        ids = [pair[0] for pair in pairs]
        starts = sorted({int(pair[1]) for pair in pairs})
        lookup = f"SELECT {', '.join(SessionRow.columns())} FROM sessions {FINAL}"
        for _ in range(args.repeat):
            began = time.perf_counter()
            backend.query(lookup + " WHERE session_id IN {ids} AND deleted = 0", {"ids": ids})
            print(f"tombstone lookup of 50 ids, by id only: {_ms(began)}")
            began = time.perf_counter()
            backend.query(
                lookup + " WHERE session_id IN {ids} AND deleted = 0 AND start_ms IN {starts}",
                {"ids": ids, "starts": starts},
            )
            print(f"tombstone lookup of 50 ids, with their starts: {_ms(began)}")
    finally:
        admin.execute(f"DROP DATABASE IF EXISTS {database}")


if __name__ == "__main__":
    main()
