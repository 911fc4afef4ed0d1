"""Settings: built once at start-up from ``JOURNEY_*`` environment variables, then passed down.

Nothing else in journey-streams reads ``os.environ``. Every setting has a documented
default (README "Configuration" and ``journey worker --help`` print this table) and a
wrong value fails at start-up with a message naming the variable.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from streams.errors import ConfigError

if TYPE_CHECKING:
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


def _flag(name: str, raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ConfigError(f"{name}={raw!r} is not a boolean (use true or false)")


def _text(name: str, raw: str) -> str:
    return raw.strip()


#: Default checkpoint intervals (seconds) through the by-visitor topic and with direct input.
HOP_CHECKPOINT_S = 2.0
DIRECT_CHECKPOINT_S = 30.0


def _setting(default: Any, parse: Callable[[str, str], Any], doc: str) -> Any:
    return field(default=default, metadata={"parse": parse, "doc": doc})


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
    app_id: str = _setting("journey-streams", _text, "Kafka consumer group / Faust app id")
    clickhouse_url: str = _setting(
        "", _text, "clickhouse://host:9000/db for a server; empty = embedded chdb in data_dir"
    )
    data_dir: str = _setting(".journey", _text, "folder for embedded ClickHouse and worker state")
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
    stage_rules: str = _setting("", _text, "path of a store's stage rules YAML; empty = defaults")

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
        return settings

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
        return DIRECT_CHECKPOINT_S if self.input_keyed_by_visitor else HOP_CHECKPOINT_S

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
