"""The ``journey`` command: one subcommand per module, each registering its own parser.

A command module exposes ``register(subparsers)``, which adds its parser and sets
``func`` (a callable taking the parsed namespace and returning an exit status).
Modules are imported lazily by name so ``journey --help`` stays fast and a command's
heavy dependencies (faust, chdb) load only when that command runs.

Failures are handled here, once for every command: a known failure (an error raised on
purpose, or one of the operating system naming its file) is one line on stderr, saying
what went wrong and what to do, with exit status 2; ``--debug`` adds the traceback. Any
other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
import traceback
from collections.abc import Sequence

from streams import __version__
from streams.errors import explain

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

#: Exit status of a known failure (argparse uses the same for a bad command line).
ERROR_STATUS = 2

_DEBUG_HELP = "on an error, also print the traceback"

#: reStructuredText in the docstrings the parsers reuse as descriptions: a role
#: (:mod:`x`, :func:`~a.b`, :class:`text <target>`) and inline literals (``x``).
_ROLE = re.compile(r":[a-z]+:`(~?)([^`<]*?)\s*(?:<[^`>]*>)?`")
_LITERAL = re.compile(r"``(.+?)``", re.DOTALL)


def plain_text(text: str) -> str:
    """``text`` without reStructuredText markup: roles and inline literals as plain words.

    A role keeps its title, or the target's last dotted part when written ``~a.b.c``.
    """

    def role(match: re.Match[str]) -> str:
        tilde, title = match.groups()
        return title.rsplit(".", 1)[-1] if tilde else title

    return _LITERAL.sub(r"\1", _ROLE.sub(role, text))


def build_parser() -> argparse.ArgumentParser:
    """The full ``journey`` argument parser with every available subcommand."""
    parser = argparse.ArgumentParser(
        prog="journey",
        description="Streaming clickstream processor for online stores.",
    )
    parser.add_argument("--version", action="version", version=f"journey-streams {__version__}")
    parser.add_argument("--debug", action="store_true", help=_DEBUG_HELP)
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
    for command in sub.choices.values():
        # SUPPRESS: given after the command it sets debug, absent it leaves the top level's.
        command.add_argument(
            "--debug", action="store_true", default=argparse.SUPPRESS, help=_DEBUG_HELP
        )
        _strip_markup(command)
    for action in sub._choices_actions:
        action.help = plain_text(action.help) if action.help else action.help
    return parser


def _strip_markup(parser: argparse.ArgumentParser) -> None:
    """Help texts as a terminal shows them: the docstrings' markup removed."""
    if parser.description:
        parser.description = plain_text(parser.description)
    if parser.epilog:
        parser.epilog = plain_text(parser.epilog)
    for action in parser._actions:
        if isinstance(action.help, str):
            action.help = plain_text(action.help)


def parse_arguments(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None
) -> argparse.Namespace:
    """Parse ``argv``; an unknown option is reported with its subcommand's usage.

    argparse leaves options no parser knows to the top-level parser, which would print
    ``usage: journey [-h] ... COMMAND`` instead of the usage of the command they were for.
    """
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        sub.choices[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``journey`` console script."""
    from streams.logs import collapse_client_logs

    parser = build_parser()
    args = parse_arguments(parser, argv)
    collapse_client_logs()
    try:
        status = args.func(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        message = explain(exc)
        if message is None:
            raise  # a bug: its traceback is the report
        if args.debug:
            traceback.print_exc()
        print(f"journey {args.command}: error: {message}", file=sys.stderr)
        return ERROR_STATUS
    return int(status or 0)


if __name__ == "__main__":
    sys.exit(main())
