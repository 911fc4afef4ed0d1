"""The SQL both ClickHouse 18.16 (the Debian server) and chdb 26.x (embedded) accept.

Every place where the two versions differ is decided here, so the rest of the package
writes one SQL text for both:

- **Query parameters.** 18.16 has no server-side ``{name:Type}`` parameters (added in
  19.x) and chdb's Python API has its own; we render literals client-side, the same way
  for both, with :func:`render`.
- **Empty ``IN ()``.** chdb 26.x accepts ``x IN ()``; 18.16 rejects it as a syntax
  error. :func:`literal` refuses an empty sequence, so callers skip the query instead.
- **Time types.** 18.16 has no ``DateTime64``; times are ``UInt64`` epoch milliseconds
  and minutes are computed with integer arithmetic (:func:`minute_ms_expr`), which is
  timezone-free and identical on both. ``DateTime`` appears only for partitioning and
  for Grafana's time column, derived from the integer.
- **Window functions** (``lag() OVER``) do not exist in 18.16; nothing in ``streams/``
  uses them (the per-session figures come precomputed in ``sessions``).
- **Replaced rows.** ``ReplacingMergeTree`` deduplicates only at merge time; every read
  says ``FINAL`` (:data:`FINAL`), which both versions support on this engine.
- **Aliases.** An alias equal to a column name (``sum(converted) AS converted``) is
  substituted into other expressions; 26.x then rejects nested aggregates. Aggregate
  queries carry no such aliases.
- **Joined subqueries** need an alias on 26.x (``joined_subquery_requires_alias``);
  18.16 accepts one, so every joined subquery is aliased.
- **Adding columns.** 18.16 has no ``ADD COLUMN IF NOT EXISTS``; the migration runner
  checks ``DESCRIBE TABLE`` first and runs the plain ``ADD COLUMN``
  (``streams.clickhouse.migrations``).
- **Inline ``INSERT ... VALUES``** over the 18.16 native protocol makes the driver wait
  for data blocks; inserts always go through ``ClickHouse.insert`` with data.
- **Result types.** The driver returns ``0.0`` for a Float64 zero, chdb's JSON ``0``;
  the summary converts every figure to ``int``/``float`` itself.
- **Ratios.** ``x / 0`` is ``nan``/``inf`` on both and they print differently; queries
  return integer counts and sums and :mod:`streams.clickhouse.summary` divides in Python.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

#: Suffix every read of a ReplacingMergeTree table uses, so replaced versions never count.
FINAL = "FINAL"

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_ESCAPES = {"\\": "\\\\", "'": "\\'", "\n": "\\n", "\t": "\\t", "\r": "\\r", "\0": "\\0"}


def quote_string(value: str) -> str:
    """A ClickHouse string literal for ``value`` (backslash escapes, valid on 18.16 and 26.x)."""
    return "'" + "".join(_ESCAPES.get(ch, ch) for ch in value) + "'"


def literal(value: Any) -> str:
    """Render one Python value as a ClickHouse literal.

    ``None`` is ``NULL``, booleans are 0/1, floats must be finite, and a non-empty list,
    tuple or set becomes a parenthesised list for ``IN`` (sorted when a set, so the SQL
    text is deterministic). An empty sequence raises ``ValueError``: 18.16 cannot parse
    ``IN ()``.
    """
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"cannot store non-finite float {value!r} in ClickHouse")
        return repr(value)
    if isinstance(value, str):
        return quote_string(value)
    if isinstance(value, set | frozenset):
        value = sorted(value)
    if isinstance(value, list | tuple):
        if not value:
            raise ValueError("empty list: ClickHouse 18.16 cannot parse IN (); skip the query")
        return "(" + ", ".join(literal(v) for v in value) + ")"
    raise TypeError(f"no ClickHouse literal for {type(value).__name__}: {value!r}")


def render(sql: str, params: Mapping[str, Any] | None = None) -> str:
    """Substitute ``{name}`` placeholders in ``sql`` with literals from ``params``.

    A placeholder without a value raises ``KeyError`` naming it; literal braces are not
    used in our SQL, so no escaping of ``{`` is offered.
    """
    if not params:
        return sql

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in params:
            raise KeyError(f"SQL placeholder {{{name}}} has no parameter")
        return literal(params[name])

    return _PLACEHOLDER.sub(substitute, sql)


def minute_ms_expr(column: str) -> str:
    """SQL for the start of the UTC minute of an epoch-ms column, as epoch ms (UInt64)."""
    return f"intDiv({column}, 60000) * 60000"


def split_statements(script: str) -> list[str]:
    """Split a migration script into statements at ``;`` ending a line.

    ``--`` comment lines are dropped. Both ClickHouse versions take one statement per
    query over the native protocol and in chdb, so scripts are sent statement by statement.
    """
    statements: list[str] = []
    current: list[str] = []
    for line in script.splitlines():
        if line.strip().startswith("--"):
            continue
        current.append(line)
        if line.rstrip().endswith(";"):
            text = "\n".join(current).strip().rstrip(";").strip()
            if text:
                statements.append(text)
            current = []
    tail = "\n".join(current).strip()
    if tail:
        statements.append(tail)
    return statements


def row_values(row: Sequence[Any]) -> str:
    """One parenthesised ``VALUES`` tuple (used for small inserts and in tests)."""
    return "(" + ", ".join(literal(v) for v in row) + ")"
