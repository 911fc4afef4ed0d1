"""Personal data kept no longer than ``JOURNEY_RETENTION_DAYS``: a TTL, or periodic deletes.

The tables that hold personal data (ids, pages, referrers) lose their rows once these are
older than the retention: ``sessions`` by the session's start, ``orders`` and
``raw_events`` by the event time. The per-minute rollup ``session_minutes`` holds counts
only and is kept, so the dashboards' history outlives the rows it was computed from.

A server that has table TTLs (ClickHouse 19.6 and later, chdb) gets one per table
(``ALTER TABLE ... MODIFY TTL``): ClickHouse drops the rows in its merges, and the TTL
stays with the table. The 18.16 server has no TTL; there the worker's writer deletes the
rows that aged out (``ALTER TABLE ... DELETE WHERE``, a mutation) when it starts and then
every :data:`DELETE_EVERY_S`. Unsetting the retention removes the TTLs; rows already
deleted stay deleted.
"""

from __future__ import annotations

import time
from typing import Literal

from streams.clickhouse.backend import ClickHouse

#: The tables whose rows expire, with the epoch-ms column a row's age is measured from.
RETAINED_TABLES: tuple[tuple[str, str], ...] = (
    ("sessions", "start_ms"),
    ("orders", "ts_ms"),
    ("raw_events", "ts_ms"),
)
#: Without TTLs, how often the writer deletes the rows that aged out (a mutation rewrites
#: the parts it touches, so not more often than needed for a retention counted in days).
DELETE_EVERY_S = 6 * 3600.0
#: The first release with table TTLs.
TTL_SINCE = (19, 6)
DAY_MS = 86_400_000

#: How a retention is enforced on a backend: a TTL, the writer's deletes, or not at all.
Enforcement = Literal["ttl", "delete", "none"]


def supports_ttl(backend: ClickHouse) -> bool:
    """True when the server (or chdb) has table TTLs."""
    version = str(backend.query("SELECT version()")[0][0])
    major, minor = (int(part) for part in version.split(".")[:2])
    return (major, minor) >= TTL_SINCE


def _has_ttl(backend: ClickHouse, table: str) -> bool:
    rows = backend.query(
        "SELECT engine_full FROM system.tables WHERE database = currentDatabase() "
        "AND name = {table}",
        {"table": table},
    )
    return bool(rows) and " TTL " in f" {rows[0][0]} "


def apply_retention(
    backend: ClickHouse, days: int | None, now_ms: int | None = None
) -> Enforcement:
    """Make the tables keep rows for ``days`` (None: for ever); returns how it is enforced.

    With TTLs this sets (or, for None, removes) each table's TTL, idempotently. Without,
    it deletes the rows older than ``days`` before ``now_ms`` (default: now), and the
    caller runs it again every :data:`DELETE_EVERY_S` ("delete").
    """
    if supports_ttl(backend):
        for table, column in RETAINED_TABLES:
            if days is not None:
                backend.execute(
                    f"ALTER TABLE {table} MODIFY TTL "
                    f"toDateTime(intDiv({column}, 1000)) + INTERVAL {int(days)} DAY"
                )
            elif _has_ttl(backend, table):
                backend.execute(f"ALTER TABLE {table} REMOVE TTL")
        return "ttl" if days is not None else "none"
    if days is None:
        return "none"
    now = int(time.time() * 1000) if now_ms is None else now_ms
    cutoff = now - int(days) * DAY_MS
    for table, column in RETAINED_TABLES:
        backend.execute(
            f"ALTER TABLE {table} DELETE WHERE {column} < {{cutoff}}", {"cutoff": cutoff}
        )
    return "delete"
