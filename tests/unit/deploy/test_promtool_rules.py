"""The alert rules, run by promtool's unit tests, and the conventions every alert keeps."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
PROMETHEUS = ROOT / "deploy" / "prometheus"
RULES = PROMETHEUS / "rules"
RULE_TESTS = sorted((PROMETHEUS / "tests").glob("*.yml"))
RUNBOOKS = ROOT / "docs" / "runbooks.md"


def promtool() -> str:
    """Path of promtool, or a failure saying how to get it."""
    path = shutil.which("promtool") or (
        "/usr/bin/promtool" if Path("/usr/bin/promtool").exists() else None
    )
    if path is None:
        pytest.fail("promtool not found; `make up` installs the Debian package prometheus")
    return path


def alert_rules() -> list[dict[str, Any]]:
    """Every alerting rule of deploy/prometheus/rules."""
    return [
        rule
        for path in sorted(RULES.glob("*.yml"))
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]


def alert_cases() -> list[dict[str, Any]]:
    """Every alert_rule_test case of the promtool test files."""
    return [
        case
        for path in RULE_TESTS
        for test in yaml.safe_load(path.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
    ]


ALERT_NAMES = sorted(rule["alert"] for rule in alert_rules())


def test_promtool_unit_tests_pass() -> None:
    """`promtool test rules` passes for every test file in deploy/prometheus/tests."""
    assert RULE_TESTS, "no promtool test files in deploy/prometheus/tests"
    result = subprocess.run(
        [promtool(), "test", "rules", *map(str, RULE_TESTS)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(RULE_TESTS)


def test_the_issue_s_alerts_exist() -> None:
    """All eight alerts of the drop-off alerting issue are defined."""
    assert set(ALERT_NAMES) == {
        "CartAbandonmentSpike",
        "StageDropoffSpike",
        "ConversionRateDrop",
        "NoEventsIngested",
        "ConsumerLagHigh",
        "RejectedEventsSurge",
        "ClickHouseWritesFailing",
        "WorkerDown",
    }


@pytest.mark.parametrize("alert", ALERT_NAMES)
def test_every_alert_is_tested_firing_and_quiet(alert: str) -> None:
    """Each alert has a promtool case where it fires and one where it stays quiet."""
    cases = [case for case in alert_cases() if case["alertname"] == alert]
    assert any(case["exp_alerts"] for case in cases), f"{alert} is never expected to fire"
    assert any(not case["exp_alerts"] for case in cases), f"{alert} is never expected quiet"


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda rule: rule["alert"])
def test_alert_has_severity_annotations_and_runbook(rule: dict[str, Any]) -> None:
    """Severity label, summary, description and a runbook_url whose section exists."""
    assert rule["labels"]["severity"] in {"critical", "warning"}
    annotations = rule["annotations"]
    assert annotations["summary"].strip()
    assert annotations["description"].strip()
    page, _, anchor = annotations["runbook_url"].partition("#")
    assert page == "docs/runbooks.md"
    headings = re.findall(r"^## (\S+)\s*$", RUNBOOKS.read_text(encoding="utf-8"), re.MULTILINE)
    assert anchor in {h.lower() for h in headings}, f"docs/runbooks.md has no ## {rule['alert']}"


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda rule: rule["alert"])
def test_alert_logic_holds_no_windows_or_numbers(rule: dict[str, Any]) -> None:
    """Windows live in the recording rules and numbers in the thresholds file, not in alerts."""
    expr = re.sub(r'"[^"]*"', '""', rule["expr"])  # label values may contain digits
    assert "[" not in expr, f"{rule['alert']} has a range selector; record it instead"
    numbers = set(re.findall(r"(?<![\w:.])\d+(?:\.\d+)?", expr))
    assert numbers <= {"0"}, f"{rule['alert']} hard-codes {numbers}; use journey:threshold:*"


def test_thresholds_are_constants() -> None:
    """Every journey:threshold:* rule is a single vector(number), nothing else."""
    groups = yaml.safe_load((RULES / "journey.thresholds.yml").read_text())["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert rules
    for rule in rules:
        assert rule["record"].startswith("journey:threshold:")
        assert re.fullmatch(r"vector\(\d+(\.\d+)?\)", rule["expr"]), rule["expr"]
