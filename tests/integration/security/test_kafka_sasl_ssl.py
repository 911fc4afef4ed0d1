"""Every client library through ``client_config`` against the broker's real SASL_SSL listener.

The listener is the one ``KAFKA_SECURE=1 deploy/stack.sh up`` adds (``make test`` does):
TLS with the stack's own CA, SCRAM users. A test fails, never skips, when it is missing.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import (
    clean_env,
    create_topic,
    delete_topics_with_prefixes,
    journey_executable,
    secure_kafka_env,
)

from streams.kafka_connection import client_config
from streams.settings import Settings

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka import KafkaConsumer, KafkaProducer

pytestmark = pytest.mark.integration


@pytest.fixture
def topic() -> Iterator[str]:
    """A fresh one-partition topic (made over PLAINTEXT), deleted afterwards."""
    name = f"test-sasl-ssl-{uuid.uuid4().hex[:12]}"
    create_topic(name, 1)
    yield name
    delete_topics_with_prefixes([name])


def secure_settings(**override: str) -> Settings:
    """Settings of a SASL_SSL client of the test broker, with ``override`` applied."""
    env = secure_kafka_env() | override
    return Settings.from_env({k: v for k, v in env.items() if v})


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-512", "SCRAM-SHA-256"])
def test_aiokafka_produces_and_consumes_over_sasl_ssl(topic: str, mechanism: str) -> None:
    """aiokafka's producer and consumer, configured by client_config, round-trip over SASL_SSL."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    settings = secure_settings(JOURNEY_KAFKA_SASL_MECHANISM=mechanism)
    sent = [f"aiokafka-{i}".encode() for i in range(20)]

    async def round_trip() -> list[bytes]:
        producer = AIOKafkaProducer(**client_config(settings, "aiokafka"), acks="all")
        await producer.start()
        try:
            for value in sent:
                await producer.send(topic, value)
            await producer.flush()
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(
            topic, **client_config(settings, "aiokafka"), auto_offset_reset="earliest"
        )
        await consumer.start()
        try:
            got: list[bytes] = []
            while len(got) < len(sent):
                batch = await asyncio.wait_for(consumer.getmany(timeout_ms=1000), 30)
                got += [m.value for records in batch.values() for m in records if m.value]
            return got
        finally:
            await consumer.stop()

    assert asyncio.run(round_trip()) == sent


def test_kafka_python_produces_and_consumes_over_sasl_ssl(topic: str) -> None:
    """kafka-python's producer and consumer, configured by client_config, round-trip."""
    settings = secure_settings()
    sent = [f"kafka-python-{i}".encode() for i in range(20)]
    producer = KafkaProducer(**client_config(settings, "kafka-python"), acks="all")
    try:
        for value in sent:
            producer.send(topic, value)
        producer.flush(timeout=30)
    finally:
        producer.close(timeout=10)
    consumer = KafkaConsumer(
        topic,
        **client_config(settings, "kafka-python"),
        auto_offset_reset="earliest",
        group_id=None,
        consumer_timeout_ms=20_000,
    )
    try:
        got = [message.value for _, message in zip(sent, consumer, strict=False)]
    finally:
        consumer.close()
    assert got == sent


def run_command(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``journey ARGS`` with only ``env`` as its settings; its exit status and output."""
    return subprocess.run(
        [str(journey_executable()), *args],
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *named: str) -> str:
    """A non-zero exit whose stderr is one line, without a traceback, naming ``named``."""
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for name in named:
        assert name in lines[0], lines[0]
    return lines[0]


def wrong_password_env(tmp_path: Path) -> dict[str, str]:
    """The secure client's settings with a password file holding the wrong password."""
    wrong = tmp_path / "wrong-password"
    wrong.write_text("not-the-password\n")
    return secure_kafka_env() | {"JOURNEY_KAFKA_SASL_PASSWORD_FILE": str(wrong)}


def test_generate_with_a_wrong_password_fails_in_one_line(topic: str, tmp_path: Path) -> None:
    """journey generate: a refused SCRAM login is one line naming the password setting."""
    env = wrong_password_env(tmp_path)
    proc = run_command(["generate", "--events", "10", "--topic", topic], env)
    line = assert_one_line_error(proc, "JOURNEY_KAFKA_SASL_PASSWORD_FILE")
    assert line.startswith("journey generate: error: ")
    assert "refused" in line


def test_worker_with_a_wrong_password_fails_in_one_line(tmp_path: Path) -> None:
    """journey worker: the same refusal stops it before it starts, in one line, status 2."""
    env = wrong_password_env(tmp_path) | {"JOURNEY_DATA_DIR": str(tmp_path / "data")}
    proc = run_command(["worker"], env)
    assert proc.returncode == 2
    assert_one_line_error(proc, "JOURNEY_KAFKA_SASL_PASSWORD_FILE")


def test_a_plaintext_client_on_the_tls_listener_is_told_to_use_tls(topic: str) -> None:
    """A PLAINTEXT generate against the SASL_SSL port says the listener speaks TLS."""
    env = {"JOURNEY_BROKERS": secure_kafka_env()["JOURNEY_BROKERS"]}
    proc = run_command(["generate", "--events", "10", "--topic", topic], env)
    line = assert_one_line_error(proc, "JOURNEY_KAFKA_SECURITY_PROTOCOL")
    assert "speaks TLS" in line


def test_a_certificate_from_another_ca_is_refused(topic: str) -> None:
    """Without the stack's CA (system CAs only) the broker's certificate does not verify."""
    env = secure_kafka_env() | {"JOURNEY_KAFKA_SSL_CAFILE": ""}
    env = {k: v for k, v in env.items() if v}
    proc = run_command(["generate", "--events", "10", "--topic", topic], env)
    line = assert_one_line_error(proc, "JOURNEY_KAFKA_SSL_CAFILE")
    assert "did not verify" in line


def test_generate_sends_over_sasl_ssl(topic: str) -> None:
    """journey generate with the secure settings delivers every message."""
    proc = run_command(["generate", "--events", "200", "--topic", topic], secure_kafka_env())
    assert proc.returncode == 0, proc.stderr
    sent = re.search(r"(\d+) messages", proc.stdout + proc.stderr)
    assert sent, proc.stdout
    consumer = KafkaConsumer(
        topic,
        **client_config(secure_settings(), "kafka-python"),
        auto_offset_reset="earliest",
        group_id=None,
        consumer_timeout_ms=10_000,
    )
    try:
        count = sum(1 for _ in consumer)
    finally:
        consumer.close()
    assert count == int(sent.group(1))
