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

Delivery is checked: ``flush`` waits for every batch submitted so far and raises
``StreamError`` if any was not delivered, so the worker never acknowledges input whose
output (or checkpoint) is not durable. With a transactional id (``JOURNEY_DELIVERY=
exactly_once``, the default) every record is written in a Kafka transaction, one per
checkpoint, committed with the checkpoint's changelog records and input offsets
(:meth:`OutputProducer.seal`, :meth:`OutputProducer.commit`); without one, delivery is
at least once.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import socket
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from aiokafka import AIOKafkaProducer
from aiokafka.structs import TopicPartition

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

#: Longest wait for the open transaction's abort at shutdown.
STOP_TIMEOUT_S = 30.0
#: Shortest transaction timeout (the broker aborts a transaction open longer than this).
MIN_TRANSACTION_TIMEOUT_S = 60.0

T = TypeVar("T")
Slot = tuple[str, int]


def transactional_id(settings: Settings) -> str:
    """The worker's transactional id: its app, host and data folder, stable across restarts.

    A worker restarted after a crash (same host, same ``JOURNEY_DATA_DIR``) gets the same id,
    so starting its producer fences the dead process and aborts the transaction it left
    open at once, instead of leaving ``read_committed`` consumers waiting for the
    transaction timeout. Workers of one app differ in their data folder (``journey worker
    --processes N`` gives each its own) or their host, so no two running workers share an id.
    """
    place = f"{socket.gethostname()}:{os.path.abspath(settings.data_dir)}"
    return f"{settings.app_id}-output-{hashlib.sha256(place.encode()).hexdigest()[:16]}"


class OutputProducer:
    """Started on first use, so agents and timers can share it without start-up ordering.

    Exactly once (a transactional id given): a transaction is always open. Records go to
    the *open* transaction until a checkpoint is taken (:meth:`seal`); from then on, what
    the checkpoint writes (its changelog records, its flush's session rows:
    ``checkpoint=True``) goes to that transaction, and every other record (messages applied
    after the take) is held in its batches, handed to the client only once the checkpoint
    has committed (:meth:`commit`), in the next transaction. So each transaction holds
    exactly the output of the input its checkpoint acknowledges.
    """

    def __init__(self, settings: Settings, transactional_id: str | None = None) -> None:
        self._settings = settings
        self._transactional_id = transactional_id
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()
        #: Batches being filled for the open transaction (or, while sealed, the next one).
        self._builders: dict[Slot, Any] = {}
        #: While a checkpoint is sealed: batches being filled for it.
        self._sealed: dict[Slot, Any] = {}
        #: Set from seal to commit (exactly once only).
        self._sealing = False
        #: While sealed: full batches of the next transaction, handed over at commit in order.
        self._held: list[tuple[Slot, Any]] = []
        #: True when a record was appended to the open transaction since the last seal.
        self.open_records = False
        self._in_flight: list[asyncio.Future[Any]] = []
        self._handover = asyncio.Lock()
        self._partition_of: dict[str, PartitionCache] = {}

    @property
    def transactional(self) -> bool:
        """True when records are written in transactions (``JOURNEY_DELIVERY=exactly_once``)."""
        return self._transactional_id is not None

    async def start(self) -> None:
        """Connect now (exactly once: fences an earlier process with the same id at once)."""
        await self._started()

    async def _started(self) -> AIOKafkaProducer:
        if self._producer is None:
            async with self._lock:
                if self._producer is None:
                    settings = self._settings
                    options: dict[str, Any] = {}
                    if self._transactional_id is not None:
                        timeout_s = max(
                            MIN_TRANSACTION_TIMEOUT_S, 4 * settings.checkpoint_every_s()
                        )
                        options = {
                            "transactional_id": self._transactional_id,
                            "transaction_timeout_ms": int(timeout_s * 1000),
                        }
                    producer = AIOKafkaProducer(
                        **client_config(settings, "aiokafka"),
                        client_id=f"{settings.app_id}-output",
                        linger_ms=20,
                        max_batch_size=1024 * 1024,
                        max_request_size=4 * 1024 * 1024,
                        acks="all",
                        **options,
                    )
                    await producer.start()
                    if self._transactional_id is not None:
                        # Waits for the producer id: the previous holder of the id is fenced
                        # and its open transaction aborted by then.
                        await producer.begin_transaction()
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
        checkpoint: bool = False,
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
                if not self._append(topic, partition, raw_key, raw_value, checkpoint):
                    await self.send(topic, raw_key, raw_value, partition, checkpoint)

    async def send_to_partition(
        self,
        topic: str,
        partition: int,
        records: Sequence[tuple[bytes, bytes | None]],
        checkpoint: bool = False,
    ) -> None:
        """Append (key, value) records to one partition, in order (changelog writes).

        ``checkpoint``: exactly once, the records belong to the sealed checkpoint's
        transaction (see :meth:`seal`); ignored otherwise.
        """
        for raw_key, raw_value in records:
            if not self._append(topic, partition, raw_key, raw_value, checkpoint):
                await self.send(topic, raw_key, raw_value, partition, checkpoint)

    def _table(self, checkpoint: bool) -> dict[Slot, Any]:
        """The batches a record goes to: the sealed checkpoint's, or the open ones."""
        if checkpoint and self._sealing:
            return self._sealed
        self.open_records = True
        return self._builders

    def _append(
        self, topic: str, partition: int, key: bytes, value: bytes | None, checkpoint: bool
    ) -> bool:
        """Append to the partition's open batch if it has room (the usual case, no await).

        False when there is no batch or it is full: then :meth:`send` does it. The table
        is read at every call: a submit meanwhile (another task, while a send waited)
        hands its batches over and starts a new table.
        """
        builder = self._table(checkpoint).get((topic, partition))
        return builder is not None and (
            builder.append(key=key, value=value, timestamp=None) is not None
        )

    async def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None = None,
        checkpoint: bool = False,
    ) -> None:
        """Append one record to its partition's batch (submitted when full or at submit).

        ``checkpoint``: see :meth:`send_to_partition`.
        """
        producer = self._producer or await self._started()
        if partition is None:
            partition = await self._partition(producer, topic, key)
        slot = (topic, partition)
        for _ in range(16):
            table = self._table(checkpoint)
            builder = table.get(slot)
            fresh = builder is None
            if builder is None:
                builder = table[slot] = producer.create_batch()
            if builder.append(key=key, value=value, timestamp=None) is not None:
                return
            if fresh:
                raise StreamError(f"a record of {len(value or b'')} bytes does not fit a batch")
            # Full: hand it over and start the next one (one record always fits an empty
            # batch up to max_request_size). It leaves the table before the hand-over
            # waits, so that a send from another task (the flush runs beside the agent)
            # starts a new batch instead of appending to, or handing over, this one.
            del table[slot]
            async with self._handover:
                if self._sealing and table is self._builders:
                    # The next transaction's: held until the sealed checkpoint commits.
                    self._held.append((slot, builder))
                else:
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
            if self._producer is None:
                return
            if self._sealing:
                # The open batches wait for the next transaction (see seal).
                builders, self._sealed = self._sealed, {}
            else:
                builders, self._builders = self._builders, {}
            for slot, builder in builders.items():
                if builder.record_count():
                    await self._submit_one(self._producer, slot, builder)

    def seal(self) -> None:
        """Exactly once: a checkpoint is taken; the open transaction becomes its transaction.

        Called at the take, under the worker's lock: every record appended so far (the
        output of the messages the checkpoint acknowledges) commits with it, and so do the
        records appended with ``checkpoint=True`` until :meth:`commit`; every other record
        waits for the next transaction. No-op without a transactional id.
        """
        if self._transactional_id is None:
            return
        assert not self._sealing, "a checkpoint is already sealed"
        self._sealing = True
        self._sealed, self._builders = self._builders, {}
        self.open_records = False

    async def commit(self, offsets: Mapping[TopicPartition, int], group_id: str) -> None:
        """Exactly once: commit the sealed checkpoint's transaction, with input ``offsets``.

        Delivers its records (``StreamError`` if Kafka refused any), adds the input offsets
        of consumer group ``group_id`` to it, commits it, begins the next one and hands the
        records held meanwhile to it.
        Any error leaves the transaction uncommitted: the caller stops the worker, and the
        broker aborts it when the restarted worker's producer fences this one.
        """
        producer = self._producer or await self._started()
        await self.flush()
        if offsets:
            await producer.send_offsets_to_transaction(dict(offsets), group_id)
        await producer.commit_transaction()
        await producer.begin_transaction()
        async with self._handover:
            self._sealing = False
            held, self._held = self._held, []
            for slot, builder in held:
                await self._submit_one(producer, slot, builder)

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
        """Deliver what is queued (best effort: nothing waits on it) and close the connection.

        Exactly once: the open transaction is aborted instead, its records belong to input
        no checkpoint acknowledged (read again by the next worker).
        """
        producer = self._producer
        if producer is None:
            return
        try:
            if self._transactional_id is not None:
                await asyncio.wait_for(producer.abort_transaction(), STOP_TIMEOUT_S)
            else:
                await self.flush()
        except Exception:
            log.warning("output records not delivered at shutdown", exc_info=True)
        finally:
            await producer.stop()
            self._producer = None


class OutputTopic:
    """A topic written through the output producer, as the batch handlers send to one.

    Exactly once, the direct intake's dead letters go this way: into the transaction of
    the checkpoint that commits their input offsets. Delivery is the checkpoint's, so
    ``send`` returns a future already done.
    """

    def __init__(self, output: OutputProducer, name: str) -> None:
        self._output = output
        self._name = name

    async def send(
        self, *, key: bytes | None = None, value: bytes | None = None, partition: int | None = None
    ) -> asyncio.Future[None]:
        """Append one record; its delivery is awaited by the checkpoint that commits it."""
        await self._output.send(self._name, key, value, partition)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


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
