"""The ``--embedded DIR | --clickhouse URL`` options every storage command shares."""

from __future__ import annotations

import argparse
from pathlib import Path

from streams.clickhouse.address import is_server_url, redact_url
from streams.clickhouse.backend import ClickHouse, open_backend
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
        help=(
            "ClickHouse server, clickhouse://host:9000/db or clickhouses://host:9440/db (TLS) "
            "[env: JOURNEY_CLICKHOUSE_URL, which keeps a password out of the process list]"
        ),
    )


def target_from_args(args: argparse.Namespace, settings: Settings | None = None) -> str:
    """The backend target the options (else the settings) name: a URL or a folder."""
    if args.clickhouse:
        if not is_server_url(args.clickhouse):
            raise ConfigError(
                f"--clickhouse {redact_url(args.clickhouse)!r} is not a clickhouse://host:9000/db "
                "or clickhouses://host:9440/db URL"
            )
        return str(args.clickhouse)
    if args.embedded:
        return str(args.embedded)
    settings = settings or Settings.from_env()
    if settings.clickhouse_url:
        return settings.clickhouse_url
    return str(Path(settings.data_dir) / "clickhouse")


def backend_from_args(
    args: argparse.Namespace, settings: Settings | None = None, *, create: bool = False
) -> ClickHouse:
    """Open the backend the command-line options (else the settings) select.

    An embedded folder must exist unless ``create`` (commands that write: replay,
    migrate): a command that only reads would otherwise create an empty database at a
    mistyped path and print zeros. A server gets the password file and TLS settings of
    ``settings`` (else the environment).
    """
    settings = settings or Settings.from_env()
    target = target_from_args(args, settings)
    if not create and not is_server_url(target) and not Path(target).is_dir():
        if args.embedded:
            raise ConfigError(
                f"--embedded {target!r}: no such folder; check the path, or write data there "
                "first (journey replay, journey worker)"
            )
        raise ConfigError(
            f"no embedded ClickHouse in {target!r} (the default, $JOURNEY_DATA_DIR/clickhouse): "
            "pass --embedded DIR or --clickhouse URL, or write data there first "
            "(journey replay, journey worker)"
        )
    return open_backend(target, settings)
