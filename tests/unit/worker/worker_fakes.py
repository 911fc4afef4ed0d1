"""Fakes the worker's unit tests share (imported as ``worker_fakes``, like engine_support)."""

from __future__ import annotations

from typing import Any


class NullOutput:
    """The output producer, as the publisher and the flusher use it: takes everything."""

    async def send_keyed(self, *args: Any) -> None:
        return None

    async def send(self, *args: Any, **kwargs: Any) -> None:
        return None

    async def send_to_partition(self, *args: Any) -> None:
        return None

    async def submit(self) -> None:
        return None

    async def flush(self) -> None:
        return None
