"""``journey replay``: run the engine over files and write the tables the worker writes.

Files hold events in any order (all events of a visitor, e.g. a backfill or an export),
as JSON lines or CSV: the extension says which (``.csv``; ``.jsonl``, ``.ndjson``,
``.json``), ``--format`` says it for every file. Every line is validated by the same
intake as the worker; bad lines are counted and the first few reported with their line
numbers and reasons, the rest of the file is still processed (``--strict`` makes them a
non-zero exit). A run whose every line is rejected fails, naming the likely fix (the
format, the CSV header). The accepted events are sessionized in event-time order per
visitor (``sessionize_all``), so replay is the in-order reference the streaming worker
must equal.
"""

from __future__ import annotations

import argparse
import csv
import math
import re
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streams.errors import ConfigError, InputError

if TYPE_CHECKING:
    from streams.engine.pii import Pseudonymiser

#: Reported bad lines at most; the rest are only counted.
SHOWN_REJECTIONS = 5


@dataclass(slots=True)
class ReplayReport:
    """Counts of one replay, printed at the end and returned to tests."""

    lines: int = 0
    events: int = 0
    rejected: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    first_rejections: list[tuple[str, int, str]] = field(default_factory=list)
    duplicates: int = 0
    sessions: int = 0
    orders: int = 0
    seconds: float = 0.0

    def reject(self, path: str, line: int, reason: str) -> None:
        """Count one bad input line (or batch element) and keep the first few."""
        self.rejected += 1
        self.reasons[reason] += 1
        if len(self.first_rejections) < SHOWN_REJECTIONS:
            self.first_rejections.append((path, line, reason))


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``journey replay``."""
    from streams.clickhouse.options import add_target_arguments

    parser = sub.add_parser(
        "replay",
        help="run the engine over JSONL/CSV files and write the ClickHouse tables",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="event files")
    parser.add_argument(
        "--format",
        choices=FORMATS,
        help="format of every PATH [default: from each file's extension: .csv is csv; "
        ".jsonl, .ndjson and .json are jsonl]",
    )
    parser.add_argument(
        "--map",
        action="append",
        default=[],
        metavar="FIELD=COLUMN",
        help="CSV only: the column of a contract field, dotted for nested ones "
        "(e.g. --map timestamp=ts --map properties.revenue=amount); "
        "unmapped fields are read from columns of the same name",
    )
    parser.add_argument(
        "--raw-events",
        action="store_true",
        help="also write every accepted event to raw_events (audit, verification)",
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 if any line is rejected")
    add_target_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Replay the files, print the report; 1 with --strict and bad lines, else 0."""
    from streams.clickhouse.migrations import apply_migrations
    from streams.clickhouse.options import backend_from_args
    from streams.clickhouse.retention import apply_retention
    from streams.clickhouse.writer import ClickHouseWriter
    from streams.engine.stages import load_stage_rules
    from streams.settings import Settings

    settings = Settings.from_env()
    rules = load_stage_rules(settings.stage_rules or None)
    config = settings.session_config()
    paths = [Path(p) for p in args.paths]
    for path in paths:  # before the backend: a mistyped name creates no database
        if not path.is_file():
            raise ConfigError(f"{path}: no such file")
    formats = [file_format(path, args.format) for path in paths]
    mapping = parse_mapping(args.map)
    if mapping and "jsonl" in formats:
        path = paths[formats.index("jsonl")]
        raise ConfigError(
            f"--map applies to CSV files only, and {str(path)!r} is read as JSON lines; "
            "drop --map, or pass --format csv if the file is CSV"
        )
    backend = backend_from_args(args, settings, create=True)
    try:
        apply_migrations(backend)
        apply_retention(backend, settings.retention_days)
        report = replay_files(
            paths,
            formats,
            ClickHouseWriter(backend),
            config,
            rules,
            mapping=mapping,
            raw_events=args.raw_events,
            pii=settings.pseudonymiser(),
        )
    finally:
        backend.close()
    print(format_report(report))
    if report.lines and report.rejected == report.lines:
        raise InputError(all_rejected_advice(report, paths, formats))
    return 1 if args.strict and report.rejected else 0


#: The formats ``replay`` reads, and the file extensions that name them.
FORMATS = ("jsonl", "csv")
EXTENSIONS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}


def file_format(path: Path, given: str | None) -> str:
    """The format ``path`` is read in: ``given`` (``--format``), else its extension's."""
    if given:
        return given
    fmt = EXTENSIONS.get(path.suffix.lower())
    if fmt is None:
        known = ", ".join(EXTENSIONS)
        raise ConfigError(
            f"cannot tell the format of {str(path)!r} from its extension (known: {known}); "
            "pass --format jsonl or --format csv"
        )
    return fmt


def all_rejected_advice(report: ReplayReport, paths: Sequence[Path], formats: Sequence[str]) -> str:
    """What to say when every line was rejected: the likely wrong format, else the reasons."""
    top = ", ".join(f"{reason} {n}" for reason, n in report.reasons.most_common(3))
    head = f"every one of the {report.lines} lines was rejected ({top})"
    read_as = {fmt: [p for p, f in zip(paths, formats, strict=True) if f == fmt] for fmt in FORMATS}
    if read_as["jsonl"] and not any(_looks_like_json(p) for p in read_as["jsonl"]):
        return f"{head}: the input is not JSON lines; if it is CSV, pass --format csv"
    if read_as["csv"] and all(_looks_like_json(p) for p in read_as["csv"]):
        return f"{head}: the input read as CSV holds JSON; pass --format jsonl"
    if read_as["csv"]:
        return (
            f"{head}: check the CSV header against the contract's field names "
            "(schemas/event.v1.json), or name the columns with --map FIELD=COLUMN "
            "(e.g. --map timestamp=ts)"
        )
    return f"{head}: the events do not follow the contract (schemas/event.v1.json)"


def _looks_like_json(path: Path) -> bool:
    """True when the first non-blank byte of ``path`` opens a JSON object or array."""
    with path.open("rb") as handle:
        head = handle.read(4096).lstrip()
    return head[:1] in (b"{", b"[")


def replay_files(
    paths: Sequence[Path],
    fmt: str | Sequence[str],
    writer: Any,
    config: Any,
    rules: Any,
    *,
    mapping: dict[str, str] | None = None,
    raw_events: bool = False,
    now_ms: int | None = None,
    pii: Pseudonymiser | None = None,
) -> ReplayReport:
    """Validate, sessionize and write; the engine and writer are passed in (tests, bench).

    ``fmt`` is the format of every path (``jsonl`` or ``csv``), or one format per path.

    ``pii`` (a ``Pseudonymiser``, ``JOURNEY_PII`` hash or drop) rewrites the accepted
    events before anything is derived from them, as the worker's intake does.
    """
    from streams.engine.sessionizer import sessionize_all

    started = time.perf_counter()
    report = ReplayReport()
    now = int(time.time() * 1000) if now_ms is None else now_ms
    events = []
    formats = [fmt] * len(paths) if isinstance(fmt, str) else list(fmt)
    for path, path_format in zip(paths, formats, strict=True):
        if not path.is_file():
            raise ConfigError(f"{path}: no such file")
        source = _jsonl_events if path_format == "jsonl" else _csv_events
        for event in source(path, now, report, mapping or {}):
            events.append(event)
    report.events = len(events)
    if pii is not None:
        events = pii.events(events)
    out = sessionize_all(events, config, rules)
    report.duplicates = out.duplicates
    report.sessions = len(out.sessions)
    report.orders = len(out.orders)
    writer.write(out.sessions, out.removed_session_ids, out.orders, out.removed_starts)
    if raw_events:
        writer.write_raw_events(events)
    report.seconds = time.perf_counter() - started
    return report


def _jsonl_events(
    path: Path, now_ms: int, report: ReplayReport, mapping: dict[str, str]
) -> Iterator[Any]:
    from streams.engine.intake import parse_payload

    name = str(path)
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            report.lines += 1
            result = parse_payload(line.rstrip(b"\r\n"), now_ms)
            for rejection in result.rejections:
                report.reject(name, number, rejection.reason)
            yield from result.events


def parse_mapping(items: Sequence[str]) -> dict[str, str]:
    """``FIELD=COLUMN`` options as a dict; a malformed one is a ConfigError."""
    mapping: dict[str, str] = {}
    for item in items:
        target, sep, column = item.partition("=")
        if not sep or not target.strip() or not column.strip():
            raise ConfigError(f"--map {item!r} is not FIELD=COLUMN (e.g. timestamp=ts)")
        mapping[target.strip()] = column.strip()
    return mapping


#: Contract fields a CSV row may carry (dotted = nested object member).
CSV_FIELDS = (
    "event_id", "event_type", "timestamp", "anonymous_id", "user_id",
    "page.url", "page.path", "page.title", "page.referrer",
    "campaign.source", "campaign.medium", "campaign.name", "campaign.term", "campaign.content",
    "properties.product_id", "properties.category", "properties.price", "properties.quantity",
    "properties.currency", "properties.order_id", "properties.revenue", "properties.cart_id",
    "properties.score", "properties.scale",
    "context.user_agent", "context.locale", "context.device_type",
)  # fmt: skip
_NUMERIC = {"properties.price", "properties.revenue", "properties.score"}
_INTEGER = {"properties.quantity", "properties.scale"}
#: A whole number of ASCII digits, short enough for ``int`` (longer ones are bad anyway:
#: every integer field is bounded well below 10**18).
_INTEGER_CELL = re.compile(r"-?[0-9]{1,18}", re.ASCII)
#: A decimal number, with optional sign, fraction and exponent; ASCII digits only.
_NUMBER_CELL = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", re.ASCII)


def _csv_events(
    path: Path, now_ms: int, report: ReplayReport, mapping: dict[str, str]
) -> Iterator[Any]:
    """The accepted events of a CSV file; a bad row is counted and the rest still read.

    Bytes that are not UTF-8 are read as lone surrogates, so a row using such a cell is
    ``not_utf8`` (from ``parse_event_dict``); a row the csv module cannot split (a field
    over its size limit) is ``invalid_csv``. Each is reported at the line where it ends.
    """
    from streams.engine.intake import INVALID_CSV, InvalidEvent, parse_event_dict

    unknown = sorted(set(mapping) - set(CSV_FIELDS))
    if unknown:
        raise ConfigError(f"--map names unknown field(s) {', '.join(unknown)}")
    name = str(path)
    with path.open(newline="", encoding="utf-8", errors="surrogateescape") as handle:
        reader = csv.DictReader(handle)
        while True:  # each step reads at least one line, so this ends with the file
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error:
                report.lines += 1
                # DictReader's own line_num is set after a row is read, so it lags here.
                report.reject(name, reader.reader.line_num, INVALID_CSV)
                continue
            report.lines += 1
            try:
                event = parse_event_dict(_csv_object(row, mapping), now_ms)
            except InvalidEvent as exc:
                report.reject(name, reader.line_num, exc.reason)
                continue
            yield event


def _csv_object(row: dict[str, str], mapping: dict[str, str]) -> dict[str, Any]:
    """One CSV row as a v1 event object: empty cells are absent, numbers parsed."""
    obj: dict[str, Any] = {}
    for target in CSV_FIELDS:
        cell = row.get(mapping.get(target, target))
        if cell is None or cell == "":
            continue
        value: Any = cell
        if target in _NUMERIC:
            value = _number(cell)
        elif (target in _INTEGER or target == "timestamp") and _INTEGER_CELL.fullmatch(cell):
            value = int(cell)
        head, _, tail = target.partition(".")
        if tail:
            obj.setdefault(head, {})[tail] = value
        else:
            obj[head] = value
    return obj


def _number(cell: str) -> Any:
    """A decimal number cell as a float; anything else stays text (intake: bad_field).

    ``float`` alone would also take NaN, infinity, ``1_000`` and non-ASCII digits, none of
    which is a number of the contract (JSON has no NaN or infinity).
    """
    if _NUMBER_CELL.fullmatch(cell):
        value = float(cell)
        if math.isfinite(value):
            return value
    return cell


def format_report(report: ReplayReport) -> str:
    """The human-readable end-of-replay report."""
    rate = report.events / report.seconds if report.seconds else 0.0
    lines = [
        f"replay: {report.lines} lines, {report.events} events accepted, "
        f"{report.rejected} rejected, {report.duplicates} duplicates dropped; "
        f"{report.sessions} sessions, {report.orders} orders written "
        f"in {report.seconds:.2f} s ({rate:,.0f} events/s)"
    ]
    if report.rejected:
        reasons = ", ".join(f"{reason} {n}" for reason, n in report.reasons.most_common())
        lines.append(f"rejected by reason: {reasons}")
        for path, line, reason in report.first_rejections:
            lines.append(f"  {path}:{line}: {reason}")
        if report.rejected > len(report.first_rejections):
            lines.append(f"  ... and {report.rejected - len(report.first_rejections)} more")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit("use: journey replay --help")
