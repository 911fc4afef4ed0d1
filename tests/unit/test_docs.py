"""The README stays true to the code: setup commands, every setting, every linked file."""

from __future__ import annotations

import re
from pathlib import Path

from streams.cli import build_parser
from streams.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_quick_start_opens_with_the_two_setup_commands() -> None:
    """The first code block of the quick start is `make demo` then `make test`."""
    quick_start = README.split("## Quick start", 1)[1]
    first_block = quick_start.split("```", 2)[1]
    commands = [line.split("#")[0].strip() for line in first_block.splitlines()[1:]]
    assert [c for c in commands if c] == ["make demo", "make test"]


def test_every_setting_is_documented_with_its_default() -> None:
    """Each JOURNEY_* setting appears in the README's configuration table."""
    for name, default, _ in Settings.describe():
        row = next((line for line in README.splitlines() if line.startswith(f"| `{name}` |")), "")
        assert row, f"{name} is missing from README's configuration table"
        shown = default.strip("'")
        if shown:
            assert shown.lower() in row.lower(), f"{name}: README does not show default {shown}"


def test_linked_files_exist() -> None:
    """Every relative link in the README points at a file in the repository."""
    for target in re.findall(r"\]\(([^)#]+)\)", README):
        if "://" not in target:
            assert (ROOT / target).exists(), f"README links to missing {target}"


def heading_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives the headings of ``markdown`` (lower case, punctuation dropped)."""
    headings = re.findall(r"^#+ (.+)$", markdown, flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_links_between_docs_resolve() -> None:
    """Every relative link in docs/*.md names an existing file, and an existing heading."""
    checked = 0
    for doc in sorted((ROOT / "docs").glob("*.md")):
        for target in re.findall(r"\]\(([^)]+)\)", doc.read_text(encoding="utf-8")):
            if "://" in target:
                continue
            path, _, anchor = target.partition("#")
            linked = (doc.parent / path).resolve() if path else doc
            assert linked.exists(), f"{doc.name} links to missing {target}"
            if anchor and linked.suffix == ".md":
                anchors = heading_anchors(linked.read_text(encoding="utf-8"))
                assert anchor in anchors, f"{doc.name} links to missing heading {target}"
            checked += 1
    assert checked >= 6


def test_security_page_is_linked_from_the_readme() -> None:
    """docs/security.md, the threat model, is one link away from the README."""
    assert "](docs/security.md)" in README


def test_documented_commands_exist() -> None:
    """Every `journey X` in the commands table is a real subcommand."""
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    known = set(sub.choices)  # type: ignore[arg-type]
    documented = set(re.findall(r"^\| `journey (\w+)", README, flags=re.MULTILINE))
    assert documented, "no command table found"
    assert documented <= known, f"README documents unknown commands {documented - known}"


def test_every_prometheus_metric_is_documented() -> None:
    """docs/metrics.md lists each metric the worker registers, with its labels."""
    import dataclasses

    from prometheus_client import CollectorRegistry

    from streams.metrics import JourneyMetrics

    doc = (ROOT / "docs" / "metrics.md").read_text(encoding="utf-8")
    metrics = JourneyMetrics.create(CollectorRegistry())
    for f in dataclasses.fields(metrics):
        if f.name in ("registry", "event_types"):  # not metrics
            continue
        metric = getattr(metrics, f.name)
        name = metric._name + ("_total" if metric._type == "counter" else "")
        row = next((line for line in doc.splitlines() if line.startswith(f"| `{name}` |")), "")
        assert row, f"{name} is missing from docs/metrics.md"
        for label in metric._labelnames:
            assert label in row, f"{name}: label {label} not documented"
