"""``journey summary``: the SPEC section 6 figures read back from ClickHouse as one JSON object."""

from __future__ import annotations

import argparse
import json
import re
from datetime import UTC, datetime
from typing import Any

from streams.clickhouse.migrations import apply_migrations
from streams.clickhouse.options import add_target_arguments, backend_from_args
from streams.clickhouse.summary import compute_summary
from streams.errors import ConfigError

#: A whole number of ASCII digits (``str.isdigit`` also takes "²" and other digits).
_EPOCH_MS = re.compile(r"[0-9]{1,15}", re.ASCII)
#: 10000-01-01T00:00:00Z in epoch ms: instants from 1970 up to the end of year 9999.
_END_MS = 253_402_300_800_000


def parse_instant_ms(text: str, option: str) -> int:
    """Epoch ms of an ISO 8601 date/time (naive means UTC) or of an integer epoch-ms string.

    Anything else, or an instant before 1970 or after 9999, is a ConfigError naming
    ``option``.
    """
    stripped = text.strip()
    example = "(e.g. 2024-05-01, 2024-05-01T12:00:00Z or epoch ms 1714521600000)"
    if _EPOCH_MS.fullmatch(stripped):
        ms = int(stripped)
    else:
        try:
            moment = datetime.fromisoformat(stripped)
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            ms = int(moment.timestamp() * 1000)
        except (ValueError, OverflowError):
            raise ConfigError(f"{option} {text!r} is not ISO 8601 {example}") from None
    if not 0 <= ms < _END_MS:
        raise ConfigError(f"{option} {text!r} is outside 1970-9999 {example}")
    return ms


def register(subparsers: Any) -> None:
    """Add the ``summary`` subcommand to the ``journey`` parser."""
    parser = subparsers.add_parser(
        "summary",
        help="print journey figures for a period from ClickHouse",
        description=(
            "Figures of sessions that started in [--from, --to) (orders by order time; "
            "clv_avg over all time up to --to), read back from ClickHouse."
        ),
    )
    parser.add_argument("--from", dest="from_", metavar="ISO", help="period start (inclusive)")
    parser.add_argument("--to", metavar="ISO", help="period end (exclusive)")
    add_target_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object (the default)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the summary as one JSON line; exit status 0."""
    from_ms = parse_instant_ms(args.from_, "--from") if args.from_ else None
    to_ms = parse_instant_ms(args.to, "--to") if args.to else None
    if from_ms is not None and to_ms is not None and from_ms >= to_ms:
        raise ConfigError(f"--from {args.from_!r} must be before --to {args.to!r}")
    backend = backend_from_args(args)
    try:
        # Migrating first lets `summary` run on an empty folder and print zeros/nulls.
        apply_migrations(backend)
        summary = compute_summary(backend, from_ms, to_ms)
    finally:
        backend.close()
    print(json.dumps(summary))
    return 0
