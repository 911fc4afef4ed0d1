"""The worker's producer for its output topics: sessions, transitions, late events.

Output records are many and small (a few per session), and Faust's ``Topic.send`` costs
tens of microseconds of bookkeeping per record on top of the client; a plain aiokafka
producer with a short linger batches them into few requests. Delivery is at least once:
the flush that acknowledges input messages first waits for ``flush()`` here.
"""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaProducer

from streams.settings import Settings


class OutputProducer:
    """Started on first use, so agents and timers can share it without start-up ordering."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()

    async def _started(self) -> AIOKafkaProducer:
        if self._producer is None:
            async with self._lock:
                if self._producer is None:
                    producer = AIOKafkaProducer(
                        bootstrap_servers=self._settings.brokers.split(","),
                        client_id=f"{self._settings.app_id}-output",
                        linger_ms=20,
                        max_batch_size=1024 * 1024,
                        max_request_size=4 * 1024 * 1024,
                        acks="all",
                    )
                    await producer.start()
                    self._producer = producer
        return self._producer

    async def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None = None,
    ) -> None:
        """Queue one record (waits only when the client's buffer is full: back-pressure)."""
        producer = await self._started()
        await producer.send(topic, value=value, key=key, partition=partition)

    async def flush(self) -> None:
        """Wait until every queued record is acknowledged by the broker."""
        if self._producer is not None:
            await self._producer.flush()

    async def stop(self) -> None:
        """Flush and close the connection."""
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None
