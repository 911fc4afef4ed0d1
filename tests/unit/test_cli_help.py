"""Every ``journey`` help text reads as plain text: a description, no reStructuredText."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys

import pytest

from streams.cli import build_parser, plain_text

#: What reStructuredText markup looks like in a terminal: a role, an inline literal, a
#: link target, a directive.
MARKUP = re.compile(r":[a-z]+:`|``|`_\b|^\.\. [a-z]+::", re.MULTILINE)


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def test_every_command_is_walked() -> None:
    """The walk below sees the commands the README lists (a missing one would pass silently)."""
    expected = {"generate", "replay", "summary", "migrate", "worker", "report", "bench", "demo"}
    assert expected <= set(_commands())


@pytest.mark.parametrize("command", sorted(_commands()))
def test_help_has_a_description_and_no_markup(command: str) -> None:
    """`journey COMMAND --help` describes the command and shows no rST roles or literals."""
    parser = _commands()[command]
    assert parser.description, f"journey {command} --help has no description"
    text = parser.format_help()
    assert not MARKUP.search(text), MARKUP.search(text)


def test_top_level_help_has_no_markup() -> None:
    """`journey --help`, which lists every command's one-line help, shows no markup."""
    assert not MARKUP.search(build_parser().format_help())


def test_help_printed_by_the_command_is_plain() -> None:
    """The console prints the same plain text (`journey report --help` had :mod: roles)."""
    result = subprocess.run(
        [sys.executable, "-m", "streams.cli", "report", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "usage: journey report" in result.stdout
    assert not MARKUP.search(result.stdout), result.stdout


@pytest.mark.parametrize(
    ("marked", "plain"),
    [
        ("``journey generate``", "journey generate"),
        (":mod:`streams.report.data`", "streams.report.data"),
        (":class:`~streams.clickhouse.server.ServerBackend`", "ServerBackend"),
        (":func:`the loader <streams.engine.stages.load_stage_rules>`", "the loader"),
        ("a ``x`` and :data:`Y` end", "a x and Y end"),
        ("no markup: 'quoted', `single`", "no markup: 'quoted', `single`"),
    ],
)
def test_plain_text_removes_roles_and_literals(marked: str, plain: str) -> None:
    """Roles keep their title (the last dotted part with ~), literals their text."""
    assert plain_text(marked) == plain
