"""Settings: built once at start-up from ``JOURNEY_*`` environment variables, then passed down.

Nothing else in journey-streams reads ``os.environ``. Every setting has a documented
default (README "Configuration" and ``journey worker --help`` print this table) and a
wrong value fails at start-up with a message naming the variable.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from streams.errors import ConfigError

if TYPE_CHECKING:
    from streams.engine.pii import Pseudonymiser
    from streams.engine.sessionizer import SessionConfig


def _positive_float(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None
    if value <= 0:
        raise ConfigError(f"{name}={raw!r} must be greater than zero")
    return value


def _positive_int(name: str, raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a whole number") from None
    if value <= 0:
        raise ConfigError(f"{name}={raw!r} must be greater than zero")
    return value


def _port(name: str, raw: str) -> int:
    value = _positive_int(name, raw)
    if value > 65535:
        raise ConfigError(f"{name}={raw!r} is not a TCP port (1-65535)")
    return value


#: A DNS host name: dot-separated labels of letters, digits and inner hyphens.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST_NAME = re.compile(rf"(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*\.?", re.ASCII)


def _bind_host(name: str, raw: str) -> str:
    """An address to listen on: an IPv4 or IPv6 address, or a host name."""
    value = raw.strip()
    try:
        ipaddress.ip_address(value)
    except ValueError:
        if not _HOST_NAME.fullmatch(value):
            raise ConfigError(
                f"{name}={raw!r} is not an IP address or host name "
                "(e.g. 0.0.0.0 for every interface, 127.0.0.1 for this machine only)"
            ) from None
    return value


def _flag(name: str, raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ConfigError(f"{name}={raw!r} is not a boolean (use true or false)")


def _text(name: str, raw: str) -> str:
    return raw.strip()


def _choice(*allowed: str) -> Callable[[str, str], str]:
    """A parser accepting one of ``allowed`` (any case), returned as spelt there."""

    def parse(name: str, raw: str) -> str:
        for value in allowed:
            if raw.strip().upper() == value:
                return value
        raise ConfigError(f"{name}={raw!r} is not one of {', '.join(allowed)}")

    return parse


def _pii_mode(name: str, raw: str) -> str:
    """``keep``, ``hash`` or ``drop`` (any case)."""
    value = raw.strip().lower()
    if value not in PII_MODES:
        raise ConfigError(f"{name}={raw!r} is not one of {', '.join(PII_MODES)}")
    return value


#: The values of JOURNEY_PII (as ``engine/pii.py`` names them; repeated to keep this
#: module free of engine imports at start-up).
PII_MODES = ("keep", "hash", "drop")
#: Shortest JOURNEY_PII_KEY accepted: a short key would let ids be guessed and hashed.
PII_KEY_MIN_BYTES = 16


def _lower_choice(*allowed: str) -> Callable[[str, str], str]:
    """A parser accepting one of ``allowed`` (any case), returned in lower case."""

    def parse(name: str, raw: str) -> str:
        value = raw.strip().lower()
        if value not in allowed:
            raise ConfigError(f"{name}={raw!r} is not one of {', '.join(allowed)}")
        return value

    return parse


#: How the output topics are delivered (see Settings.delivery).
DELIVERY_MODES = ("exactly_once", "at_least_once")

#: Kafka's security protocols and the SASL mechanisms the clients speak.
KAFKA_SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
KAFKA_SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


#: Default checkpoint intervals (seconds) through the by-visitor topic and with direct input.
HOP_CHECKPOINT_S = 2.0
DIRECT_CHECKPOINT_S = 30.0


def _setting(
    default: Any, parse: Callable[[str, str], Any], doc: str, *, secret: bool = False
) -> Any:
    # A secret stays out of repr(), so a logged or printed Settings never shows it.
    return field(default=default, repr=not secret, metadata={"parse": parse, "doc": doc})


def _is_connection_setting(name: str) -> bool:
    """A Kafka or ClickHouse setting that says how to connect (not where to, nor tuning)."""
    if name.startswith("kafka_"):
        return name != "kafka_session_timeout_s"
    return name in (
        "clickhouse_password_file",
        "clickhouse_ssl_cafile",
        "clickhouse_ssl_check_hostname",
    )


@dataclass(frozen=True, slots=True)
class Settings:
    """Every tunable of journey-streams; the field ``x_y`` is read from ``JOURNEY_X_Y``."""

    brokers: str = _setting("127.0.0.1:9092", _text, "Kafka bootstrap servers, comma separated")
    input_topic: str = _setting("clickstream", _text, "topic the worker reads events from")
    sessions_topic: str = _setting("journey-sessions", _text, "session rows as they change/close")
    transitions_topic: str = _setting(
        "journey-transitions", _text, "stage transitions and abandoned carts"
    )
    dlq_topic: str = _setting("journey-dlq", _text, "rejected events with reason and payload")
    late_topic: str = _setting("journey-late", _text, "events beyond the allowed lateness")
    partitions: int = _setting(
        4, _positive_int, "partitions of the worker's internal topics and state table"
    )
    input_keyed_by_visitor: bool = _setting(
        False,
        _flag,
        "the input is keyed by visitor key (anonymous_id, else user_id) with Kafka's default "
        "partitioner and has JOURNEY_PARTITIONS partitions: events skip the by-visitor topic",
    )
    intake_batch: int = _setting(5000, _positive_int, "messages the intake agent takes at once")
    kafka_session_timeout_s: float = _setting(
        30.0,
        _positive_float,
        "consumer group session timeout: how soon a dead worker's partitions move",
    )
    kafka_security_protocol: str = _setting(
        "PLAINTEXT",
        _choice(*KAFKA_SECURITY_PROTOCOLS),
        "how every Kafka client connects: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL",
    )
    kafka_sasl_mechanism: str = _setting(
        "",
        _choice(*KAFKA_SASL_MECHANISMS),
        "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512; required with SASL_PLAINTEXT and SASL_SSL",
    )
    kafka_sasl_username: str = _setting("", _text, "SASL user name")
    kafka_sasl_password: str = _setting(
        "",
        _text,
        "SASL password (JOURNEY_KAFKA_SASL_PASSWORD_FILE keeps it out of the environment)",
        secret=True,
    )
    kafka_sasl_password_file: str = _setting(
        "", _text, "file holding the SASL password (first line; surrounding blanks dropped)"
    )
    kafka_ssl_cafile: str = _setting(
        "", _text, "PEM file of the CA(s) that signed the brokers' certificates; empty = system CAs"
    )
    kafka_ssl_certfile: str = _setting(
        "", _text, "PEM client certificate, for brokers that require one (mutual TLS)"
    )
    kafka_ssl_keyfile: str = _setting(
        "", _text, "PEM private key of JOURNEY_KAFKA_SSL_CERTFILE, when not in that file"
    )
    kafka_ssl_check_hostname: bool = _setting(
        True, _flag, "TLS: the broker's certificate must name the host connected to"
    )
    app_id: str = _setting("journey-streams", _text, "Kafka consumer group / Faust app id")
    clickhouse_url: str = _setting(
        "",
        _text,
        "clickhouse://[user[:password]@]host:9000/db for a server, clickhouses://host:9440/db "
        "over TLS; empty = embedded chdb in data_dir",
        secret=True,
    )
    clickhouse_password_file: str = _setting(
        "",
        _text,
        "file holding the ClickHouse password (its content, trailing newline dropped), "
        "instead of a password in JOURNEY_CLICKHOUSE_URL",
    )
    clickhouse_ssl_cafile: str = _setting(
        "",
        _text,
        "PEM file of the CA(s) that signed the ClickHouse server's certificate (TLS URLs); "
        "empty = system CAs",
    )
    clickhouse_ssl_check_hostname: bool = _setting(
        True, _flag, "TLS: the ClickHouse server's certificate must name the host connected to"
    )
    data_dir: str = _setting(".journey", _text, "folder for embedded ClickHouse and worker state")
    metrics_host: str = _setting(
        "0.0.0.0",
        _bind_host,
        "address the worker's /metrics endpoint listens on: 0.0.0.0 every IPv4 interface, "
        ":: every interface, 127.0.0.1 this machine only",
    )
    metrics_port: int = _setting(9464, _port, "HTTP port of the worker's /metrics endpoint")
    session_timeout_s: float = _setting(
        1800.0, _positive_float, "inactivity gap that ends a session"
    )
    max_session_s: float = _setting(86400.0, _positive_float, "maximum session length")
    allowed_lateness_s: float = _setting(600.0, _positive_float, "how late an event may arrive")
    idle_grace_s: float = _setting(
        60.0,
        _positive_float,
        "an input partition read to its end and without records this long is idle: it stops "
        "holding back event time, and once all are idle the watermark follows the clock",
    )
    split_on_campaign: bool = _setting(
        False, _flag, "start a new session when the campaign changes"
    )
    flush_interval_s: float = _setting(2.0, _positive_float, "ClickHouse flush interval (max 5 s)")
    flush_rows: int = _setting(50000, _positive_int, "rows per ClickHouse insert")
    checkpoint_interval_s: float | None = _setting(
        None,
        _positive_float,
        "state checkpoint and input commit interval: a crash re-applies at most this much; "
        "unset = 2 s through the by-visitor topic, 30 s with JOURNEY_INPUT_KEYED_BY_VISITOR",
    )
    delivery: str = _setting(
        "exactly_once",
        _lower_choice(*DELIVERY_MODES),
        "output topics: exactly_once (Kafka transactions, one per checkpoint; consumers read "
        "with isolation.level=read_committed) or at_least_once (records may repeat after a "
        "crash)",
    )
    stage_rules: str = _setting("", _text, "path of a store's stage rules YAML; empty = defaults")
    pii: str = _setting(
        "keep",
        _pii_mode,
        "personal data leaving the process: keep; hash (user_id and anonymous_id keyed-hashed, "
        "query strings cut from URLs and referrers); drop (hash, and no user agents, page "
        "titles or dead-letter payloads); docs/architecture.md, 'Personal data (JOURNEY_PII)'",
    )
    pii_key: str = _setting(
        "",
        _text,
        f"HMAC-SHA256 key of JOURNEY_PII=hash/drop, at least {PII_KEY_MIN_BYTES} bytes "
        "(JOURNEY_PII_KEY_FILE keeps it out of the environment)",
        secret=True,
    )
    pii_key_file: str = _setting(
        "", _text, "file holding the JOURNEY_PII key (its content, trailing newline dropped)"
    )
    retention_days: int | None = _setting(
        None,
        _positive_int,
        "days the ClickHouse tables with personal data (sessions, orders, raw_events) keep "
        "a row: a TTL, or on the 18.16 server deletes by the writer; unset = for ever "
        "(docs/security.md)",
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``JOURNEY_*`` variables.

        An unknown ``JOURNEY_`` name is an error (a typo must not silently fall back to a
        default); ``JOURNEY_TEST_*`` belongs to the test suite and is ignored here.
        """
        env = os.environ if environ is None else environ
        known = {f"JOURNEY_{f.name.upper()}": f for f in fields(cls)}
        unknown = sorted(
            k
            for k in env
            if k.startswith("JOURNEY_") and not k.startswith("JOURNEY_TEST_") and k not in known
        )
        if unknown:
            raise ConfigError(
                f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        values: dict[str, Any] = {}
        for var, f in known.items():
            if var in env:
                values[f.name] = f.metadata["parse"](var, env[var])
        settings = cls(**values)
        if settings.flush_interval_s > 5:
            raise ConfigError("JOURNEY_FLUSH_INTERVAL_S must be at most 5 seconds")
        settings.check_kafka_security()
        settings.check_pii()
        for name, path in (
            ("JOURNEY_CLICKHOUSE_PASSWORD_FILE", settings.clickhouse_password_file),
            ("JOURNEY_CLICKHOUSE_SSL_CAFILE", settings.clickhouse_ssl_cafile),
        ):
            if path and not (os.path.isfile(path) and os.access(path, os.R_OK)):
                raise ConfigError(f"{name}={path!r} is not a readable file")
        return settings

    def check_kafka_security(self) -> None:
        """Refuse a combination of the ``JOURNEY_KAFKA_*`` security settings that cannot work.

        SASL needs a mechanism, a user and exactly one password source; TLS files need a
        TLS protocol and must be readable; a setting the protocol would ignore is an error,
        since ignoring it would connect differently from what the operator wrote.
        """
        protocol = self.kafka_security_protocol
        sasl = protocol.startswith("SASL_")
        tls = protocol in {"SSL", "SASL_SSL"}
        given = {
            "JOURNEY_KAFKA_SASL_MECHANISM": self.kafka_sasl_mechanism,
            "JOURNEY_KAFKA_SASL_USERNAME": self.kafka_sasl_username,
            "JOURNEY_KAFKA_SASL_PASSWORD": self.kafka_sasl_password,
            "JOURNEY_KAFKA_SASL_PASSWORD_FILE": self.kafka_sasl_password_file,
            "JOURNEY_KAFKA_SSL_CAFILE": self.kafka_ssl_cafile,
            "JOURNEY_KAFKA_SSL_CERTFILE": self.kafka_ssl_certfile,
            "JOURNEY_KAFKA_SSL_KEYFILE": self.kafka_ssl_keyfile,
        }
        for name, value in given.items():
            if value and not (sasl if "_SASL_" in name else tls):
                wanted = "SASL_PLAINTEXT or SASL_SSL" if "_SASL_" in name else "SSL or SASL_SSL"
                raise ConfigError(
                    f"{name} is set but JOURNEY_KAFKA_SECURITY_PROTOCOL={protocol} does not use "
                    f"it; set the protocol to {wanted}, or unset {name}"
                )
        if sasl:
            for name in ("JOURNEY_KAFKA_SASL_MECHANISM", "JOURNEY_KAFKA_SASL_USERNAME"):
                if not given[name]:
                    raise ConfigError(
                        f"{name} is required with JOURNEY_KAFKA_SECURITY_PROTOCOL={protocol}"
                    )
            if bool(self.kafka_sasl_password) == bool(self.kafka_sasl_password_file):
                raise ConfigError(
                    "give the SASL password as exactly one of JOURNEY_KAFKA_SASL_PASSWORD and "
                    f"JOURNEY_KAFKA_SASL_PASSWORD_FILE (JOURNEY_KAFKA_SECURITY_PROTOCOL={protocol})"
                )
        if self.kafka_ssl_keyfile and not self.kafka_ssl_certfile:
            raise ConfigError(
                "JOURNEY_KAFKA_SSL_KEYFILE is set without JOURNEY_KAFKA_SSL_CERTFILE; give the "
                "client certificate too"
            )
        for name in (
            "JOURNEY_KAFKA_SASL_PASSWORD_FILE",
            "JOURNEY_KAFKA_SSL_CAFILE",
            "JOURNEY_KAFKA_SSL_CERTFILE",
            "JOURNEY_KAFKA_SSL_KEYFILE",
        ):
            path = given[name]
            if path and not (os.path.isfile(path) and os.access(path, os.R_OK)):
                raise ConfigError(f"{name}={path!r} is not a readable file")

    def check_pii(self) -> None:
        """Refuse a ``JOURNEY_PII`` mode without exactly one key source, or a key without a mode.

        A key set while the mode is ``keep`` is an error too: the operator who set it
        believes ids are hashed, and they would not be.
        """
        given = [
            name
            for name, value in (
                ("JOURNEY_PII_KEY", self.pii_key),
                ("JOURNEY_PII_KEY_FILE", self.pii_key_file),
            )
            if value
        ]
        if self.pii == "keep":
            if given:
                raise ConfigError(
                    f"{given[0]} is set but JOURNEY_PII=keep does not use it; "
                    "set JOURNEY_PII=hash or drop, or unset it"
                )
            return
        if len(given) != 1:
            raise ConfigError(
                f"JOURNEY_PII={self.pii} needs its key as exactly one of JOURNEY_PII_KEY and "
                "JOURNEY_PII_KEY_FILE"
            )
        self.pii_key_value()

    def pii_key_value(self) -> bytes:
        """The key of ``JOURNEY_PII`` hash/drop: ``JOURNEY_PII_KEY`` or the key file's content.

        The file's content is taken whole but for one trailing newline (a key may hold any
        byte); either must be at least ``PII_KEY_MIN_BYTES`` long.
        """
        if self.pii_key_file:
            path = self.pii_key_file
            try:
                with open(path, "rb") as file:
                    key = file.read()
            except OSError as exc:
                raise ConfigError(
                    f"JOURNEY_PII_KEY_FILE={path!r} cannot be read ({exc.strerror})"
                ) from None
            key = key.removesuffix(b"\n").removesuffix(b"\r")
            name = f"JOURNEY_PII_KEY_FILE={path!r}"
        else:
            key = self.pii_key.encode()
            name = "JOURNEY_PII_KEY"
        if len(key) < PII_KEY_MIN_BYTES:
            raise ConfigError(
                f"{name} holds {len(key)} bytes; a JOURNEY_PII key needs at least "
                f"{PII_KEY_MIN_BYTES} (e.g. `openssl rand -hex 32`)"
            )
        return key

    def pseudonymiser(self) -> Pseudonymiser | None:
        """The intake's ``Pseudonymiser`` of ``JOURNEY_PII``; ``None`` for ``keep``."""
        if self.pii == "keep":
            return None
        from streams.engine.pii import Pseudonymiser

        return Pseudonymiser(self.pii, self.pii_key_value())

    def pii_identity(self) -> str:
        """What the state's visitor keys are: ``""`` raw ids (keep), else ``pseudonym:<key
        fingerprint>`` (hash and drop give the same pseudonyms)."""
        pii = self.pseudonymiser()
        return "" if pii is None else f"pseudonym:{pii.fingerprint}"

    def direct_input(self) -> bool:
        """Whether events skip the by-visitor topic (``JOURNEY_INPUT_KEYED_BY_VISITOR``).

        Not under ``JOURNEY_PII`` hash or drop: the producers partition by the raw visitor
        key, but the worker's state, changelog keys and their placement checks use the
        pseudonym, which hashes to another partition. Those events take the hop, where the
        intake repartitions them by pseudonym.
        """
        return self.input_keyed_by_visitor and self.pii == "keep"

    def kafka_sasl_password_value(self) -> str:
        """The SASL password: ``JOURNEY_KAFKA_SASL_PASSWORD``, or the password file's first line."""
        if not self.kafka_sasl_password_file:
            return self.kafka_sasl_password
        try:
            with open(self.kafka_sasl_password_file, encoding="utf-8") as file:
                first = file.readline().strip()
        except OSError as exc:
            raise ConfigError(
                f"JOURNEY_KAFKA_SASL_PASSWORD_FILE={self.kafka_sasl_password_file!r} cannot be "
                f"read ({exc.strerror})"
            ) from None
        if not first:
            raise ConfigError(
                f"JOURNEY_KAFKA_SASL_PASSWORD_FILE={self.kafka_sasl_password_file!r} is empty"
            )
        return first

    def clickhouse_password_value(self) -> str:
        """The ClickHouse password file's content without its trailing newline; "" if unset."""
        path = self.clickhouse_password_file
        if not path:
            return ""
        try:
            with open(path, encoding="utf-8") as file:
                content = file.read()
        except OSError as exc:
            raise ConfigError(
                f"JOURNEY_CLICKHOUSE_PASSWORD_FILE={path!r} cannot be read ({exc.strerror})"
            ) from None
        password = content.removesuffix("\n").removesuffix("\r")
        if not password:
            raise ConfigError(f"JOURNEY_CLICKHOUSE_PASSWORD_FILE={path!r} is empty")
        if "\n" in password:
            raise ConfigError(
                f"JOURNEY_CLICKHOUSE_PASSWORD_FILE={path!r} holds more than one line; "
                "write the password alone"
            )
        return password

    @classmethod
    def describe(cls) -> list[tuple[str, str, str]]:
        """(variable, default, meaning) for every setting, for --help and the README."""
        return [
            (
                f"JOURNEY_{f.name.upper()}",
                "unset" if f.default is None else repr(f.default),
                f.metadata["doc"],
            )
            for f in fields(cls)
        ]

    def connection_environment(self) -> dict[str, str]:
        """The variables that connect a child process to Kafka and ClickHouse as this one is.

        ``JOURNEY_BROKERS``, the ``JOURNEY_KAFKA_*`` connection settings and the ClickHouse
        login and TLS settings (password file, CA file, hostname check); the ClickHouse URL
        is the child's own (the bench gives each phase its database). What the bench gives
        the workers, the naive agent and the replay it starts, whose environment has no
        other ``JOURNEY_*``. Only settings that differ from their default are given; a
        password stays in the file it came from, or travels in the environment, never on a
        command line. The consumer group's session timeout is not a connection setting.
        """
        env: dict[str, str] = {}
        for f in fields(self):
            if f.name != "brokers" and not _is_connection_setting(f.name):
                continue
            value = getattr(self, f.name)
            if f.name == "brokers" or value != f.default:
                env[f"JOURNEY_{f.name.upper()}"] = (
                    ("true" if value else "false") if isinstance(value, bool) else str(value)
                )
        return env

    def checkpoint_every_s(self) -> float:
        """The checkpoint interval: the setting, or the default of the input path.

        Each checkpoint serialises every visitor changed since the last one, so a longer
        interval serialises a busy visitor less often (with live traffic at 20,000
        events/s, about 0.9 records per event every 2 s, 0.7-0.8 every 10 s; at 30 s the
        worker spent 42-48 µs of CPU per event against 49-51 µs at 10 s, in 60-s runs).
        Through the by-visitor topic it stays at 2 s: Faust's consumer can skip messages
        around a rebalance, and the window of them grows with the interval
        (docs/architecture.md, "Skipped messages"). Direct
        input is committed by the intake's own consumer, which has no such window.
        """
        if self.checkpoint_interval_s is not None:
            return self.checkpoint_interval_s
        return DIRECT_CHECKPOINT_S if self.direct_input() else HOP_CHECKPOINT_S

    @property
    def exactly_once(self) -> bool:
        """True when the output topics are written in Kafka transactions (``JOURNEY_DELIVERY``)."""
        return self.delivery == "exactly_once"

    def session_config(self) -> SessionConfig:
        """The engine's sessionization parameters (milliseconds) from these settings (seconds)."""
        from streams.engine.sessionizer import SessionConfig

        return SessionConfig(
            session_timeout_ms=round(self.session_timeout_s * 1000),
            max_session_ms=round(self.max_session_s * 1000),
            allowed_lateness_ms=round(self.allowed_lateness_s * 1000),
            idle_grace_ms=round(self.idle_grace_s * 1000),
            split_on_campaign=self.split_on_campaign,
        )
