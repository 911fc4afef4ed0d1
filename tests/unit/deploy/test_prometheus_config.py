"""Prometheus, rules and Alertmanager configuration, checked by the real promtool/amtool."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
DEPLOY = ROOT / "deploy"


def tool(name: str) -> str:
    """Path of a Prometheus tool, or a failure saying how to get it."""
    path = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
    if path is None:
        pytest.fail(f"{name} not found; `make up` installs prometheus and prometheus-alertmanager")
    return path


def check(*argv: str) -> str:
    """Run a checker; fail with its output unless it exits 0."""
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


@pytest.mark.parametrize("config", ["prometheus.yml", "prometheus.compose.yml"])
def test_promtool_accepts_prometheus_config(config: str) -> None:
    """promtool check config passes, including the rule files it references."""
    out = check(tool("promtool"), "check", "config", str(DEPLOY / "prometheus" / config))
    rule_files = len(list((DEPLOY / "prometheus" / "rules").glob("*.yml")))
    assert f"{rule_files} rule files found" in out


def test_promtool_accepts_rules() -> None:
    """promtool check rules passes for every rule file; the key alerts exist."""
    files = sorted((DEPLOY / "prometheus" / "rules").glob("*.yml"))
    check(tool("promtool"), "check", "rules", *map(str, files))
    alerts = {
        rule["alert"]
        for path in files
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }
    assert {"CartAbandonmentSpike", "WorkerDown"} <= alerts


def test_local_prometheus_targets_loopback() -> None:
    """The local stack scrapes 127.0.0.1:9464, alerts to 127.0.0.1:9093, loads rules/*.yml."""
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    assert config["rule_files"] == ["rules/*.yml"]
    targets = [
        t for job in config["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]
    ]
    assert "127.0.0.1:9464" in targets
    managers = config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert managers == ["127.0.0.1:9093"]


def test_recording_rules_have_no_stale_labels() -> None:
    """No recording rule aggregates by a label the worker does not export (e.g. channel)."""
    exported = {"event_type", "reason", "furthest_stage", "stage", "table", "partition"}
    for path in sorted((DEPLOY / "prometheus" / "rules").glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                for labels in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", rule["expr"]):
                    used = {name.strip() for name in labels.split(",") if name.strip()}
                    assert used <= exported, f"{rule.get('record') or rule.get('alert')}: {used}"


def test_amtool_accepts_alertmanager_config() -> None:
    """amtool check-config passes; critical and warning alerts have their own routes."""
    path = DEPLOY / "alertmanager" / "alertmanager.yml"
    check(tool("amtool"), "check-config", str(path))
    routes = yaml.safe_load(path.read_text())["route"]["routes"]
    assert {m for r in routes for m in r["matchers"]} == {
        'severity="critical"',
        'severity="warning"',
    }


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (["severity=critical", "alertname=CartAbandonmentSpike"], "journey-pager"),
        (["severity=warning", "alertname=ConsumerLagHigh"], "journey-warnings"),
        (["alertname=SomethingUnlabelled"], "journey-warnings"),
    ],
)
def test_alertmanager_routes_by_severity(labels: list[str], receiver: str) -> None:
    """amtool's route test sends criticals to the pager and the rest to warnings."""
    path = DEPLOY / "alertmanager" / "alertmanager.yml"
    out = check(tool("amtool"), "config", "routes", "test", f"--config.file={path}", *labels)
    assert out.splitlines()[0].strip() == receiver


def test_alertmanager_inhibits_warnings_during_criticals() -> None:
    """A critical silences warnings of the same service, except the rejected-events one."""
    config = yaml.safe_load((DEPLOY / "alertmanager" / "alertmanager.yml").read_text())
    rule = config["inhibit_rules"][0]
    assert rule["source_matchers"] == ['severity="critical"']
    assert 'severity="warning"' in rule["target_matchers"]
    assert rule["equal"] == ["service"]


def test_grafana_provisioning_is_well_formed() -> None:
    """Data sources are Prometheus and the ClickHouse plugin; dashboards parse as JSON."""
    sources = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/journey.yml").read_text())
    types = {s["type"] for s in sources["datasources"]}
    assert types == {"prometheus", "grafana-clickhouse-datasource"}
    dashboards = list((DEPLOY / "grafana/dashboards").glob("*.json"))
    assert dashboards
    for path in dashboards:
        board = json.loads(path.read_text())
        assert board["uid"]
        assert board["title"]
        assert isinstance(board["panels"], list)
