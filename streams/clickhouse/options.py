"""The ``--embedded DIR | --clickhouse URL`` options every storage command shares."""

from __future__ import annotations

import argparse
from pathlib import Path

from streams.clickhouse.backend import ClickHouse, is_server_url, open_backend
from streams.errors import ConfigError
from streams.settings import Settings


def add_target_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the mutually exclusive ``--embedded`` / ``--clickhouse`` options to ``parser``."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--embedded",
        metavar="DIR",
        help="embedded ClickHouse (chdb) folder [default: $JOURNEY_DATA_DIR/clickhouse]",
    )
    group.add_argument(
        "--clickhouse",
        metavar="URL",
        help="ClickHouse server, clickhouse://host:9000/db [env: JOURNEY_CLICKHOUSE_URL]",
    )


def target_from_args(args: argparse.Namespace, settings: Settings | None = None) -> str:
    """The backend target the options (else the settings) name: a URL or a folder."""
    if args.clickhouse:
        if not is_server_url(args.clickhouse):
            raise ConfigError(
                f"--clickhouse {args.clickhouse!r} is not a clickhouse://host:9000/db URL"
            )
        return str(args.clickhouse)
    if args.embedded:
        return str(args.embedded)
    settings = settings or Settings.from_env()
    if settings.clickhouse_url:
        return settings.clickhouse_url
    return str(Path(settings.data_dir) / "clickhouse")


def backend_from_args(args: argparse.Namespace, settings: Settings | None = None) -> ClickHouse:
    """Open the backend the command-line options (else the settings) select."""
    return open_backend(target_from_args(args, settings))
