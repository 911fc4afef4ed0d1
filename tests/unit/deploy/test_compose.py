"""docker-compose.yml: mounts exist, commands are real ``journey`` subcommands, health gates,
and what production needs: credentials from .env only, loopback-only ports, SASL Kafka.

The security checks read the file the way Compose and the images do (variable
interpolation, the apache/kafka image's ``KAFKA_*`` to server.properties naming) rather
than looking for particular lines, so they keep holding when the file is rearranged.
"""

from __future__ import annotations

import argparse
import ipaddress
from typing import Any

import pytest
from compose_support import (
    ROOT,
    SECRET_NAME,
    VARIABLE,
    broker_and_worker,
    command_of,
    env_example,
    filled_env,
    interpolate,
    listeners,
    load_compose,
    password_problems,
    published_ports,
    service_env,
    strings,
    user_creation,
)

from streams.cli import build_parser
from streams.kafka_connection import KafkaConnection
from streams.settings import Settings

#: Every subcommand the compose file runs; the test below fails if one is not registered.
EXPECTED_COMMANDS = {"worker", "generate", "migrate"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """The parsed docker-compose.yml."""
    return load_compose()


def subcommands() -> dict[str, argparse.ArgumentParser]:
    """The ``journey`` subcommand parsers, as the real CLI builds them."""
    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("journey has no subcommands")


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
    env = service_env(compose["services"]["worker"])
    assert env["JOURNEY_BROKERS"] == "kafka:9092"
    url = env["JOURNEY_CLICKHOUSE_URL"]
    assert url.startswith("clickhouse://"), url
    assert url.endswith("@clickhouse:9000/journey"), url
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
    """The Dockerfile is python:3.11-slim, installs the package (not editable), runs the worker."""
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert text.startswith("# ")
    assert "FROM python:3.11-slim" in text
    assert "pip install /src" in text
    assert "pip install -e" not in text  # a regular install: schemas ship in the wheel
    assert 'CMD ["journey", "worker"]' in text


# --- production: credentials, ports, Kafka security ----------------------------------------


def test_published_ports_listen_on_loopback_only(compose: dict[str, Any]) -> None:
    """Every port any service publishes is bound to 127.0.0.1 (or ::1), none to all interfaces."""
    published = 0
    for name, service in compose["services"].items():
        assert service.get("network_mode") != "host", f"{name} uses the host's network"
        for host, port in published_ports(service):
            assert host, f"{name} publishes {port} on every interface"
            assert ipaddress.ip_address(host).is_loopback, f"{name} publishes {port} on {host}"
            published += 1
    assert published >= 7  # kafka, clickhouse x2, worker, prometheus, alertmanager, grafana


def test_no_password_is_empty_written_out_or_defaulted(compose: dict[str, Any]) -> None:
    """Every password in the file is a required variable from .env: none empty, none literal."""
    assert password_problems(compose) == []


@pytest.mark.parametrize(
    ("fragment", "problem"),
    [
        ({"GF_SECURITY_ADMIN_PASSWORD": "admin"}, "GF_SECURITY_ADMIN_PASSWORD"),
        ({"CLICKHOUSE_PASSWORD": ""}, "CLICKHOUSE_PASSWORD"),
        ({"KAFKA_PASSWORD": "${KAFKA_PASSWORD:-changeme}"}, "KAFKA_PASSWORD"),
        ({"URL": "clickhouse://journey:hunter2@clickhouse:9000/db"}, "hunter2"),
        ({"URL": "clickhouse://${U:-journey}:${P:-hunter2}@clickhouse:9000/db"}, "hunter2"),
        ({"test": "clickhouse-client --password '' --query 'SELECT 1'"}, "''"),
        ({"command": "kafka-configs --add-config 'SCRAM-SHA-512=[password=hunter2]'"}, "hunter2"),
        ({"JAAS": 'PlainLoginModule required username="a" password="a-secret";'}, "a-secret"),
    ],
)
def test_the_password_check_finds_what_it_is_for(fragment: dict[str, str], problem: str) -> None:
    """The check above flags a literal, empty or defaulted password wherever it is written."""
    found = password_problems({"services": {"x": {"environment": fragment}}})
    assert len(found) == 1, found
    assert problem in found[0], found


def test_the_password_check_accepts_required_variables() -> None:
    """Required variables, and $$NAME for a container's shell, pass the check."""
    fragment = {
        "GF_SECURITY_ADMIN_PASSWORD": "${GRAFANA_ADMIN_PASSWORD:?set it in .env}",
        "URL": "clickhouse://${U:-journey}:${P:?set P}@clickhouse:9000/db",
        "command": "--add-config 'SCRAM-SHA-512=[password=$$SCRAM_PASSWORD]'",
        "JOURNEY_CLICKHOUSE_PASSWORD_FILE": "/run/secrets/clickhouse",
    }
    assert password_problems({"services": {"x": {"environment": fragment}}}) == []


def test_every_variable_is_in_env_example_and_no_secret_is(compose: dict[str, Any]) -> None:
    """Each ${VAR} of the file is listed in .env.example, each listed one is used, no password
    has a value there, and .env itself is git-ignored."""
    text = (ROOT / "docker-compose.yml").read_text(encoding="utf-8")
    used = {m.group("braced") or m.group("bare") for m in VARIABLE.finditer(text)}
    listed = env_example()
    assert used, "docker-compose.yml uses no variables"
    assert used == set(listed), (
        f"only in the file: {used - set(listed)}; only listed: {set(listed) - used}"
    )
    for name, value in listed.items():
        if SECRET_NAME.search(name):
            assert value == "", f".env.example gives {name} a value; leave it for .env"
    ignored = (ROOT / ".gitignore").read_text(encoding="utf-8").splitlines()
    assert ".env" in ignored


def test_the_file_interpolates_with_a_filled_in_env(compose: dict[str, Any]) -> None:
    """With every variable of .env.example set, each one resolves; with a password unset, Compose
    stops with the message naming .env."""
    filled = filled_env()
    for _, value in strings(compose):
        interpolate(value, filled)  # raises for a required variable without a value
    text = (ROOT / "docker-compose.yml").read_text(encoding="utf-8")
    for name in (n for n in filled if SECRET_NAME.search(n)):
        for match in VARIABLE.finditer(text):
            if (match.group("braced") or match.group("bare")) == name:
                assert (match.group("rest") or "").startswith(":?"), f"{name} is not required"
                assert ".env" in (match.group("rest") or ""), f"{name}: the error names no .env"


def test_worker_kafka_settings_match_a_broker_listener(compose: dict[str, Any]) -> None:
    """The worker's JOURNEY_BROKERS is an advertised listener whose protocol, SASL mechanism
    and login module are what its JOURNEY_KAFKA_* settings speak."""
    properties, env = broker_and_worker(compose)
    settings = Settings.from_env(env)  # the real check of the JOURNEY_KAFKA_* combination
    connection = KafkaConnection.from_settings(settings)
    assert connection.uses_sasl, "the worker does not authenticate to Kafka"
    advertised = listeners(properties["advertised.listeners"])
    bound = listeners(properties["listeners"])
    protocols = dict(p.split(":") for p in properties["listener.security.protocol.map"].split(","))
    for server in connection.servers:
        host, _, port = server.rpartition(":")
        [name] = [n for n, address in advertised.items() if address == (host, int(port))]
        assert protocols[name] == connection.security_protocol, name
        assert bound[name][1] == int(port), f"{name} advertises {port} but listens elsewhere"
        prefix = f"listener.name.{name.lower()}."
        mechanisms = properties.get(prefix + "sasl.enabled.mechanisms") or properties.get(
            "sasl.enabled.mechanisms", "GSSAPI"
        )
        assert connection.sasl_mechanism in mechanisms.split(","), (name, mechanisms)
        jaas = properties.get(f"{prefix}{connection.sasl_mechanism.lower()}.sasl.jaas.config", "")
        module = "ScramLoginModule" if connection.sasl_mechanism.startswith("SCRAM") else "Plain"
        assert module in jaas, f"listener {name} has no {connection.sasl_mechanism} login module"


def test_only_sasl_listeners_are_reachable_from_other_containers(compose: dict[str, Any]) -> None:
    """A listener without authentication binds the broker container's loopback; every other
    one needs a SASL login, so nothing on the network reaches Kafka without a password."""
    properties, _ = broker_and_worker(compose)
    protocols = dict(p.split(":") for p in properties["listener.security.protocol.map"].split(","))
    for name, (host, port) in listeners(properties["listeners"]).items():
        if not protocols[name].startswith("SASL_"):
            assert host, f"{name} listens on every interface, port {port}"
            assert ipaddress.ip_address(host).is_loopback, f"{name} listens on {host}:{port}"
    published = {port for _, port in published_ports(compose["services"]["kafka"])}
    for name, (_, port) in listeners(properties["advertised.listeners"]).items():
        if str(port) in published:
            assert protocols[name].startswith("SASL_"), f"{name} is published without SASL"


def test_the_kafka_user_is_created_for_the_worker_s_mechanism(compose: dict[str, Any]) -> None:
    """A one-shot service writes the worker's SCRAM user before the worker starts."""
    services = compose["services"]
    filled = filled_env()
    worker = {k: interpolate(v, filled) for k, v in service_env(services["worker"]).items()}
    creator, command = user_creation(compose)
    assert f"--entity-name {worker['JOURNEY_KAFKA_SASL_USERNAME']}" in command
    mechanism = worker["JOURNEY_KAFKA_SASL_MECHANISM"]
    assert f"{mechanism}=[password={worker['JOURNEY_KAFKA_SASL_PASSWORD']}]" in command
    rule = services["worker"]["depends_on"][creator]
    assert rule["condition"] == "service_completed_successfully"
