"""The worker's producer for its output topics and the table changelog.

Output records are many and small (a session row per changed session per flush, a
transition per stage reached, a changelog record per changed visitor), about one per input
event. Even a plain ``AIOKafkaProducer.send`` costs a future, a partitioner call (pure
Python murmur2) and accumulator bookkeeping per record, which profiling showed as a sixth
of the worker's time. Records are therefore appended to one ``BatchBuilder`` per topic
partition and handed to the client a whole batch at a time: when a builder is full, at
``submit`` (the worker calls it every tick, so transitions leave within half a second) and
at ``flush``.

Partitions: records with an explicit partition (changelog records) go there; keyed records
go where Kafka's default partitioner (murmur2 of the key) puts them, computed once per key.

Delivery is at least once and checked: ``flush`` waits for every batch submitted so far
and raises ``StreamError`` if any was not delivered, so the worker never acknowledges
input whose output (or checkpoint) is not durable.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from aiokafka import AIOKafkaProducer

from streams.engine.rows import SessionRow, encode_json
from streams.errors import StreamError
from streams.kafka_connection import client_config
from streams.settings import Settings
from streams.worker.partitioning import PartitionCache, partitions_for_keys

log = logging.getLogger(__name__)

#: Keys per generation whose partition is remembered, per topic (see PartitionCache).
PARTITION_CACHE_SIZE = 65_536
#: Records of a ``send_keyed`` whose partitions are computed together.
SEND_CHUNK = 10_000

T = TypeVar("T")


class OutputProducer:
    """Started on first use, so agents and timers can share it without start-up ordering."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()
        self._builders: dict[tuple[str, int], Any] = {}
        self._in_flight: list[asyncio.Future[Any]] = []
        self._handover = asyncio.Lock()
        self._partition_of: dict[str, PartitionCache] = {}

    async def _started(self) -> AIOKafkaProducer:
        if self._producer is None:
            async with self._lock:
                if self._producer is None:
                    producer = AIOKafkaProducer(
                        **client_config(self._settings, "aiokafka"),
                        client_id=f"{self._settings.app_id}-output",
                        linger_ms=20,
                        max_batch_size=1024 * 1024,
                        max_request_size=4 * 1024 * 1024,
                        acks="all",
                    )
                    await producer.start()
                    self._producer = producer
        return self._producer

    async def _cache(self, producer: AIOKafkaProducer, topic: str) -> PartitionCache:
        """The partitions of ``topic``'s recent keys (made when the topic is first used)."""
        cache = self._partition_of.get(topic)
        if cache is None:
            count = len(await producer.partitions_for(topic))
            cache = self._partition_of[topic] = PartitionCache(count, PARTITION_CACHE_SIZE)
        return cache

    async def _partition(self, producer: AIOKafkaProducer, topic: str, key: bytes | None) -> int:
        if key is None:
            return 0
        return (await self._cache(producer, topic))(key)

    async def send_keyed(
        self,
        topic: str,
        items: Sequence[T],
        key: Callable[[T], bytes],
        value: Callable[[T], bytes],
    ) -> None:
        """Append a record per item, the partitions of a chunk of keys computed at once.

        For the records of a whole flush, whose keys are mostly new to the per-key cache
        (``partitions_for_keys`` costs a twentieth of a murmur2 per key). Values are made
        as they are appended, a chunk at a time, so a flush of a million rows never holds
        a million serialised records at once.
        """
        if not items:
            return
        producer = self._producer or await self._started()
        count = (await self._cache(producer, topic)).partitions
        for at in range(0, len(items), SEND_CHUNK):
            chunk = items[at : at + SEND_CHUNK]
            keys = [key(item) for item in chunk]
            partitions = partitions_for_keys(keys, count)
            for item, raw_key, partition in zip(chunk, keys, partitions, strict=True):
                raw_value = value(item)
                if not self._append(topic, partition, raw_key, raw_value):
                    await self.send(topic, raw_key, raw_value, partition)

    async def send_to_partition(
        self, topic: str, partition: int, records: Sequence[tuple[bytes, bytes | None]]
    ) -> None:
        """Append (key, value) records to one partition, in order (changelog writes)."""
        for raw_key, raw_value in records:
            if not self._append(topic, partition, raw_key, raw_value):
                await self.send(topic, raw_key, raw_value, partition)

    def _append(self, topic: str, partition: int, key: bytes, value: bytes | None) -> bool:
        """Append to the partition's open batch if it has room (the usual case, no await).

        False when there is no batch or it is full: then :meth:`send` does it. The table
        is read at every call: a submit meanwhile (another task, while a send waited)
        hands its batches over and starts a new table.
        """
        builder = self._builders.get((topic, partition))
        return builder is not None and (
            builder.append(key=key, value=value, timestamp=None) is not None
        )

    async def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None = None,
    ) -> None:
        """Append one record to its partition's batch (submitted when full or at submit)."""
        producer = self._producer or await self._started()
        if partition is None:
            partition = await self._partition(producer, topic, key)
        slot = (topic, partition)
        for _ in range(16):
            builder = self._builders.get(slot)
            fresh = builder is None
            if builder is None:
                builder = self._builders[slot] = producer.create_batch()
            if builder.append(key=key, value=value, timestamp=None) is not None:
                return
            if fresh:
                raise StreamError(f"a record of {len(value or b'')} bytes does not fit a batch")
            # Full: hand it over and start the next one (one record always fits an empty
            # batch up to max_request_size). It leaves the table before the hand-over
            # waits, so that a send from another task (the flush runs beside the agent)
            # starts a new batch instead of appending to, or handing over, this one.
            del self._builders[slot]
            async with self._handover:
                await self._submit_one(producer, slot, builder)
        raise StreamError(f"no batch of {topic}[{partition}] took a record")

    async def _submit_one(
        self, producer: AIOKafkaProducer, slot: tuple[str, int], builder: Any
    ) -> None:
        topic, partition = slot
        self._in_flight.append(await producer.send_batch(builder, topic, partition=partition))

    async def submit(self) -> None:
        """Hand every non-empty batch to the client (does not wait for delivery).

        Hand-overs are serialised (``_handover``): the client may make one wait while an
        earlier batch of its partition is not drained, and a :meth:`flush` from another
        task (the flush runs beside the agent) must not return before batches taken
        before it reached ``_in_flight``.
        """
        async with self._handover:
            if self._producer is None or not self._builders:
                return
            builders, self._builders = self._builders, {}
            for slot, builder in builders.items():
                if builder.record_count():
                    await self._submit_one(self._producer, slot, builder)

    async def flush(self) -> None:
        """Submit everything and wait until the broker acknowledged it; raise if it did not."""
        await self.submit()
        in_flight, self._in_flight = self._in_flight, []
        if not in_flight:
            return
        results = await asyncio.gather(*in_flight, return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            raise StreamError(
                f"{len(failed)} of {len(results)} output batches were not delivered: {failed[0]!r}"
            )

    async def stop(self) -> None:
        """Deliver what is queued (best effort: nothing waits on it) and close the connection."""
        if self._producer is not None:
            try:
                await self.flush()
            except StreamError:
                log.warning("output records not delivered at shutdown", exc_info=True)
            finally:
                await self._producer.stop()
                self._producer = None


class SessionsPublisher:
    """Publishes a flush's session rows to the sessions topic, from the ClickHouse writer.

    Runs in the writer process (``streams.clickhouse.process.AfterWrite``) right after
    the rows reached ClickHouse, and returns once Kafka acknowledged them: the rows are
    already there as tuples, so the worker's own process no longer encodes and appends a
    record per changed session (a tenth of its time with live traffic). The order of a
    flush is unchanged: ClickHouse, then the sessions topic, then the checkpoint.
    Records are keyed by session id, the value is the row's JSON.
    """

    def __init__(self, settings: Settings) -> None:
        """Publish to ``settings.sessions_topic`` with a producer made in :meth:`start`."""
        self.settings = settings
        self._loop: asyncio.AbstractEventLoop | None = None
        self._producer: OutputProducer | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"settings": self.settings}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.settings = state["settings"]
        self._loop = None
        self._producer = None

    def start(self) -> None:
        """An event loop and a producer of this process's own."""
        self._loop = asyncio.new_event_loop()
        self._producer = OutputProducer(self.settings)
        self._loop.run_until_complete(self._producer._started())

    def __call__(self, sessions: list[SessionRow]) -> None:
        """Send the rows and wait for their delivery; StreamError if Kafka refused them."""
        assert self._loop is not None
        assert self._producer is not None
        self._loop.run_until_complete(self._send(self._producer, sessions))

    async def _send(self, producer: OutputProducer, sessions: list[SessionRow]) -> None:
        await producer.send_keyed(self.settings.sessions_topic, sessions, _session_key, encode_json)
        await producer.flush()


def _session_key(row: SessionRow) -> bytes:
    """Key of a sessions topic record: its session."""
    return row.session_id.encode()
