"""One connection configuration for every Kafka client: each library's spelling, and its use."""

from __future__ import annotations

import ast
import inspect
import ssl
import subprocess
import warnings
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest

from streams.errors import ConfigError
from streams.kafka_connection import KafkaConnection, client_config
from streams.settings import Settings

ROOT = Path(__file__).resolve().parents[2]

with warnings.catch_warnings():
    # kafka-python 3.0 uses a deprecated importlib.resources call at import time.
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer


def test_broker_list_is_split_and_trimmed() -> None:
    """Blanks around names and empty entries are dropped; the order is kept."""
    assert KafkaConnection.parse(" b:9093, a:9092 ,,").servers == ("b:9093", "a:9092")


@pytest.mark.parametrize("brokers", ["", " ", ",", " , "])
def test_broker_list_without_a_server_is_refused(brokers: str) -> None:
    """A list naming no server fails with a message naming the setting."""
    with pytest.raises(ConfigError, match="JOURNEY_BROKERS"):
        client_config(brokers, "aiokafka")


def test_settings_and_a_plain_broker_list_give_the_same_configuration() -> None:
    """The worker (Settings) and the generator or bench (a string) connect alike."""
    settings = Settings.from_env({"JOURNEY_BROKERS": "a:9092,b:9093"})
    for library in ("aiokafka", "kafka-python", "faust"):
        assert client_config(settings, library) == client_config("a:9092,b:9093", library)


def test_each_call_returns_a_fresh_dict() -> None:
    """A caller adding its own options cannot change what the next caller gets."""
    first = client_config("a:9092", "aiokafka")
    first["client_id"] = "mine"
    first["bootstrap_servers"].append("c:9094")
    assert client_config("a:9092", "aiokafka") == {"bootstrap_servers": ["a:9092"]}


def test_aiokafka_gets_bootstrap_servers_its_clients_accept() -> None:
    """aiokafka: the server list as ``bootstrap_servers``, a parameter of each client."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient

    config = client_config("a:9092,b:9093", "aiokafka")
    assert config == {"bootstrap_servers": ["a:9092", "b:9093"]}
    for client in (AIOKafkaConsumer, AIOKafkaProducer, AIOKafkaAdminClient):
        assert set(config) <= set(inspect.signature(client).parameters), client


def test_kafka_python_gets_bootstrap_servers_its_clients_accept() -> None:
    """kafka-python: the server list as ``bootstrap_servers``, a known config of each client."""
    config = client_config("a:9092,b:9093", "kafka-python")
    assert config == {"bootstrap_servers": ["a:9092", "b:9093"]}
    for client in (KafkaProducer, KafkaConsumer, KafkaAdminClient):
        # Their constructors refuse any key not in DEFAULT_CONFIG ("Unrecognized configs").
        assert set(config) <= set(client.DEFAULT_CONFIG), client


def test_faust_gets_one_broker_url_per_server() -> None:
    """Faust: ``broker`` is a kafka:// URL per server, which faust.App reads as its brokers."""
    import faust

    config = client_config("a:9092, b:9093", "faust")
    assert config == {"broker": ["kafka://a:9092", "kafka://b:9093"]}
    app = faust.App("journey-test-connection", **config)
    assert [str(url) for url in app.conf.broker] == ["kafka://a:9092", "kafka://b:9093"]
    assert app.conf.broker_credentials is None


# --- Every client under streams/ is built from client_config -------------------------------

#: Client classes of aiokafka, kafka-python and Faust (``App``) that open connections.
CLIENT_CLASSES = {
    "AIOKafkaConsumer",
    "AIOKafkaProducer",
    "AIOKafkaAdminClient",
    "AIOKafkaClient",
    "KafkaConsumer",
    "KafkaProducer",
    "KafkaAdminClient",
    "KafkaClient",
    "App",
}
CLIENT_PACKAGES = {"aiokafka", "kafka", "faust"}
#: Keywords that set how a client connects: they come from client_config, never beside it.
CONNECTION_KEYWORDS = {
    "bootstrap_servers",
    "broker",
    "broker_credentials",
    "security_protocol",
    "sasl_mechanism",
    "sasl_plain_username",
    "sasl_plain_password",
    "ssl_context",
    "ssl_cafile",
    "ssl_certfile",
    "ssl_keyfile",
    "ssl_check_hostname",
}


@dataclass(frozen=True)
class ClientUse:
    """A construction (or subclass) of a Kafka client class found in a module's source."""

    where: str
    client: str
    problem: str | None


def _imported_names(tree: ast.Module) -> dict[str, str]:
    """Local name -> dotted origin, for every import of the client packages (any scope)."""
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in CLIENT_PACKAGES:
                    local = alias.asname or alias.name.split(".")[0]
                    names[local] = alias.name if alias.asname else local
        elif (
            isinstance(node, ast.ImportFrom)
            and node.module
            and node.module.split(".")[0] in CLIENT_PACKAGES
        ):
            for alias in node.names:
                names[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return names


def _client_class(node: ast.expr, names: dict[str, str]) -> str | None:
    """The client class ``node`` names (``faust.App``, an imported alias...), else None."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.insert(0, node.attr)
        node = node.value
    if not isinstance(node, ast.Name) or node.id not in names:
        return None
    dotted = ".".join([names[node.id], *parts])
    package, _, rest = dotted.partition(".")
    last = dotted.rsplit(".", 1)[-1]
    if package in CLIENT_PACKAGES and rest and last in CLIENT_CLASSES:
        return dotted
    return None


def _goes_through_client_config(call: ast.Call) -> str | None:
    """None if ``call`` unpacks ``client_config(...)`` and sets no connection keyword."""
    unpacked = [
        k.value
        for k in call.keywords
        if k.arg is None
        and isinstance(k.value, ast.Call)
        and isinstance(k.value.func, ast.Name)
        and k.value.func.id == "client_config"
    ]
    if not unpacked:
        return "does not unpack **client_config(...)"
    explicit = sorted(k.arg for k in call.keywords if k.arg in CONNECTION_KEYWORDS)
    if explicit:
        return f"sets {', '.join(explicit)} itself"
    return None


def client_uses(source: str, filename: str) -> list[ClientUse]:
    """Every construction or subclass of a Kafka client class in ``source``."""
    tree = ast.parse(source, filename)
    names = _imported_names(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            client = _client_class(node.func, names)
            if client:
                problem = _goes_through_client_config(node)
                found.append(ClientUse(f"{filename}:{node.lineno}", client, problem))
        elif isinstance(node, ast.ClassDef):
            for base in node.bases:
                client = _client_class(base, names)
                if client:
                    problem = "subclasses it (construct it with **client_config(...) instead)"
                    found.append(ClientUse(f"{filename}:{node.lineno}", client, problem))
    return found


def _streams_client_uses() -> list[ClientUse]:
    found = []
    for path in sorted((ROOT / "streams").rglob("*.py")):
        name = str(path.relative_to(ROOT))
        found += client_uses(path.read_text(encoding="utf-8"), name)
    return found


def test_every_kafka_client_under_streams_is_configured_by_client_config() -> None:
    """No module under streams/ builds a Kafka client or Faust app around client_config."""
    found = _streams_client_uses()
    bad = [f"{u.where}: {u.client} {u.problem}" for u in found if u.problem]
    assert not bad, "Kafka clients configured outside streams.kafka_connection:\n" + "\n".join(bad)


def test_the_scan_finds_a_client_of_each_library() -> None:
    """The check above is not vacuous: it sees the worker's clients of all three libraries."""
    found = {(u.where.split(":")[0], u.client.split(".")[0]) for u in _streams_client_uses()}
    assert ("streams/worker/intake.py", "aiokafka") in found
    assert ("streams/worker/topics.py", "kafka") in found
    assert ("streams/worker/app.py", "faust") in found


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        (
            "from aiokafka import AIOKafkaConsumer\n"
            "AIOKafkaConsumer('t', bootstrap_servers=['a:9092'])\n",
            "does not unpack",
        ),
        (
            "from kafka import KafkaProducer as P\nP(bootstrap_servers=brokers.split(','))\n",
            "does not unpack",
        ),
        ("import kafka.admin\nkafka.admin.KafkaAdminClient()\n", "does not unpack"),
        ("import faust\napp = faust.App('id', broker='kafka://a:9092')\n", "does not unpack"),
        (
            "from aiokafka import AIOKafkaProducer\n"
            "AIOKafkaProducer(**client_config(s, 'aiokafka'), security_protocol='SSL')\n",
            "sets security_protocol itself",
        ),
        (
            "from aiokafka import AIOKafkaConsumer\nclass Mine(AIOKafkaConsumer):\n    pass\n",
            "subclasses it",
        ),
        (
            "def main():\n    import faust\n"
            "    faust.App('id', **other_config(), store='memory://')\n",
            "does not unpack",
        ),
    ],
)
def test_the_scan_flags_a_client_configured_on_its_own(source: str, problem: str) -> None:
    """Direct, aliased, dotted, lazily imported and subclassed clients are all caught."""
    (use,) = client_uses(source, "example.py")
    assert use.problem is not None
    assert problem in use.problem


def test_the_scan_accepts_clients_built_from_client_config() -> None:
    """A client unpacking client_config's result and adding role options passes."""
    source = (
        "import faust\nfrom aiokafka import AIOKafkaConsumer, TopicPartition\n"
        "AIOKafkaConsumer(*topics, **client_config(s, 'aiokafka'), group_id='g')\n"
        "faust.App(s.app_id, **client_config(s, 'faust'), store='memory://')\n"
        "TopicPartition('t', 0)\nfaust.Worker(app)\n"
    )
    uses = client_uses(source, "example.py")
    assert [u.client for u in uses] == ["aiokafka.AIOKafkaConsumer", "faust.App"]
    assert all(u.problem is None for u in uses)


# --- Security: each protocol in each library's spelling -------------------------------------

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")


@pytest.fixture(scope="module")
def pem(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A CA certificate and a client certificate with its key, made by openssl."""
    folder = tmp_path_factory.mktemp("pem")
    run = partial(subprocess.run, cwd=folder, check=True, capture_output=True)
    run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-keyout", "ca.key", "-out", "ca.pem", "-subj", "/CN=test CA"])  # fmt: skip
    run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-keyout", "client.key", "-out", "client.pem", "-subj", "/CN=client"])  # fmt: skip
    (folder / "password").write_text("s3cret-from-file\n")
    return {name: str(folder / name) for name in ("ca.pem", "client.pem", "client.key", "password")}


def secure_settings(protocol: str, pem: dict[str, str], **more: str) -> Settings:
    """Settings for ``protocol`` with SCRAM-SHA-512 (SASL) and the test CA (TLS)."""
    env = {"JOURNEY_BROKERS": "a:9094,b:9094", "JOURNEY_KAFKA_SECURITY_PROTOCOL": protocol}
    if protocol.startswith("SASL_"):
        env |= {
            "JOURNEY_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "JOURNEY_KAFKA_SASL_USERNAME": "journey",
            "JOURNEY_KAFKA_SASL_PASSWORD": "s3cret",
        }
    if protocol in ("SSL", "SASL_SSL"):
        env["JOURNEY_KAFKA_SSL_CAFILE"] = pem["ca.pem"]
    return Settings.from_env(env | more)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_aiokafka_gets_protocol_sasl_and_a_verifying_context(
    protocol: str, pem: dict[str, str]
) -> None:
    """aiokafka: protocol, SASL user and password, and an ssl_context checking hostnames."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient

    config = client_config(secure_settings(protocol, pem), "aiokafka")
    assert config["bootstrap_servers"] == ["a:9094", "b:9094"]
    assert config.get("security_protocol", "PLAINTEXT") == protocol
    if protocol.startswith("SASL_"):
        assert config["sasl_mechanism"] == "SCRAM-SHA-512"
        assert config["sasl_plain_username"] == "journey"
        assert config["sasl_plain_password"] == "s3cret"
    else:
        assert not {k for k in config if k.startswith("sasl_")}
    if protocol.endswith("SSL"):
        context = config["ssl_context"]
        assert isinstance(context, ssl.SSLContext)
        assert context.check_hostname is True
        assert context.verify_mode == ssl.CERT_REQUIRED
        assert context.get_ca_certs()[0]["subject"] == ((("commonName", "test CA"),),)
    else:
        assert "ssl_context" not in config
    for client in (AIOKafkaConsumer, AIOKafkaProducer, AIOKafkaAdminClient):
        assert set(config) <= set(inspect.signature(client).parameters), client


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_kafka_python_gets_protocol_sasl_and_tls_files(protocol: str, pem: dict[str, str]) -> None:
    """kafka-python: protocol, SASL options, the CA file and hostname checking on."""
    config = client_config(secure_settings(protocol, pem), "kafka-python")
    expected: dict[str, object] = {"bootstrap_servers": ["a:9094", "b:9094"]}
    if protocol != "PLAINTEXT":
        expected["security_protocol"] = protocol
    if protocol.startswith("SASL_"):
        expected |= {
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_plain_username": "journey",
            "sasl_plain_password": "s3cret",
        }
    if protocol.endswith("SSL"):
        expected |= {
            "ssl_cafile": pem["ca.pem"],
            "ssl_certfile": None,
            "ssl_keyfile": None,
            "ssl_check_hostname": True,
        }
    assert config == expected
    for client in (KafkaProducer, KafkaConsumer, KafkaAdminClient):
        assert set(config) <= set(client.DEFAULT_CONFIG), client


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_faust_gets_credentials_its_aiokafka_driver_turns_into_the_protocol(
    protocol: str, pem: dict[str, str]
) -> None:
    """Faust: broker_credentials that its driver hands to aiokafka as the same options."""
    import faust
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    config = client_config(secure_settings(protocol, pem), "faust")
    assert config["broker"] == ["kafka://a:9094", "kafka://b:9094"]
    app = faust.App("journey-test-connection", **config)
    auth = credentials_to_aiokafka_auth(app.conf.broker_credentials)
    assert auth["security_protocol"] == protocol
    if protocol.startswith("SASL_"):
        assert auth["sasl_mechanism"] == "SCRAM-SHA-512"
        assert (auth["sasl_plain_username"], auth["sasl_plain_password"]) == ("journey", "s3cret")
    if protocol.endswith("SSL"):
        assert auth["ssl_context"].check_hostname is True
        assert auth["ssl_context"].verify_mode == ssl.CERT_REQUIRED
    else:
        assert auth.get("ssl_context") is None


def test_hostname_check_can_be_switched_off_but_not_verification(pem: dict[str, str]) -> None:
    """JOURNEY_KAFKA_SSL_CHECK_HOSTNAME=false lifts the name check; the chain is still verified."""
    settings = secure_settings("SSL", pem, JOURNEY_KAFKA_SSL_CHECK_HOSTNAME="false")
    context = client_config(settings, "aiokafka")["ssl_context"]
    assert context.check_hostname is False
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert client_config(settings, "kafka-python")["ssl_check_hostname"] is False


def test_client_certificate_and_password_file(pem: dict[str, str]) -> None:
    """Mutual TLS files reach both spellings; the password file's first line is the password."""
    settings = secure_settings(
        "SASL_SSL",
        pem,
        JOURNEY_KAFKA_SASL_PASSWORD="",
        JOURNEY_KAFKA_SASL_PASSWORD_FILE=pem["password"],
        JOURNEY_KAFKA_SSL_CERTFILE=pem["client.pem"],
        JOURNEY_KAFKA_SSL_KEYFILE=pem["client.key"],
    )
    python = client_config(settings, "kafka-python")
    assert (python["ssl_certfile"], python["ssl_keyfile"]) == (pem["client.pem"], pem["client.key"])
    assert python["sasl_plain_password"] == "s3cret-from-file"
    assert client_config(settings, "aiokafka")["sasl_plain_password"] == "s3cret-from-file"


def test_each_call_gets_its_own_tls_context(pem: dict[str, str]) -> None:
    """A client changing its context cannot change the next client's."""
    settings = secure_settings("SSL", pem)
    first = client_config(settings, "aiokafka")["ssl_context"]
    assert client_config(settings, "aiokafka")["ssl_context"] is not first


def test_the_password_is_never_shown(pem: dict[str, str]) -> None:
    """Neither the settings, the connection nor the settings table show the password."""
    settings = secure_settings("SASL_SSL", pem, JOURNEY_KAFKA_SASL_PASSWORD="hunter2-secret")
    assert "hunter2-secret" not in repr(settings)
    assert "hunter2-secret" not in repr(KafkaConnection.from_settings(settings))
    assert "hunter2-secret" not in repr(Settings.describe())
    assert KafkaConnection.from_settings(settings).sasl_password == "hunter2-secret"


def test_a_file_that_is_not_pem_names_its_setting(tmp_path: Path, pem: dict[str, str]) -> None:
    """A CA file that is not PEM fails when the context is built, naming the setting."""
    bogus = tmp_path / "ca.pem"
    bogus.write_text("not a certificate\n")
    settings = secure_settings("SSL", pem, JOURNEY_KAFKA_SSL_CAFILE=str(bogus))
    with pytest.raises(ConfigError, match="JOURNEY_KAFKA_SSL_CAFILE"):
        client_config(settings, "aiokafka")
