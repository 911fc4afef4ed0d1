"""docker-compose.yml: mounts exist, commands are real ``journey`` subcommands, health gates."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest
import yaml

from streams.cli import build_parser

ROOT = Path(__file__).resolve().parents[3]
#: Every subcommand the compose file runs; the test below fails if one is not registered.
EXPECTED_COMMANDS = {"worker", "generate", "migrate"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """The parsed docker-compose.yml."""
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def subcommands() -> dict[str, argparse.ArgumentParser]:
    """The ``journey`` subcommand parsers, as the real CLI builds them."""
    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("journey has no subcommands")


def command_of(service: dict[str, Any]) -> list[str] | None:
    """A service's command as a list of words (None if it has none)."""
    command = service.get("command")
    if command is None:
        return None
    return command.split() if isinstance(command, str) else [str(word) for word in command]


def test_bind_mounts_exist_in_repo(compose: dict[str, Any]) -> None:
    """Every host path bind-mounted into a container exists in the repository."""
    checked = 0
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0] if isinstance(volume, str) else volume.get("source")
            if source.startswith((".", "/")):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"
                checked += 1
    assert checked >= 4  # prometheus, alertmanager, grafana provisioning + dashboards


def test_named_volumes_are_declared(compose: dict[str, Any]) -> None:
    """Every named volume a service uses is declared at the top level."""
    declared = set(compose.get("volumes") or {})
    used = {
        volume.split(":")[0]
        for service in compose["services"].values()
        for volume in service.get("volumes", [])
        if isinstance(volume, str) and not volume.startswith((".", "/"))
    }
    assert used
    assert used <= declared


def test_journey_commands_are_real_subcommands(compose: dict[str, Any]) -> None:
    """Services built from our image run `journey <sub>` with options the parser accepts."""
    parsers = subcommands()
    seen = set()
    for name, service in compose["services"].items():
        words = command_of(service)
        if service.get("image") != "journey-streams:local":
            continue
        assert words, f"{name} has no command"
        assert words[0] == "journey", f"{name} does not run the journey command"
        sub = words[1]
        seen.add(sub)
        assert sub in parsers, f"{name} runs `journey {sub}`, which the CLI does not register"
        parsers[sub].parse_args(words[2:])  # exits (SystemExit) on an unknown option
    assert seen == EXPECTED_COMMANDS


def test_worker_settings_point_at_compose_services(compose: dict[str, Any]) -> None:
    """The worker reads Kafka at kafka:9092, ClickHouse natively, and serves metrics on 9464."""
    env = compose["services"]["worker"]["environment"]
    assert env["JOURNEY_BROKERS"] == "kafka:9092"
    assert env["JOURNEY_CLICKHOUSE_URL"] == "clickhouse://clickhouse:9000/journey"
    assert str(env["JOURNEY_METRICS_PORT"]) == "9464"
    assert "worker:9464" in (ROOT / "deploy/prometheus/prometheus.compose.yml").read_text()


def test_health_checks_gate_dependencies(compose: dict[str, Any]) -> None:
    """Long-running services have health checks and dependents wait on conditions."""
    services = compose["services"]
    for name in ("kafka", "clickhouse", "worker", "prometheus", "alertmanager", "grafana"):
        assert "test" in services[name].get("healthcheck", {}), f"{name} has no healthcheck"
    for name, service in services.items():
        for dependency, rule in (service.get("depends_on") or {}).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            assert rule["condition"] in {"service_healthy", "service_completed_successfully"}
    grafana_env = services["grafana"]["environment"]
    assert "grafana-clickhouse-datasource" in grafana_env["GF_INSTALL_PLUGINS"]


def test_dockerfile_builds_the_journey_image() -> None:
    """The Dockerfile is python:3.11-slim, installs the package and runs the worker."""
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert text.startswith("# ")
    assert "FROM python:3.11-slim" in text
    assert "pip install" in text
    assert 'CMD ["journey", "worker"]' in text
