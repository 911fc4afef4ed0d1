"""Client-side SQL rendering and script splitting shared by both backends."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.clickhouse.dialect import literal, minute_ms_expr, render, split_statements


def test_literals_of_each_type() -> None:
    """None, bools, ints, floats, strings and sequences render as ClickHouse literals."""
    assert [literal(v) for v in (None, True, 7, 0.1, "a")] == ["NULL", "1", "7", "0.1", "'a'"]
    assert literal(["b", "a"]) == "('b', 'a')"
    assert literal({"b", "a"}) == "('a', 'b')"


def test_string_escapes() -> None:
    """Quotes, backslashes and control characters are backslash-escaped."""
    assert literal("it's \\ \n\t") == "'it\\'s \\\\ \\n\\t'"


def test_empty_sequence_is_refused() -> None:
    """An empty IN list raises: ClickHouse 18.16 cannot parse `IN ()`."""
    with pytest.raises(ValueError, match="IN"):
        literal([])


def test_non_finite_float_is_refused() -> None:
    """nan/inf never reach ClickHouse: they print differently on the two versions."""
    with pytest.raises(ValueError, match="non-finite"):
        literal(float("nan"))


def test_render_substitutes_and_names_missing_parameters() -> None:
    """{name} placeholders are replaced; a missing one raises KeyError naming it."""
    assert render("x IN {ids} AND y = {y}", {"ids": [1, 2], "y": "z"}) == "x IN (1, 2) AND y = 'z'"
    assert render("no {placeholders}") == "no {placeholders}"
    with pytest.raises(KeyError, match="missing"):
        render("{missing}", {"other": 1})


def test_split_statements_drops_comments_and_splits_at_line_end_semicolons() -> None:
    """Scripts split at `;` ending a line; `--` lines go; a trailing statement is kept."""
    script = "-- c\nCREATE TABLE a (x UInt8)\nENGINE = Memory;\n\n-- d\nSELECT 1;\nSELECT 2"
    assert split_statements(script) == [
        "CREATE TABLE a (x UInt8)\nENGINE = Memory",
        "SELECT 1",
        "SELECT 2",
    ]


def test_minute_expression() -> None:
    """The minute of an epoch-ms column is integer arithmetic (timezone-free)."""
    assert minute_ms_expr("ts_ms") == "intDiv(ts_ms, 60000) * 60000"


@given(st.text())
def test_any_string_literal_round_trips_through_a_python_unescape(value: str) -> None:
    """Every string renders as one quoted literal whose escapes undo to the original."""
    rendered = literal(value)
    assert rendered[0] == rendered[-1] == "'"
    body = rendered[1:-1]
    unescaped = (
        body.replace("\\\\", "\x00BS")
        .replace("\\'", "'")
        .replace("\\n", "\n")
        .replace("\\t", "\t")
        .replace("\\r", "\r")
        .replace("\\0", "\0")
        .replace("\x00BS", "\\")
    )
    assert unescaped == value
