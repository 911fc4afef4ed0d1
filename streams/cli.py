"""The ``journey`` command: one subcommand per module, each registering its own parser.

A command module exposes ``register(subparsers)``, which adds its parser and sets
``func`` (a callable taking the parsed namespace and returning an exit status).
Modules are imported lazily by name so ``journey --help`` stays fast and a command's
heavy dependencies (faust, chdb) load only when that command runs.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from streams import __version__
from streams.errors import JourneyError

#: (module, command names it registers), in the order ``--help`` lists them.
COMMAND_MODULES: tuple[str, ...] = (
    "streams.generator.command",
    "streams.replay",
    "streams.summary",
    "streams.clickhouse.command",
    "streams.worker.command",
    "streams.report",
    "streams.bench.command",
    "streams.demo",
)


def build_parser() -> argparse.ArgumentParser:
    """The full ``journey`` argument parser with every available subcommand."""
    parser = argparse.ArgumentParser(
        prog="journey",
        description="Streaming clickstream processor for online stores.",
    )
    parser.add_argument("--version", action="version", version=f"journey-streams {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            # Only the command module itself (or its package) missing is tolerated; a
            # missing dependency inside a command is a real error and propagates.
            if exc.name is None or not (name == exc.name or name.startswith(exc.name + ".")):
                raise
            continue  # a command not built yet
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``journey`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        status = args.func(args)
    except JourneyError as exc:
        print(f"journey {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return int(status or 0)


if __name__ == "__main__":
    sys.exit(main())
