"""Create the worker's topics before Faust starts, with the configured partition count.

Faust creates only its internal topics (the repartition topic and the table changelog);
the input and output topics are created here so that a fresh cluster with topic
auto-creation disabled works, and a wrong broker address fails at start-up with a message
instead of as a stream of producer warnings.
"""

from __future__ import annotations

from contextlib import suppress
from typing import TYPE_CHECKING

from streams.errors import ConfigError, StreamError
from streams.settings import Settings

if TYPE_CHECKING:
    from kafka import KafkaAdminClient


def by_visitor_topic(settings: Settings) -> str:
    """The internal topic carrying per-partition batches from intake to the sessionize agent."""
    return f"{settings.app_id}-events-by-visitor"


def customer_signals_topic(settings: Settings) -> str:
    """The internal topic taking sessions' purchases and advocacy to their customer's state."""
    return f"{settings.app_id}-customer-signals"


def worker_topics(settings: Settings) -> list[str]:
    """The topics the worker reads from or writes to.

    The internal by-visitor topic is created here too, before Faust starts: when Faust
    subscribed before declaring it, its consumer logged "Ignoring missing topic" and never
    received a message from it (seen intermittently in the full test suite).
    """
    return [
        by_visitor_topic(settings),
        customer_signals_topic(settings),
        settings.input_topic,
        settings.sessions_topic,
        settings.transitions_topic,
        settings.dlq_topic,
        settings.late_topic,
    ]


def ensure_topics(settings: Settings, timeout_ms: int = 10_000) -> list[str]:
    """Create the missing worker topics; returns the names created.

    The worker's first contact with Kafka, so it first checks the connection: a wrong
    password or protocol fails here in one line naming the setting.
    """
    # Imported here: the topic names above are wanted where no Kafka client is.
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import KafkaError, TopicAlreadyExistsError

    from streams.kafka_connection import check_connection, client_config

    check_connection(settings)
    try:
        admin = KafkaAdminClient(
            **client_config(settings, "kafka-python"),
            client_id=f"{settings.app_id}-admin",
            request_timeout_ms=timeout_ms,
        )
    except KafkaError as exc:
        raise StreamError(
            f"cannot reach Kafka at JOURNEY_BROKERS={settings.brokers!r}: {exc}; "
            "is the broker running (make up)?"
        ) from exc
    try:
        existing = set(admin.list_topics())
        missing = [name for name in worker_topics(settings) if name not in existing]
        if missing:
            # Another worker may create one between our list and create: that is fine.
            with suppress(TopicAlreadyExistsError):
                admin.create_topics(
                    [NewTopic(name, settings.partitions, 1) for name in missing],
                    timeout_ms=timeout_ms,
                )
        if settings.direct_input():
            _check_direct_input(admin, settings)
        return missing
    finally:
        admin.close()


def _check_direct_input(admin: KafkaAdminClient, settings: Settings) -> None:
    """Keyed by visitor, input partition i must be state partition i: equal counts."""
    described = admin.describe_topics([settings.input_topic])
    count = len(described[0].get("partitions") or []) if described else 0
    if count != settings.partitions:
        raise ConfigError(
            f"JOURNEY_INPUT_KEYED_BY_VISITOR=true needs the input topic "
            f"{settings.input_topic!r} to have JOURNEY_PARTITIONS={settings.partitions} "
            f"partitions; it has {count}. Set JOURNEY_PARTITIONS={count} for a new app, "
            "or leave JOURNEY_INPUT_KEYED_BY_VISITOR unset."
        )
