"""Apply ``schemas/clickhouse/NNNN_name.sql`` in order, once each, recording them.

``schema_migrations`` holds one row per applied version. Every statement in a
migration is idempotent (``IF NOT EXISTS``), so a migration interrupted half-way is
simply run again; a version is recorded only after all its statements succeeded.
ClickHouse 18.16 has no ``ADD COLUMN IF NOT EXISTS``: a statement
``ALTER TABLE t ADD COLUMN IF NOT EXISTS c ...`` (one column each) runs without the
``IF NOT EXISTS``, and only when ``DESCRIBE TABLE t`` does not list ``c`` yet.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable

from streams.clickhouse.backend import ClickHouse
from streams.clickhouse.dialect import split_statements
from streams.errors import StorageError

#: The migration scripts: package data (``streams/schemas`` links to ``schemas/``).
MIGRATIONS_DIR = resources.files("streams").joinpath("schemas", "clickhouse")

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_ADD_COLUMN = re.compile(r"^ALTER TABLE (\w+) ADD COLUMN IF NOT EXISTS (\w+) ", re.IGNORECASE)

_CREATE_LEDGER = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version UInt32,
    name String,
    applied_ms UInt64
) ENGINE = ReplacingMergeTree(applied_ms)
ORDER BY version
"""


@dataclass(frozen=True, slots=True)
class Migration:
    """One migration script: its number, its name and its SQL text."""

    version: int
    name: str
    sql: str


def load_migrations(folder: Traversable = MIGRATIONS_DIR) -> list[Migration]:
    """Every ``NNNN_name.sql`` in ``folder`` sorted by number; duplicates are an error."""
    if not folder.is_dir():
        raise StorageError(
            f"migration folder {folder} is missing: the installed journey-streams lacks its "
            "package data; reinstall it (pip install journey-streams, or pip install . here)"
        )
    found: dict[int, Migration] = {}
    for path in sorted(folder.iterdir(), key=lambda entry: entry.name):
        match = _NAME.match(path.name)
        if not match:
            continue
        version = int(match.group(1))
        if version in found:
            raise StorageError(f"two migrations numbered {version:04d} in {folder}")
        found[version] = Migration(version, match.group(2), path.read_text(encoding="utf-8"))
    return [found[v] for v in sorted(found)]


def applied_versions(backend: ClickHouse) -> set[int]:
    """Versions recorded in ``schema_migrations`` (creating the ledger if missing)."""
    backend.execute(_CREATE_LEDGER)
    return {int(row[0]) for row in backend.query("SELECT DISTINCT version FROM schema_migrations")}


def apply_migrations(backend: ClickHouse, folder: Traversable = MIGRATIONS_DIR) -> list[int]:
    """Apply every migration not yet recorded, in order; return the versions applied now."""
    done = applied_versions(backend)
    applied: list[int] = []
    for migration in load_migrations(folder):
        if migration.version in done:
            continue
        for statement in split_statements(migration.sql):
            _run(backend, statement)
        backend.insert(
            "schema_migrations",
            ("version", "name", "applied_ms"),
            [(migration.version, migration.name, int(time.time() * 1000))],
        )
        applied.append(migration.version)
    return applied


def _run(backend: ClickHouse, statement: str) -> None:
    """Run one migration statement; an ADD COLUMN IF NOT EXISTS as both versions allow."""
    match = _ADD_COLUMN.match(statement)
    if match is None:
        backend.execute(statement)
        return
    table, column = match.groups()
    if _has_column(backend, table, column):
        return
    try:
        backend.execute(statement.replace(" IF NOT EXISTS", "", 1))
    except StorageError:
        # Workers starting together migrate together: another one may have added it.
        if not _has_column(backend, table, column):
            raise


def _has_column(backend: ClickHouse, table: str, column: str) -> bool:
    return column in {row[0] for row in backend.query(f"DESCRIBE TABLE {table}")}
