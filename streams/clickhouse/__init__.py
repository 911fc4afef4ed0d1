"""ClickHouse storage of journey-streams: one port, two backends (server 18.16, chdb 26.x).

Typical use::

    backend = open_backend("clickhouse://127.0.0.1:9000/journey")  # or a folder
    apply_migrations(backend)
    writer = ClickHouseWriter(backend)
    writer.write(sessions, removed_session_ids, orders)
    print(compute_summary(backend))
"""

from streams.clickhouse.backend import DEFAULT_EMBEDDED_DIR, ClickHouse, open_backend
from streams.clickhouse.migrations import apply_migrations
from streams.clickhouse.summary import SUMMARY_KEYS, compute_summary
from streams.clickhouse.writer import ClickHouseWriter, VersionClock

__all__ = [
    "DEFAULT_EMBEDDED_DIR",
    "SUMMARY_KEYS",
    "ClickHouse",
    "ClickHouseWriter",
    "VersionClock",
    "apply_migrations",
    "compute_summary",
    "open_backend",
]
