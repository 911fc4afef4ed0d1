"""docker-compose.yml: mounts exist, commands are real ``journey`` subcommands, health gates,
and what production needs: credentials from .env only, loopback-only ports, SASL Kafka.

The security checks read the file the way Compose and the images do (variable
interpolation, the apache/kafka image's ``KAFKA_*`` to server.properties naming) rather
than looking for particular lines, so they keep holding when the file is rearranged.
"""

from __future__ import annotations

import argparse
import ipaddress
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from streams.cli import build_parser
from streams.kafka_connection import KafkaConnection
from streams.settings import Settings

ROOT = Path(__file__).resolve().parents[3]
#: Every subcommand the compose file runs; the test below fails if one is not registered.
EXPECTED_COMMANDS = {"worker", "generate", "migrate"}
#: Compose variable references: ${NAME}, ${NAME:-default}, ${NAME:?error}, $NAME ($$ escapes).
VARIABLE = re.compile(
    r"(?<!\$)\$(?:\{(?P<braced>[A-Za-z_]\w*)(?P<rest>[^}]*)\}|(?P<bare>[A-Za-z_]\w*))"
)
#: A value that is nothing but a required variable: ``${NAME:?message}``.
REQUIRED_VARIABLE = re.compile(r"\$\{[A-Za-z_]\w*:?\?[^}]*\}")
#: Names of settings and variables whose values are secrets.
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|CREDENTIAL", re.IGNORECASE)


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


def service_env(service: Mapping[str, Any]) -> dict[str, str]:
    """A service's environment as a mapping, from either of Compose's two forms."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def strings(node: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """Every (path, string) of a parsed YAML tree, keys named in the path."""
    if isinstance(node, Mapping):
        for key, value in node.items():
            yield from strings(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from strings(value, f"{path}[{index}]")
    elif isinstance(node, str):
        yield path, node


def interpolate(text: str, values: Mapping[str, str]) -> str:
    """``text`` as Compose passes it to a container: variables from ``values``, $$ as $."""

    def one(match: re.Match[str]) -> str:
        name = match.group("braced") or match.group("bare")
        rest = match.group("rest") or ""
        if values.get(name):
            return values[name]
        if rest.startswith((":-", "-")):
            return rest.split("-", 1)[1]
        raise AssertionError(f"{name} is required ({rest}) but has no value")

    return VARIABLE.sub(one, text).replace("$$", "$")


def env_example() -> dict[str, str]:
    """The variables .env.example lists, with their (placeholder) values."""
    lines = (ROOT / ".env.example").read_text(encoding="utf-8").splitlines()
    return dict(line.split("=", 1) for line in lines if line.strip() and not line.startswith("#"))


def filled_env() -> dict[str, str]:
    """.env.example with every empty value filled in, as an operator's .env is."""
    return {
        name: value or f"{name.lower()}-0123456789abcdef" for name, value in env_example().items()
    }


def kafka_properties(env: Mapping[str, str]) -> dict[str, str]:
    """The server.properties the apache/kafka image writes from a service's ``KAFKA_*``.

    Its documented naming: drop ``KAFKA_``, ``___`` is ``-``, ``__`` is ``_``, ``_`` is
    ``.``, lower case. KAFKA_OPTS and friends are the launch script's, not properties.
    """
    not_properties = {"KAFKA_OPTS", "KAFKA_HEAP_OPTS", "KAFKA_JMX_OPTS", "KAFKA_LOG4J_OPTS"}
    properties = {}
    for name, value in env.items():
        if not name.startswith("KAFKA_") or name in not_properties:
            continue
        key = name.removeprefix("KAFKA_").replace("___", "-").replace("__", "\0")
        properties[key.replace("_", ".").replace("\0", "_").lower()] = value
    return properties


def listeners(spec: str) -> dict[str, tuple[str, int]]:
    """``NAME://host:port,...`` as {NAME: (host, port)} (an empty host is every interface)."""
    found = {}
    for item in spec.split(","):
        name, address = item.strip().split("://", 1)
        host, _, port = address.rpartition(":")
        found[name] = (host.strip("[]"), int(port))
    return found


def published_ports(service: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """(host address, published port) of each port a service publishes ("" = every address)."""
    for port in service.get("ports", []):
        if isinstance(port, Mapping):
            yield str(port.get("host_ip", "")), str(port.get("published", port.get("target")))
            continue
        spec = str(port).split("/")[0]
        if spec.startswith("["):  # [::1]:8080:80
            host, _, rest = spec[1:].partition("]:")
            yield host, rest.split(":")[0]
            continue
        parts = spec.split(":")
        yield (parts[0], parts[1]) if len(parts) == 3 else ("", parts[0])


def mask_variables(text: str) -> tuple[str, list[str]]:
    """``text`` with each ``${...}`` as one word ``VARIABLE<i>X``, and the references.

    A reference's error message may hold blanks, colons and slashes, which would end a
    URL's password or an option's value early.
    """
    references: list[str] = []

    def mask(match: re.Match[str]) -> str:
        references.append(match.group(0))
        return f"VARIABLE{len(references) - 1}X"

    return re.sub(r"\$\{[^}]*\}", mask, text), references


def unmask(text: str, references: list[str]) -> str:
    """``text`` with the words of :func:`mask_variables` put back."""
    return re.sub(r"VARIABLE(\d+)X", lambda m: references[int(m.group(1))], text)


def password_problems(node: Any) -> list[str]:
    """Where a compose tree holds a password that is empty, written out, or has a default.

    A secret setting's value must be exactly ``${NAME:?message}`` (required, no default); a
    password in a URL's user part, in a ``password=`` option or a JAAS ``password="..."``
    must be a variable too: ``${NAME:?...}`` for Compose, or ``$$NAME`` for the container's
    shell, whose environment got it from a required variable.
    """
    problems = []
    for path, value in strings(node):
        key = path.rsplit(".", 1)[-1]
        secret = SECRET_NAME.search(key) and not key.endswith("_FILE")
        if secret and not REQUIRED_VARIABLE.fullmatch(value.strip()):
            problems.append(f"{path} = {value!r} is not ${{VAR:?message}}")
        masked, references = mask_variables(value)
        written = [
            *re.findall(r"://[^/@\s:]+:([^@/\s]*)@", masked),  # user:password@ of a URL
            *re.findall(r"password\s*=\s*\"?([^\]\s\";,]*)", masked, re.IGNORECASE),
            *re.findall(r"--password[\s=]+\"?([^\s\"]*)", masked),
        ]
        for masked_given in written:
            given = unmask(masked_given, references)
            if not (REQUIRED_VARIABLE.fullmatch(given) or re.fullmatch(r"\$\$\w+", given)):
                problems.append(f"{path}: password {given!r} is not a variable")
    return problems


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
    """The Dockerfile is python:3.11-slim, installs the package and runs the worker."""
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert text.startswith("# ")
    assert "FROM python:3.11-slim" in text
    assert "pip install" in text
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


def broker_and_worker(compose: dict[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
    """The broker's server.properties and the worker's settings, as the containers get them."""
    filled = filled_env()
    services = compose["services"]
    broker_env = {k: interpolate(v, filled) for k, v in service_env(services["kafka"]).items()}
    worker_env = {k: interpolate(v, filled) for k, v in service_env(services["worker"]).items()}
    return kafka_properties(broker_env), worker_env


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
    creators = [
        name
        for name, service in services.items()
        if "--add-config" in " ".join(command_of(service) or [])
    ]
    assert len(creators) == 1, creators
    service = services[creators[0]]
    shell_env = {k: interpolate(v, filled) for k, v in service_env(service).items()}
    command = interpolate(" ".join(command_of(service) or []), filled)
    for name, value in shell_env.items():  # what the container's shell expands
        command = command.replace(f'"${name}"', value).replace(f"${name}", value)
    assert f"--entity-name {worker['JOURNEY_KAFKA_SASL_USERNAME']}" in command
    mechanism = worker["JOURNEY_KAFKA_SASL_MECHANISM"]
    assert f"{mechanism}=[password={worker['JOURNEY_KAFKA_SASL_PASSWORD']}]" in command
    rule = services["worker"]["depends_on"][creators[0]]
    assert rule["condition"] == "service_completed_successfully"
