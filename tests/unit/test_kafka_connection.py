"""One connection configuration for every Kafka client: each library's spelling, and its use."""

from __future__ import annotations

import inspect
import warnings

import pytest

from streams.errors import ConfigError
from streams.kafka_connection import KafkaConnection, client_config
from streams.settings import Settings

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
