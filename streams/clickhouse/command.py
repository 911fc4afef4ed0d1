"""``journey migrate``: create or upgrade the ClickHouse tables (server or embedded)."""

from __future__ import annotations

import argparse
from typing import Any

from streams.clickhouse.migrations import apply_migrations, load_migrations
from streams.clickhouse.options import add_target_arguments, backend_from_args


def register(subparsers: Any) -> None:
    """Add the ``migrate`` subcommand to the ``journey`` parser."""
    parser = subparsers.add_parser(
        "migrate",
        help="apply schemas/clickhouse migrations (idempotent)",
        description="Apply every ClickHouse migration not applied yet, in order.",
    )
    add_target_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Apply pending migrations and print what was applied; exit status 0."""
    backend = backend_from_args(args, create=True)
    try:
        applied = apply_migrations(backend)
        total = len(load_migrations())
    finally:
        backend.close()
    if applied:
        listed = ", ".join(f"{v:04d}" for v in applied)
        print(f"{backend.name}: applied {listed} ({total} migrations known)")
    else:
        print(f"{backend.name}: up to date ({total} migrations applied)")
    return 0
