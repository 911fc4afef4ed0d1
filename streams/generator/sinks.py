"""Where generated records go: a Kafka topic or a JSON Lines file. Thin adapters only.

Both take ``send(record)`` and ``close()``; ``close`` flushes and raises ``StreamError`` if
anything could not be delivered, so a run never ends "successfully" with lost messages.
"""

from __future__ import annotations

import sys
import warnings
from typing import Any, BinaryIO, Protocol

from streams.errors import ConfigError, StreamError
from streams.generator.batching import Record
from streams.kafka_connection import check_connection, client_config
from streams.settings import Settings

with warnings.catch_warnings():
    # kafka-python 3.0 loads its protocol schemas with the deprecated
    # importlib.resources.read_text at import time; harmless, and not ours to fix.
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka import KafkaProducer
    from kafka.errors import KafkaError
    from kafka.partitioner import DefaultPartitioner


class RecordSink(Protocol):
    """Destination of generated records."""

    def send(self, record: Record) -> None:
        """Queue one record for delivery."""

    def close(self) -> None:
        """Deliver everything queued; raise ``StreamError`` if some could not be."""


class FileSink:
    """Writes one record value per line (JSON Lines); ``-`` is standard output."""

    def __init__(self, path: str) -> None:
        """Open ``path`` for writing, replacing it."""
        self._own = path != "-"
        try:
            # Closed in close(); a context manager cannot span the sink's lifetime.
            self._file: BinaryIO = (
                open(path, "wb", buffering=1 << 20)  # noqa: SIM115
                if self._own
                else sys.stdout.buffer
            )
        except OSError as exc:
            raise ConfigError(f"cannot write --out {path!r}: {exc.strerror}") from exc

    def send(self, record: Record) -> None:
        """Append the record's value and a newline (keys are not written)."""
        self._file.write(record.value + b"\n")

    def close(self) -> None:
        """Flush, and close the file unless it is standard output."""
        self._file.flush()
        if self._own:
            self._file.close()


class VisitorPartitioner(DefaultPartitioner):  # type: ignore[misc]  # kafka-python is untyped
    """kafka-python's default partitioner (murmur2 of the key, as the Java client), memoized.

    Its pure-Python murmur2 costs about 20 us a record, a fifth of a send; a visitor's key
    recurs for every event of their sessions, so the partition of recent keys is kept (up
    to ``max_keys``, then all forgotten at once). The partitions are exactly the default's.
    """

    def __init__(self, max_keys: int = 100_000) -> None:
        """Remember at most ``max_keys`` keys."""
        super().__init__()
        self._max_keys = max_keys
        self._known: dict[tuple[str, bytes, int], int] = {}

    def partition(
        self,
        topic: str,
        key: Any,
        serialized_key: bytes | None,
        value: Any,
        serialized_value: bytes | None,
        cluster: Any,
    ) -> int:
        """The default partitioner's answer, looked up by (topic, key, partition count)."""
        count = len(cluster.partitions_for_topic(topic) or ())
        if serialized_key is None or not count:
            # Keyless (random partition) or unknown topic: the default decides or raises.
            return int(
                super().partition(topic, key, serialized_key, value, serialized_value, cluster)
            )
        memo = (topic, serialized_key, count)
        found = self._known.get(memo)
        if found is None:
            found = int(
                super().partition(topic, key, serialized_key, value, serialized_value, cluster)
            )
            if len(self._known) >= self._max_keys:
                self._known.clear()
            self._known[memo] = found
        return found


class KafkaSink:
    """Produces records to one topic with kafka-python, keyed by visitor."""

    def __init__(self, kafka: Settings | str, topic: str, compression: str | None = None) -> None:
        """Connect as ``kafka`` says (settings, or a plain broker list); fail if none answers.

        A broker that is not there is a ``StreamError``, a wrong security setting a
        ``ConfigError`` naming it (see ``check_connection``).
        """
        self.topic = topic
        brokers = kafka.brokers if isinstance(kafka, Settings) else kafka
        check_connection(kafka)
        self._failed = 0
        self._first_error: BaseException | None = None
        try:
            self._producer: Any = KafkaProducer(
                **client_config(kafka, "kafka-python"),
                client_id="journey-generate",
                acks=1,
                # Large, lingering batches: throughput matters more than per-event latency.
                linger_ms=20,
                batch_size=512 * 1024,
                max_request_size=4 * 1024 * 1024,
                compression_type=compression,
                partitioner=VisitorPartitioner(),
            )
        except KafkaError as exc:
            raise StreamError(
                f"cannot reach Kafka at {brokers!r} ({exc}); start it (`make up` or "
                "`docker compose up kafka`) or pass --brokers / JOURNEY_BROKERS"
            ) from exc
        except (ValueError, AssertionError) as exc:
            raise ConfigError(f"Kafka producer setting rejected: {exc}") from exc
        try:
            # Fetch the topic's metadata now: otherwise the first send blocks for it
            # (about 0.1 s), which a paced run would have to catch up in a burst.
            self._producer.partitions_for(topic)
        except KafkaError as exc:
            self._producer.close(timeout=10)
            raise StreamError(
                f"cannot get metadata of topic {topic!r} from {brokers!r} ({exc}); "
                "check the topic name and that the broker is up"
            ) from exc

    def _errback(self, exc: BaseException) -> None:
        self._failed += 1
        if self._first_error is None:
            self._first_error = exc

    def send(self, record: Record) -> None:
        """Queue ``record`` (key = visitor key, so a visitor stays on one partition)."""
        try:
            future = self._producer.send(self.topic, value=record.value, key=record.key)
        except KafkaError as exc:
            raise StreamError(f"cannot send to topic {self.topic!r}: {exc}") from exc
        future.add_errback(self._errback)

    def close(self) -> None:
        """Flush and close the producer; fail if any record was not acknowledged."""
        try:
            self._producer.flush(timeout=60)
        except KafkaError as exc:
            raise StreamError(f"flushing to topic {self.topic!r} failed: {exc}") from exc
        finally:
            self._producer.close(timeout=10)
        if self._failed:
            raise StreamError(
                f"{self._failed} message(s) to topic {self.topic!r} were not delivered; "
                f"first error: {self._first_error}"
            )
