"""What Grafana would send: the dashboards' queries with variables and plugin macros expanded.

The ClickHouse expansion follows the official plugin (grafana-clickhouse-datasource):
the frontend first replaces ``$__conditionalAll(condition, $var)`` by the condition, or by
``1=1`` when the variable selects All (``applyConditionalAll``), then Grafana interpolates
template variables, then the backend expands the time macros (``pkg/macros/macros.go``):

=========================  ================================================================
``$__timeFilter(c)``       ``c >= toDateTime(FROM_S) AND c <= toDateTime(TO_S)``
``$__timeFilter_ms(c)``    ``c >= fromUnixTimestamp64Milli(FROM_MS) AND c <= ...(TO_MS)``
``$__dateFilter(c)``       ``c >= toDate('YYYY-MM-DD') AND c <= toDate('YYYY-MM-DD')``
``$__fromTime``            ``toDateTime(FROM_S)`` (``$__toTime`` likewise)
``$__fromTime_ms``         ``fromUnixTimestamp64Milli(FROM_MS)`` (``$__toTime_ms`` likewise)
``$__timeInterval(c)``     ``toStartOfInterval(toDateTime(c), INTERVAL N second)``
``$__timeInterval_ms(c)``  ``toStartOfInterval(toDateTime64(c, 3), INTERVAL N millisecond)``
``$__interval_s``          ``N`` (the panel interval in seconds, at least 1)
=========================  ================================================================

The ``_ms`` macros and ``$__timeInterval`` expand to functions ClickHouse 18.16 lacks
(``fromUnixTimestamp64Milli``, ``DateTime64``, ``toStartOfInterval``), so the dashboards
use ``$__timeFilter`` on the DateTime column ``session_minutes.minute``, ``$__fromTime`` /
``$__toTime`` converted to epoch ms for the UInt64 ``*_ms`` columns, and ``$__interval_s``
for buckets; the expansions are still implemented so a dashboard using them fails on 18.16
in the tests instead of in front of a user.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[3]
DASHBOARDS = ROOT / "deploy" / "grafana" / "dashboards"
CLICKHOUSE_TYPE = "grafana-clickhouse-datasource"
PROMETHEUS_TYPE = "prometheus"

#: A variable selection meaning "All" (Grafana's ``$__all``).
ALL = "$__all"


@dataclass(frozen=True, slots=True)
class PanelQuery:
    """One query of a dashboard: a panel target or a template variable."""

    dashboard: str
    panel: str
    ref: str
    text: str
    panel_id: int = 0

    @property
    def id(self) -> str:
        """A readable, unique test id: dashboard uid, panel id and title, refId."""
        return f"{self.dashboard}:{self.panel_id}:{self.panel}:{self.ref}"


@dataclass(frozen=True, slots=True)
class TimeRange:
    """The dashboard time range and the panel interval Grafana would send."""

    from_ms: int
    to_ms: int
    interval_s: int

    @classmethod
    def of(cls, start: str, end: str, interval_s: int) -> TimeRange:
        """From two ISO 8601 instants (UTC)."""

        def ms(text: str) -> int:
            return int(datetime.fromisoformat(text).astimezone(UTC).timestamp() * 1000)

        return cls(ms(start), ms(end), interval_s)


def load_dashboards() -> dict[str, dict[str, Any]]:
    """Every dashboard JSON file by file name."""
    return {
        path.name: json.loads(path.read_text(encoding="utf-8"))
        for path in sorted(DASHBOARDS.glob("*.json"))
    }


def panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those nested in collapsed rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def _datasource_type(panel: Mapping[str, Any], target: Mapping[str, Any]) -> str:
    source = target.get("datasource") or panel.get("datasource") or {}
    return str(source.get("type", ""))


def queries(kind: str) -> list[PanelQuery]:
    """Every panel target of datasource type ``kind`` (rawSql or expr) in every dashboard."""
    field = "rawSql" if kind == CLICKHOUSE_TYPE else "expr"
    found = []
    for dashboard in load_dashboards().values():
        for panel in panels(dashboard):
            for target in panel.get("targets", []):
                if _datasource_type(panel, target) == kind:
                    found.append(
                        PanelQuery(
                            dashboard["uid"],
                            panel["title"],
                            target["refId"],
                            target[field],
                            panel["id"],
                        )
                    )
    return found


def variables(kind: str = CLICKHOUSE_TYPE) -> list[PanelQuery]:
    """Every query template variable of datasource type ``kind``."""
    found = []
    for dashboard in load_dashboards().values():
        for var in dashboard.get("templating", {}).get("list", []):
            if var.get("type") == "query" and var.get("datasource", {}).get("type") == kind:
                query = var["query"]
                text = query["rawSql"] if isinstance(query, dict) else query
                found.append(PanelQuery(dashboard["uid"], f"${var['name']}", "var", text))
    return found


# ---------------------------------------------------------------- ClickHouse expansion


def macro_args(text: str, open_at: int) -> tuple[list[str], int]:
    """Top-level comma-separated arguments of the call whose ``(`` is at ``open_at``.

    Nested parentheses and quoted strings are respected (as the plugin's frontend parser
    does); returns the arguments and the index just past the closing ``)``.
    """
    depth, quote, args, start = 0, "", [], open_at + 1
    for i in range(open_at, len(text)):
        ch = text[i]
        if quote:
            if ch == quote and text[i - 1] != "\\":
                quote = ""
        elif ch in "'\"`":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                args.append(text[start:i].strip())
                return args, i + 1
        elif ch == "," and depth == 1:
            args.append(text[start:i].strip())
            start = i + 1
    raise ValueError(f"unbalanced parentheses after position {open_at} in {text!r}")


def _replace_calls(text: str, name: str, expand: Callable[[list[str]], str]) -> str:
    """Replace every ``$__name(...)`` call, innermost-last, by ``expand(args)``."""
    pattern = re.compile(re.escape(f"$__{name}") + r"\(")
    while match := pattern.search(text):
        args, end = macro_args(text, match.end() - 1)
        text = text[: match.start()] + expand(args) + text[end:]
    return text


def _replace_word(text: str, name: str, value: str) -> str:
    return re.sub(re.escape(f"$__{name}") + r"(?![A-Za-z0-9_(])", lambda _: value, text)


def apply_conditional_all(sql: str, selection: Mapping[str, Sequence[str] | str]) -> str:
    """The frontend step: ``$__conditionalAll(cond, $var)`` -> cond, or ``1=1`` for All."""

    def expand(args: list[str]) -> str:
        if len(args) != 2 or not args[1].startswith("$"):
            raise ValueError(f"$__conditionalAll needs (condition, $variable), got {args}")
        name = args[1].lstrip("$").strip("{}")
        if name not in selection:
            raise KeyError(f"$__conditionalAll names unknown variable ${name}")
        value = selection[name]
        return "1=1" if value == ALL or not value else args[0]

    return _replace_calls(sql, "conditionalAll", expand)


def _singlequote(values: Sequence[str]) -> str:
    return ",".join("'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'" for v in values)


def interpolate_variables(
    sql: str,
    selection: Mapping[str, Sequence[str] | str],
    options: Mapping[str, Sequence[str]],
) -> str:
    """Grafana's template interpolation: ``${v:singlequote}``, ``${v}``, ``$v``.

    All selects every option (no custom all value). A multi-value plain ``$v`` is joined
    the way the ClickHouse plugin formats it (``'a','b'``).
    """

    def values(name: str) -> Sequence[str]:
        chosen = selection[name]
        if chosen == ALL:
            return list(options[name])
        return [chosen] if isinstance(chosen, str) else list(chosen)

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(3)
        fmt = match.group(2)
        if name not in selection:
            return match.group(0)  # a $__ macro or an unknown name: left for the next step
        chosen = values(name)
        if fmt == "singlequote" or len(chosen) > 1:
            return _singlequote(chosen)
        if fmt not in (None, "raw"):
            raise ValueError(f"variable format {fmt!r} is not implemented in the test expander")
        return chosen[0]

    return re.sub(r"\$\{(\w+)(?::(\w+))?\}|\$(\w+)", replace, sql)


def expand_backend_macros(sql: str, time: TimeRange) -> str:
    """The plugin backend's macros (see the module docstring for each expansion)."""
    from_s, to_s = time.from_ms // 1000, time.to_ms // 1000
    interval = str(max(int(time.interval_s), 1))

    def day(ms: int) -> str:
        return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d")

    def one(args: list[str], name: str) -> str:
        if len(args) != 1:
            raise ValueError(f"$__{name} expects 1 argument, got {args}")
        return args[0]

    sql = _replace_calls(
        sql,
        "timeFilter_ms",
        lambda a: (
            f"{one(a, 'timeFilter_ms')} >= fromUnixTimestamp64Milli({time.from_ms})"
            f" AND {a[0]} <= fromUnixTimestamp64Milli({time.to_ms})"
        ),
    )
    sql = _replace_calls(
        sql,
        "timeFilter",
        lambda a: (
            f"{one(a, 'timeFilter')} >= toDateTime({from_s}) AND {a[0]} <= toDateTime({to_s})"
        ),
    )
    sql = _replace_calls(
        sql,
        "dateFilter",
        lambda a: (
            f"{one(a, 'dateFilter')} >= toDate('{day(time.from_ms)}')"
            f" AND {a[0]} <= toDate('{day(time.to_ms)}')"
        ),
    )
    sql = _replace_calls(
        sql,
        "timeInterval_ms",
        lambda a: (
            f"toStartOfInterval(toDateTime64({one(a, 'timeInterval_ms')}, 3),"
            f" INTERVAL {int(interval) * 1000} millisecond)"
        ),
    )
    sql = _replace_calls(
        sql,
        "timeInterval",
        lambda a: (
            f"toStartOfInterval(toDateTime({one(a, 'timeInterval')}), INTERVAL {interval} second)"
        ),
    )
    sql = _replace_word(sql, "fromTime_ms", f"fromUnixTimestamp64Milli({time.from_ms})")
    sql = _replace_word(sql, "toTime_ms", f"fromUnixTimestamp64Milli({time.to_ms})")
    sql = _replace_word(sql, "fromTime", f"toDateTime({from_s})")
    sql = _replace_word(sql, "toTime", f"toDateTime({to_s})")
    sql = _replace_word(sql, "interval_s", interval)
    return sql


def expand_clickhouse(
    sql: str,
    time: TimeRange,
    selection: Mapping[str, Sequence[str] | str],
    options: Mapping[str, Sequence[str]],
) -> str:
    """The SQL the plugin sends for ``sql``: frontend, variables, then backend macros.

    Raises ``ValueError`` if anything starting with ``$`` survives (a macro or variable
    the expander does not know would reach ClickHouse verbatim).
    """
    text = apply_conditional_all(sql, selection)
    text = interpolate_variables(text, selection, options)
    text = expand_backend_macros(text, time)
    leftover = re.findall(r"\$\{?\w+", text)
    if leftover:
        raise ValueError(f"unexpanded macro or variable {leftover} in {text!r}")
    return text


# ---------------------------------------------------------------- Prometheus expansion


def expand_promql(expr: str, rate_interval: str = "1m", interval: str = "15s") -> str:
    """``expr`` with Grafana's interval variables replaced (``$__rate_interval`` etc.)."""
    values = {"__rate_interval": rate_interval, "__interval": interval, "__range": "5m"}

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return values.get(name, match.group(0))

    text = re.sub(r"\$\{(\w+)\}|\$(\w+)", replace, expr)
    if "$" in text:
        raise ValueError(f"unexpanded Grafana variable in {text!r}")
    return text
