"""The one small port every ClickHouse consumer uses, and how a target string picks a backend.

``clickhouse://host:port/db`` (``clickhouses://`` over TLS) opens the real server over the
native protocol (:class:`~streams.clickhouse.server.ServerBackend`, addresses in
:mod:`streams.clickhouse.address`); anything else is a folder for the
embedded chdb engine (:class:`~streams.clickhouse.embedded.EmbeddedBackend`). Both run
the same SQL (see :mod:`streams.clickhouse.dialect`) and give identical results.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from streams.clickhouse.address import ServerAddress, is_server_url, server_address

if TYPE_CHECKING:
    from streams.settings import Settings

#: Folder of the embedded engine when nothing else is configured (under ``data_dir``).
DEFAULT_EMBEDDED_DIR = ".journey/clickhouse"


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


def resolve_target(target: str, settings: Settings | None = None) -> str | ServerAddress:
    """A server URL as its :class:`ServerAddress` with ``settings`` applied; a folder as is.

    The password file is read here, once; the result travels to a writer process whole.
    """
    if not is_server_url(target):
        return target
    if settings is None:
        from streams.settings import Settings

        settings = Settings()
    return server_address(target, settings)


def open_backend(
    target: str | ServerAddress | None = None, settings: Settings | None = None
) -> ClickHouse:
    """Open the backend ``target`` names: a server URL or address, or an embedded folder.

    ``None`` or ``""`` opens the default embedded folder :data:`DEFAULT_EMBEDDED_DIR`. A
    URL gets the password file and TLS settings of ``settings`` (defaults: none).
    """
    if target and isinstance(target, str):
        target = resolve_target(target, settings)
    if isinstance(target, ServerAddress):
        from streams.clickhouse.server import ServerBackend

        return ServerBackend(target)
    from streams.clickhouse.embedded import EmbeddedBackend

    return EmbeddedBackend(target or DEFAULT_EMBEDDED_DIR)


def target_name(target: str | ServerAddress) -> str:
    """``target`` for a message: a server without its credentials, or the folder."""
    return target.name if isinstance(target, ServerAddress) else f"embedded {target}"
