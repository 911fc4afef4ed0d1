"""The one small port every ClickHouse consumer uses, and how a target string picks a backend.

``clickhouse://host:port/db`` opens the real server over the native protocol
(:class:`~streams.clickhouse.server.ServerBackend`); anything else is a folder for the
embedded chdb engine (:class:`~streams.clickhouse.embedded.EmbeddedBackend`). Both run
the same SQL (see :mod:`streams.clickhouse.dialect`) and give identical results.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

#: Folder of the embedded engine when nothing else is configured (under ``data_dir``).
DEFAULT_EMBEDDED_DIR = ".journey/clickhouse"

SERVER_SCHEME = "clickhouse://"


class ClickHouse(Protocol):
    """A ClickHouse connection: run statements, read rows, bulk-insert, close.

    ``params`` fill ``{name}`` placeholders client-side (see ``dialect.render``).
    Every failure is raised as :class:`~streams.errors.StorageError`.
    """

    #: Human-readable target for messages ("server 127.0.0.1:9000/db", "embedded DIR").
    name: str

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        """Run one statement that returns no rows (DDL, ``INSERT ... SELECT``)."""
        ...

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        """Run one ``SELECT`` and return its rows as tuples in column order."""
        ...

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """Insert ``rows`` (values in ``columns`` order) into ``table`` as one batch."""
        ...

    def close(self) -> None:
        """Release the connection (or the embedded session); idempotent."""
        ...


def is_server_url(target: str) -> bool:
    """True when ``target`` names a ClickHouse server rather than an embedded folder."""
    return target.startswith(SERVER_SCHEME)


def open_backend(target: str | None = None) -> ClickHouse:
    """Open the backend ``target`` names: a ``clickhouse://`` URL or an embedded folder.

    ``None`` or ``""`` opens the default embedded folder :data:`DEFAULT_EMBEDDED_DIR`.
    """
    if target and is_server_url(target):
        from streams.clickhouse.server import ServerBackend

        return ServerBackend(target)
    from streams.clickhouse.embedded import EmbeddedBackend

    return EmbeddedBackend(target or DEFAULT_EMBEDDED_DIR)
