"""Where generated records go: a Kafka topic or a JSON Lines file. Thin adapters only.

Both take ``send(record)``, ``flush()`` (what was sent leaves now), ``sleep(seconds)`` (the
paced run's wait, during which a producer keeps working) and ``close()``; ``close``
delivers the rest and raises ``StreamError`` if anything could not be delivered, so a run
never ends "successfully" with lost messages.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any, BinaryIO, Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from streams.errors import ConfigError, StreamError
from streams.generator.batching import Record
from streams.kafka_batches import PartitionBatches, batch_producer
from streams.kafka_connection import check_connection
from streams.settings import Settings

#: Records whose partitions are computed together (unpaced runs; a paced one flushes sooner).
_CHUNK = 2_000
#: Full batches collected before they are handed to the producer together (unpaced runs).
_READY_BATCHES = 8
#: Hand-overs that may wait for the broker before the generator waits with them.
_MAX_QUEUED = 64


class RecordSink(Protocol):
    """Destination of generated records."""

    def send(self, record: Record) -> None:
        """Queue one record for delivery."""

    def flush(self) -> None:
        """Let everything queued leave now (a paced run calls it once per tick)."""

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` (the pacing), letting queued records go meanwhile."""

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

    def flush(self) -> None:
        """Nothing to do: the file is written through its buffer, flushed at close."""

    def sleep(self, seconds: float) -> None:
        """Sleep."""
        time.sleep(seconds)

    def close(self) -> None:
        """Flush, and close the file unless it is standard output."""
        self._file.flush()
        if self._own:
            self._file.close()


class KafkaSink:
    """Produces records to one topic in whole batches, keyed by visitor (aiokafka).

    Records go into one batch per partition (:class:`~streams.kafka_batches.PartitionBatches`,
    Kafka's default partitioning of the visitor key, so a visitor stays on one partition
    and in order); a batch is handed over when it is full or at :meth:`flush`. The
    producer's event loop is the sink's own and runs only inside its calls, in the
    caller's thread, so the model and the producer never contend for the interpreter: a
    hand-over queues the batches for a submitting task and turns the loop once (the
    caller goes on generating meanwhile, unless more than ``_MAX_QUEUED`` hand-overs wait
    for the broker); :meth:`sleep` runs the loop while the pacing waits; :meth:`close`
    delivers the rest.
    """

    def __init__(self, kafka: Settings | str, topic: str, compression: str | None = None) -> None:
        """Connect as ``kafka`` says (settings, or a plain broker list); fail if none answers.

        A broker that is not there is a ``StreamError``, a wrong security setting a
        ``ConfigError`` naming it (see ``check_connection``).
        """
        self.topic = topic
        check_connection(kafka)
        self._brokers = kafka.brokers if isinstance(kafka, Settings) else kafka
        self._failed = 0
        self._first_error: BaseException | None = None
        self._ready: list[tuple[int, Any]] = []
        self._keys: list[bytes] = []
        self._values: list[bytes] = []
        self._loop = asyncio.new_event_loop()
        try:
            self._producer, partitions = self._loop.run_until_complete(
                self._start(kafka, compression)
            )
        except BaseException:
            self._loop.close()
            raise
        self._batches = PartitionBatches(self._producer, partitions)
        self._queue: asyncio.Queue[list[tuple[int, Any]] | None] = asyncio.Queue(_MAX_QUEUED)
        self._submitter = self._loop.create_task(self._submit_all())

    async def _start(
        self, kafka: Settings | str, compression: str | None
    ) -> tuple[AIOKafkaProducer, int]:
        try:
            # A short linger: a paced run hands over each 10 ms tick's records at once.
            producer = batch_producer(kafka, linger_ms=2, compression=compression)
        except (ValueError, AssertionError) as exc:
            raise ConfigError(f"Kafka producer setting rejected: {exc}") from exc
        try:
            await producer.start()
        except KafkaError as exc:
            await producer.stop()
            raise StreamError(
                f"cannot reach Kafka at {self._brokers!r} ({exc}); start it (`make up` or "
                "`docker compose up kafka`) or pass --brokers / JOURNEY_BROKERS"
            ) from exc
        try:
            # The partition count, now: records are partitioned as they are batched.
            partitions = await producer.partitions_for(self.topic)
        except KafkaError as exc:
            await producer.stop()
            raise StreamError(
                f"cannot get metadata of topic {self.topic!r} from {self._brokers!r} ({exc}); "
                "check the topic name and that the broker is up"
            ) from exc
        return producer, len(partitions)

    def _failure(self, error: BaseException) -> None:
        self._failed += 1
        if self._first_error is None:
            self._first_error = error

    def _delivered(self, future: asyncio.Future[Any]) -> None:
        if future.cancelled():
            self._failure(asyncio.CancelledError())
        elif future.exception() is not None:
            self._failure(future.exception() or RuntimeError())

    async def _submit_all(self) -> None:
        # One task submits every batch, in hand-over order: a partition's batches must not
        # overtake each other. send_batch returns once the producer holds the batch.
        while (batches := await self._queue.get()) is not None:
            for partition, batch in batches:
                try:
                    delivery = await self._producer.send_batch(
                        batch, self.topic, partition=partition
                    )
                except KafkaError as exc:
                    self._failure(exc)
                    continue
                delivery.add_done_callback(self._delivered)

    async def _turn(self, batches: list[tuple[int, Any]]) -> None:
        # Queue the batches (waiting while the queue is full), then one turn of the loop.
        if batches:
            await self._queue.put(batches)
        await asyncio.sleep(0)

    def send(self, record: Record) -> None:
        """Queue ``record`` (key = visitor key, so a visitor stays on one partition)."""
        self._keys.append(record.key)
        self._values.append(record.value)
        if len(self._keys) >= _CHUNK:
            self._batch_up()
            if len(self._ready) >= _READY_BATCHES:
                self._hand_over()

    def _batch_up(self) -> None:
        # The partitions of a chunk of keys at once: nearly every generated visitor is new.
        self._ready.extend(self._batches.add_all(self._keys, self._values))
        self._keys, self._values = [], []

    def flush(self) -> None:
        """Hand every queued record to the producer now (full and partly filled batches)."""
        self._batch_up()
        self._ready.extend(self._batches.take())
        self._hand_over()

    def _hand_over(self) -> None:
        if self._first_error is not None:
            raise StreamError(
                f"sending to topic {self.topic!r} failed: {self._first_error!r}; "
                "check that the broker is up"
            )
        ready, self._ready = self._ready, []
        self._loop.run_until_complete(self._turn(ready))

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` while the producer sends what it holds."""
        self._loop.run_until_complete(asyncio.sleep(seconds))

    async def _finish(self, batches: list[tuple[int, Any]]) -> None:
        if batches:
            await self._queue.put(batches)
        await self._queue.put(None)
        await self._submitter
        await self._producer.flush()

    def close(self) -> None:
        """Deliver everything queued and stop; fail if any record was not acknowledged."""
        try:
            self._batch_up()
            ready, self._ready = self._ready + self._batches.take(), []
            self._loop.run_until_complete(asyncio.wait_for(self._finish(ready), 60))
        except (KafkaError, TimeoutError) as exc:
            raise StreamError(f"flushing to topic {self.topic!r} failed: {exc!r}") from exc
        finally:
            try:
                self._loop.run_until_complete(self._producer.stop())
            finally:
                self._loop.close()
        if self._failed:
            raise StreamError(
                f"{self._failed} batch(es) of messages to topic {self.topic!r} were not "
                f"delivered; first error: {self._first_error!r}"
            )
