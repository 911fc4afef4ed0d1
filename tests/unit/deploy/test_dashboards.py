"""Grafana dashboards: valid JSON, unique ids, data sources that provisioning defines.

Also pins the links between the dashboards and the rest of the deployment: every
Prometheus series a panel names is a worker metric or a recording rule, and the
thresholds the alerts compare against are drawn next to the ratios they guard.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from streams.metrics import JourneyMetrics

ROOT = Path(__file__).resolve().parents[3]
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD_FILES = sorted((GRAFANA / "dashboards").glob("*.json"))
RULE_FILES = sorted((ROOT / "deploy" / "prometheus" / "rules").glob("*.yml"))


def load(path: Path) -> dict[str, Any]:
    """One dashboard file, parsed."""
    data = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def all_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, including those nested in rows."""
    found = []
    for panel in dashboard.get("panels", []):
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def provisioned_datasources() -> dict[str, str]:
    """uid -> type of every data source in provisioning/datasources."""
    sources = {}
    for path in sorted((GRAFANA / "provisioning" / "datasources").glob("*.yml")):
        for source in yaml.safe_load(path.read_text(encoding="utf-8"))["datasources"]:
            sources[source["uid"]] = source["type"]
    return sources


def datasource_refs(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every datasource reference of panels, targets and template variables."""
    refs = []
    for panel in all_panels(dashboard):
        if "datasource" in panel:
            refs.append(panel["datasource"])
        refs.extend(t["datasource"] for t in panel.get("targets", []) if "datasource" in t)
    refs.extend(v["datasource"] for v in dashboard["templating"]["list"] if "datasource" in v)
    return refs


def promql(dashboard: dict[str, Any]) -> list[str]:
    """Every Prometheus expression of a dashboard."""
    return [
        t["expr"]
        for p in all_panels(dashboard)
        for t in p.get("targets", [])
        if t.get("datasource", p.get("datasource", {})).get("type") == "prometheus"
    ]


def recording_rules() -> set[str]:
    """Names of the recording rules in deploy/prometheus/rules."""
    return {
        rule["record"]
        for path in RULE_FILES
        for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]
        for rule in group["rules"]
        if "record" in rule
    }


def alert_exprs() -> dict[str, str]:
    """Alert name -> expression from deploy/prometheus/rules."""
    return {
        rule["alert"]: rule["expr"]
        for path in RULE_FILES
        for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }


def test_expected_dashboards_exist() -> None:
    """Overview (ClickHouse), real time and operations (Prometheus) are all provisioned."""
    uids = {load(p)["uid"] for p in DASHBOARD_FILES}
    assert {"journey-overview", "journey-realtime", "journey-operations"} <= uids


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda p: p.name)
def test_dashboard_is_valid_with_unique_panel_ids(path: Path) -> None:
    """Valid JSON with uid and title; panel ids unique; panels fit the 24-column grid."""
    dashboard = load(path)
    assert dashboard["uid"]
    assert dashboard["title"]
    assert isinstance(dashboard["schemaVersion"], int)
    panels = all_panels(dashboard)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), f"duplicate panel ids in {path.name}"
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel.get("targets"), f"{panel['title']} has no query"
            assert panel.get("description"), f"{panel['title']} has no description"
            refs = [t["refId"] for t in panel["targets"]]
            assert len(refs) == len(set(refs)), f"duplicate refIds in {panel['title']}"


def test_dashboard_uids_and_titles_are_unique() -> None:
    """No two dashboard files share a uid or a title (Grafana would drop one)."""
    dashboards = [load(p) for p in DASHBOARD_FILES]
    assert len({d["uid"] for d in dashboards}) == len(dashboards)
    assert len({d["title"] for d in dashboards}) == len(dashboards)


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda p: p.name)
def test_datasources_exist_in_provisioning(path: Path) -> None:
    """Every data source uid a dashboard uses is provisioned, with the same type."""
    sources = provisioned_datasources()
    for ref in datasource_refs(load(path)):
        assert ref["uid"] in sources, f"{path.name}: unknown datasource uid {ref['uid']!r}"
        assert sources[ref["uid"]] == ref["type"], ref


def test_queries_use_the_plugins_query_fields() -> None:
    """ClickHouse targets are SQL-editor queries with rawSql; Prometheus targets have expr."""
    for path in DASHBOARD_FILES:
        for panel in all_panels(load(path)):
            for target in panel.get("targets", []):
                kind = target["datasource"]["type"]
                if kind == "grafana-clickhouse-datasource":
                    assert target["editorType"] == "sql"
                    assert target["rawSql"].lstrip().upper().startswith("SELECT")
                    assert target["format"] in (0, 1)
                else:
                    assert kind == "prometheus"
                    assert target["expr"].strip()


def test_overview_filters_by_channel_and_device() -> None:
    """The overview has channel and device variables from ClickHouse, used by its panels."""
    overview = load(GRAFANA / "dashboards" / "journey-overview.json")
    variables = {v["name"]: v for v in overview["templating"]["list"]}
    for name in ("channel", "device"):
        var = variables[name]
        assert var["type"] == "query"
        assert var["datasource"]["type"] == "grafana-clickhouse-datasource"
        assert var["multi"]
        assert var["includeAll"]
        users = [
            p["title"]
            for p in all_panels(overview)
            for t in p.get("targets", [])
            if f"${name})" in t.get("rawSql", "")
        ]
        assert len(users) >= 10, f"${name} filters only {users}"


def test_provisioning_loads_the_dashboards_folder() -> None:
    """The dashboard provider reads the folder where docker-compose mounts the dashboards."""
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "journey.yml").read_text())
    path = provider["providers"][0]["options"]["path"]
    compose = (ROOT / "docker-compose.yml").read_text(encoding="utf-8")
    assert f"./deploy/grafana/dashboards:{path}" in compose


def test_prometheus_series_are_metrics_or_recording_rules() -> None:
    """Every journey_* metric is exported by the worker, every journey:* is a recording rule."""
    registry = JourneyMetrics.create().registry
    suffixes = ("", "_total", "_bucket", "_sum", "_count", "_created")
    exported = {family.name + end for family in registry.collect() for end in suffixes}
    rules = recording_rules()
    unknown = set()
    for path in DASHBOARD_FILES:
        for expr in promql(load(path)):
            for name in re.findall(r"\b(journey[:_][A-Za-z0-9_:]*[A-Za-z0-9_])", expr):
                known = rules if ":" in name else exported
                if name not in known:
                    unknown.add((path.name, name))
    assert not unknown, f"series no rule or metric defines: {sorted(unknown)}"


@pytest.mark.parametrize(
    ("alert", "dashboard"),
    [
        ("CartAbandonmentSpike", "journey-realtime.json"),
        ("StageDropoffSpike", "journey-realtime.json"),
        ("ConversionRateDrop", "journey-realtime.json"),
        ("RejectedEventsSurge", "journey-operations.json"),
        ("ConsumerLagHigh", "journey-operations.json"),
        ("ClickHouseWritesFailing", "journey-operations.json"),
    ],
)
def test_alert_thresholds_are_drawn(alert: str, dashboard: str) -> None:
    """Each threshold series an alert compares against appears in the dashboard."""
    expr = alert_exprs()[alert]
    thresholds = set(re.findall(r"journey:threshold:[a-z_]+", expr))
    assert thresholds, f"{alert} names no journey:threshold:* series"
    drawn = " ".join(promql(load(GRAFANA / "dashboards" / dashboard)))
    missing = {t for t in thresholds if t not in drawn}
    assert not missing, f"{dashboard} does not draw {alert}'s thresholds {sorted(missing)}"
