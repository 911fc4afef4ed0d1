"""Reading docker-compose.yml the way Compose and the images do, for the tests that check it.

Compose's variable interpolation, the apache/kafka image's ``KAFKA_*`` to server.properties
naming, the forms of ``ports`` and ``environment``, and the search for passwords written
into the file. The unit tests (``test_compose.py``) check the file with these; the
integration test ``tests/integration/security/test_compose_kafka.py`` runs a broker from it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[3]
#: Compose variable references: ${NAME}, ${NAME:-default}, ${NAME:?error}, $NAME ($$ escapes).
VARIABLE = re.compile(
    r"(?<!\$)\$(?:\{(?P<braced>[A-Za-z_]\w*)(?P<rest>[^}]*)\}|(?P<bare>[A-Za-z_]\w*))"
)
#: A value that is nothing but a required variable: ``${NAME:?message}``.
REQUIRED_VARIABLE = re.compile(r"\$\{[A-Za-z_]\w*:?\?[^}]*\}")
#: Names of settings and variables whose values are secrets.
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|CREDENTIAL", re.IGNORECASE)


def load_compose() -> dict[str, Any]:
    """The parsed docker-compose.yml."""
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


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


def broker_and_worker(compose: dict[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
    """The broker's server.properties and the worker's settings, as the containers get them."""
    filled = filled_env()
    services = compose["services"]
    broker_env = {k: interpolate(v, filled) for k, v in service_env(services["kafka"]).items()}
    worker_env = {k: interpolate(v, filled) for k, v in service_env(services["worker"]).items()}
    return kafka_properties(broker_env), worker_env


def user_creation(compose: Mapping[str, Any]) -> tuple[str, str]:
    """(service, shell command) of the one service that writes Kafka users, as it runs.

    The command with Compose's variables filled in from :func:`filled_env` and then the
    container's own ``$NAME`` expanded from the service's environment.
    """
    services = compose["services"]
    creators = [
        name
        for name, service in services.items()
        if "--add-config" in " ".join(command_of(service) or [])
    ]
    assert len(creators) == 1, creators
    service = services[creators[0]]
    filled = filled_env()
    shell_env = {k: interpolate(v, filled) for k, v in service_env(service).items()}
    command = interpolate((command_of(service) or [])[-1], filled)
    for name, value in shell_env.items():
        command = command.replace(f'"${name}"', value).replace(f"${name}", value)
    return creators[0], command
