"""``journey report``: a shareable, self-contained HTML journey map read from ClickHouse.

The page shows the headline figures of ``journey summary``, the stage funnel, a Sankey
diagram of the journey (channels -> awareness -> consideration -> purchase -> converted,
with the drop-offs), drop-off by stage, time on page, the channel mix and trends. Data
comes by SQL from the ClickHouse tables (:mod:`streams.report.data`) on either backend;
the charts are inline SVG drawn here (:mod:`streams.report.charts`), so the file needs
no network to be viewed.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from streams.errors import ConfigError


def register(subparsers: Any) -> None:
    """Add the ``report`` subcommand to the ``journey`` parser."""
    from streams.clickhouse.options import add_target_arguments

    parser = subparsers.add_parser(
        "report",
        help="write a self-contained HTML journey report from ClickHouse",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--out", default="report.html", metavar="FILE", help="HTML file to write [report.html]"
    )
    parser.add_argument("--from", dest="from_", metavar="ISO", help="period start (inclusive)")
    parser.add_argument("--to", metavar="ISO", help="period end (exclusive)")
    parser.add_argument("--title", default="Customer journey report", help="heading of the page")
    add_target_arguments(parser)
    parser.set_defaults(func=run)


def write_report(path: Path, html: str) -> None:
    """Write ``html`` to ``path`` atomically (a reader never sees half a page)."""
    folder = path.resolve().parent
    if not folder.is_dir():
        raise ConfigError(f"--out {str(path)!r}: folder {str(folder)!r} does not exist")
    tmp = folder / f".{path.name}.{os.getpid()}.tmp"
    try:
        tmp.write_text(html, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def run(args: argparse.Namespace) -> int:
    """Read the figures, render the page, write ``--out``; exit status 0."""
    from streams.clickhouse.migrations import apply_migrations
    from streams.clickhouse.options import backend_from_args
    from streams.report.data import load_report_data
    from streams.report.page import render_html
    from streams.summary import parse_instant_ms

    from_ms = parse_instant_ms(args.from_, "--from") if args.from_ else None
    to_ms = parse_instant_ms(args.to, "--to") if args.to else None
    if from_ms is not None and to_ms is not None and from_ms >= to_ms:
        raise ConfigError(f"--from {args.from_!r} must be before --to {args.to!r}")
    backend = backend_from_args(args)
    try:
        # Migrating first lets `report` run on an empty folder and show an empty report.
        apply_migrations(backend)
        data = load_report_data(backend, from_ms, to_ms)
    finally:
        backend.close()
    out = Path(args.out)
    write_report(out, render_html(data, title=args.title))
    print(
        f"journey report: wrote {out} ({data.summary['sessions']:,} sessions,"
        f" {data.summary['orders']:,} orders)"
    )
    return 0
