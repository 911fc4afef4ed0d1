"""Settings from JOURNEY_* variables: defaults, parsing and start-up errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.errors import ConfigError
from streams.settings import Settings


def test_defaults_without_environment() -> None:
    """With no JOURNEY_* variables every setting takes its documented default."""
    settings = Settings.from_env({})
    assert settings.brokers == "127.0.0.1:9092"
    assert settings.input_topic == "clickstream"
    assert settings.metrics_port == 9464
    assert settings.session_timeout_s == 1800.0
    assert settings.allowed_lateness_s == 600.0
    assert settings.flush_interval_s <= 5


def test_values_are_parsed_by_type() -> None:
    """Numbers, ports and booleans are parsed from their text."""
    settings = Settings.from_env(
        {
            "JOURNEY_METRICS_PORT": "9500",
            "JOURNEY_SESSION_TIMEOUT_S": "60",
            "JOURNEY_SPLIT_ON_CAMPAIGN": "yes",
            "JOURNEY_CLICKHOUSE_URL": " clickhouse://127.0.0.1:9000/journey ",
        }
    )
    assert settings.metrics_port == 9500
    assert settings.session_timeout_s == 60.0
    assert settings.split_on_campaign is True
    assert settings.clickhouse_url == "clickhouse://127.0.0.1:9000/journey"


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("JOURNEY_METRICS_PORT", "70000", "is not a TCP port"),
        ("JOURNEY_METRICS_PORT", "http", "is not a whole number"),
        ("JOURNEY_SESSION_TIMEOUT_S", "-5", "must be greater than zero"),
        ("JOURNEY_SPLIT_ON_CAMPAIGN", "maybe", "is not a boolean"),
        ("JOURNEY_FLUSH_INTERVAL_S", "9", "at most 5 seconds"),
        ("JOURNEY_BROKRES", "x:1", "unknown setting(s) JOURNEY_BROKRES"),
    ],
)
def test_wrong_values_fail_naming_the_variable(variable: str, value: str, message: str) -> None:
    """A wrong or misspelt setting fails at start-up with the variable named."""
    with pytest.raises(ConfigError, match="JOURNEY_") as info:
        Settings.from_env({variable: value})
    assert message in str(info.value)


def test_test_suite_variables_are_not_settings() -> None:
    """JOURNEY_TEST_* variables belong to the test suite and are ignored."""
    assert Settings.from_env({"JOURNEY_TEST_BROKERS": "x"}) == Settings()


def test_describe_lists_every_variable_once() -> None:
    """--help and the README table list each setting with its default."""
    rows = Settings.describe()
    names = [name for name, _, _ in rows]
    assert len(names) == len(set(names))
    assert ("JOURNEY_METRICS_PORT", "9464") in [(n, d) for n, d, _ in rows]


SASL = {
    "JOURNEY_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
    "JOURNEY_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
    "JOURNEY_KAFKA_SASL_USERNAME": "journey",
    "JOURNEY_KAFKA_SASL_PASSWORD": "secret",
}


def test_kafka_security_defaults_to_plaintext_with_hostname_checks() -> None:
    """No security setting: PLAINTEXT; TLS, once asked for, checks the broker's host name."""
    settings = Settings.from_env({})
    assert settings.kafka_security_protocol == "PLAINTEXT"
    assert settings.kafka_ssl_check_hostname is True
    assert Settings.from_env(SASL | {"JOURNEY_KAFKA_SASL_MECHANISM": "scram-sha-256"}) == (
        Settings.from_env(SASL | {"JOURNEY_KAFKA_SASL_MECHANISM": "SCRAM-SHA-256"})
    )


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"JOURNEY_KAFKA_SECURITY_PROTOCOL": "TLS"}, "JOURNEY_KAFKA_SECURITY_PROTOCOL"),
        (SASL | {"JOURNEY_KAFKA_SASL_MECHANISM": "GSSAPI"}, "JOURNEY_KAFKA_SASL_MECHANISM"),
        (SASL | {"JOURNEY_KAFKA_SASL_MECHANISM": ""}, "JOURNEY_KAFKA_SASL_MECHANISM"),
        (SASL | {"JOURNEY_KAFKA_SASL_USERNAME": ""}, "JOURNEY_KAFKA_SASL_USERNAME"),
        (SASL | {"JOURNEY_KAFKA_SASL_PASSWORD": ""}, "JOURNEY_KAFKA_SASL_PASSWORD_FILE"),
        (SASL | {"JOURNEY_KAFKA_SASL_PASSWORD_FILE": "/etc/hostname"}, "exactly one of"),
        (SASL | {"JOURNEY_KAFKA_SECURITY_PROTOCOL": "SSL"}, "JOURNEY_KAFKA_SASL_MECHANISM"),
        ({"JOURNEY_KAFKA_SSL_CAFILE": "/etc/hostname"}, "JOURNEY_KAFKA_SSL_CAFILE"),
        (
            SASL
            | {
                "JOURNEY_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                "JOURNEY_KAFKA_SSL_CAFILE": "/etc/hostname",
            },
            "JOURNEY_KAFKA_SSL_CAFILE",
        ),
        (
            {"JOURNEY_KAFKA_SECURITY_PROTOCOL": "SSL", "JOURNEY_KAFKA_SSL_CAFILE": "/nowhere.pem"},
            "JOURNEY_KAFKA_SSL_CAFILE='/nowhere.pem' is not a readable file",
        ),
        (
            {
                "JOURNEY_KAFKA_SECURITY_PROTOCOL": "SSL",
                "JOURNEY_KAFKA_SSL_KEYFILE": "/etc/hostname",
            },
            "without JOURNEY_KAFKA_SSL_CERTFILE",
        ),
    ],
)
def test_kafka_security_combinations_that_cannot_work_fail_at_start(
    env: dict[str, str], named: str
) -> None:
    """A missing, unused, contradictory or unreadable security setting fails in one line."""
    with pytest.raises(ConfigError) as info:
        Settings.from_env(env)
    assert named in str(info.value)
    assert "\n" not in str(info.value)


def test_an_empty_password_file_names_the_setting(tmp_path: Path) -> None:
    """An empty password file is refused when the password is read, naming the setting."""
    empty = tmp_path / "password"
    empty.write_text("\n")
    settings = Settings.from_env(
        SASL | {"JOURNEY_KAFKA_SASL_PASSWORD": "", "JOURNEY_KAFKA_SASL_PASSWORD_FILE": str(empty)}
    )
    with pytest.raises(ConfigError, match=r"JOURNEY_KAFKA_SASL_PASSWORD_FILE=.* is empty"):
        settings.kafka_sasl_password_value()


def test_connection_environment_gives_a_child_the_same_connection(tmp_path: Path) -> None:
    """The variables a child gets rebuild the parent's Kafka connection and ClickHouse login."""
    from streams.clickhouse.address import server_address
    from streams.kafka_connection import KafkaConnection

    password = tmp_path / "password"
    password.write_text("s3cret\n")
    ca = tmp_path / "ca.pem"
    ca.write_text("not read here\n")
    parent = Settings.from_env(
        {
            "JOURNEY_BROKERS": "b-1:9096,b-2:9096",
            "JOURNEY_KAFKA_SECURITY_PROTOCOL": "sasl_ssl",
            "JOURNEY_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "JOURNEY_KAFKA_SASL_USERNAME": "journey",
            "JOURNEY_KAFKA_SASL_PASSWORD_FILE": str(password),
            "JOURNEY_KAFKA_SSL_CAFILE": str(ca),
            "JOURNEY_KAFKA_SSL_CHECK_HOSTNAME": "false",
            "JOURNEY_KAFKA_SESSION_TIMEOUT_S": "10",
            "JOURNEY_APP_ID": "mine",
            "JOURNEY_CLICKHOUSE_URL": "clickhouses://journey@ch:9440/mine",
            "JOURNEY_CLICKHOUSE_PASSWORD_FILE": str(password),
            "JOURNEY_CLICKHOUSE_SSL_CAFILE": str(ca),
            "JOURNEY_CLICKHOUSE_SSL_CHECK_HOSTNAME": "false",
        }
    )
    env = parent.connection_environment()
    assert env == {
        "JOURNEY_BROKERS": "b-1:9096,b-2:9096",
        "JOURNEY_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "JOURNEY_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "JOURNEY_KAFKA_SASL_USERNAME": "journey",
        "JOURNEY_KAFKA_SASL_PASSWORD_FILE": str(password),  # the file, not its content
        "JOURNEY_KAFKA_SSL_CAFILE": str(ca),
        "JOURNEY_KAFKA_SSL_CHECK_HOSTNAME": "false",
        # The login and TLS of ClickHouse, not its URL: each child gets its own database.
        "JOURNEY_CLICKHOUSE_PASSWORD_FILE": str(password),
        "JOURNEY_CLICKHOUSE_SSL_CAFILE": str(ca),
        "JOURNEY_CLICKHOUSE_SSL_CHECK_HOSTNAME": "false",
    }
    child = Settings.from_env(env)
    assert KafkaConnection.from_settings(child) == KafkaConnection.from_settings(parent)
    url = "clickhouses://journey@ch:9440/theirs"
    assert server_address(url, child) == server_address(url, parent)
    assert server_address(url, child).password == "s3cret"


def test_connection_environment_of_the_defaults_is_the_broker_list() -> None:
    """A PLAINTEXT parent gives its children the broker list alone."""
    assert Settings.from_env({}).connection_environment() == {"JOURNEY_BROKERS": "127.0.0.1:9092"}


PII_KEY = "0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"JOURNEY_PII": "hash"}, "JOURNEY_PII=hash needs its key as exactly one of"),
        ({"JOURNEY_PII": "drop"}, "JOURNEY_PII=drop needs its key as exactly one of"),
        ({"JOURNEY_PII": "scramble"}, "JOURNEY_PII='scramble' is not one of keep, hash, drop"),
        ({"JOURNEY_PII_KEY": PII_KEY}, "JOURNEY_PII_KEY is set but JOURNEY_PII=keep"),
        ({"JOURNEY_PII": "hash", "JOURNEY_PII_KEY": "short"}, "holds 5 bytes; a JOURNEY_PII"),
        (
            {"JOURNEY_PII": "hash", "JOURNEY_PII_KEY": PII_KEY, "JOURNEY_PII_KEY_FILE": "/x"},
            "exactly one of JOURNEY_PII_KEY and JOURNEY_PII_KEY_FILE",
        ),
        (
            {"JOURNEY_PII": "hash", "JOURNEY_PII_KEY_FILE": "/no/such/key"},
            "JOURNEY_PII_KEY_FILE='/no/such/key' cannot be read",
        ),
    ],
)
def test_pii_mode_without_a_usable_key_is_one_clear_line(env: dict[str, str], message: str) -> None:
    """A hash/drop mode needs exactly one usable key; a key without a mode is refused too."""
    with pytest.raises(ConfigError) as raised:
        Settings.from_env(env)
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


def test_pii_key_from_file_drops_one_trailing_newline(tmp_path: Path) -> None:
    """The key file's content is the key, but for its trailing newline."""
    path = tmp_path / "pii.key"
    path.write_bytes(PII_KEY.encode() + b"\n")
    settings = Settings.from_env({"JOURNEY_PII": "HASH", "JOURNEY_PII_KEY_FILE": str(path)})
    assert settings.pii == "hash"
    assert settings.pii_key_value() == PII_KEY.encode()
    from_env = Settings.from_env({"JOURNEY_PII": "hash", "JOURNEY_PII_KEY": PII_KEY})
    pii, same = settings.pseudonymiser(), from_env.pseudonymiser()
    assert pii is not None
    assert same is not None
    assert pii.pseudonym("visitor-1") == same.pseudonym("visitor-1")


def test_pii_key_is_kept_out_of_repr() -> None:
    """The key, a secret, never shows in a printed Settings."""
    settings = Settings.from_env({"JOURNEY_PII": "drop", "JOURNEY_PII_KEY": PII_KEY})
    assert PII_KEY not in repr(settings)


def test_pii_hash_takes_the_hop_even_with_input_keyed_by_visitor() -> None:
    """Under hash/drop the state is keyed by pseudonyms, so keyed input takes the hop."""
    keyed = {"JOURNEY_INPUT_KEYED_BY_VISITOR": "true"}
    assert Settings.from_env(keyed).direct_input()
    hashed = Settings.from_env({**keyed, "JOURNEY_PII": "hash", "JOURNEY_PII_KEY": PII_KEY})
    assert not hashed.direct_input()
    assert hashed.checkpoint_every_s() == 2.0


def test_pii_modes_agree_with_the_engine() -> None:
    """Settings and engine/pii.py list the same modes."""
    from streams.engine.pii import PII_MODES as ENGINE_MODES
    from streams.settings import PII_MODES

    assert PII_MODES == ENGINE_MODES


def test_retention_days_is_unset_or_a_positive_number_of_days() -> None:
    assert Settings.from_env({}).retention_days is None
    assert Settings.from_env({"JOURNEY_RETENTION_DAYS": "30"}).retention_days == 30
    for bad in ("0", "-3", "30d"):
        with pytest.raises(ConfigError, match="JOURNEY_RETENTION_DAYS"):
            Settings.from_env({"JOURNEY_RETENTION_DAYS": bad})
