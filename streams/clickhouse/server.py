"""A ClickHouse server over the native protocol (clickhouse-driver), e.g. the 18.16 server."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from clickhouse_driver import Client
from clickhouse_driver import errors as driver_errors

from streams.clickhouse.dialect import quote_string, render
from streams.errors import StorageError

_DB_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


def parse_server_url(url: str) -> tuple[str, int, str, str, str]:
    """(host, port, database, user, password) of ``clickhouse://[user[:pw]@]host[:port]/db``.

    The port defaults to 9000 (native protocol) and the database to ``default``.
    """
    parts = urlsplit(url)
    if parts.scheme != "clickhouse" or not parts.hostname:
        raise StorageError(f"{url!r} is not a ClickHouse URL; use clickhouse://host:9000/db")
    try:
        port = parts.port or 9000
    except ValueError:
        raise StorageError(f"{url!r} has a bad port; use clickhouse://host:9000/db") from None
    database = parts.path.lstrip("/") or "default"
    if not set(database) <= _DB_CHARS:
        raise StorageError(f"database name {database!r} in {url!r} must be letters, digits or _")
    return parts.hostname, port, database, parts.username or "default", parts.password or ""


class ServerBackend:
    """:class:`~streams.clickhouse.backend.ClickHouse` on a real server; creates the db if missing.

    One driver connection, opened at construction so a wrong address fails early with
    a message naming it.
    """

    def __init__(
        self, url: str, *, connect_timeout_s: float = 5.0, timeout_s: float = 120.0
    ) -> None:
        """Connect to ``url`` and create its database when it does not exist yet."""
        host, port, database, user, password = parse_server_url(url)
        self.database = database
        self.name = f"ClickHouse server {host}:{port}/{database}"
        self._closed = False
        boot = Client(
            host,
            port=port,
            user=user,
            password=password,
            connect_timeout=connect_timeout_s,
            send_receive_timeout=timeout_s,
        )
        try:
            self._run(boot, f"CREATE DATABASE IF NOT EXISTS {database}")
        finally:
            boot.disconnect()
        self._client = Client(
            host,
            port=port,
            database=database,
            user=user,
            password=password,
            connect_timeout=connect_timeout_s,
            send_receive_timeout=timeout_s,
        )

    def _run(self, client: Client, sql: str, data: Any = None, columnar: bool = False) -> Any:
        try:
            if data is None:
                return client.execute(sql)
            return client.execute(sql, data, columnar=columnar)
        except driver_errors.NetworkError as exc:
            raise StorageError(
                f"{self.name} is unreachable ({exc}); start it or fix --clickhouse / "
                "JOURNEY_CLICKHOUSE_URL"
            ) from exc
        except driver_errors.Error as exc:
            first = str(exc).split("Stack trace:")[0].strip()
            raise StorageError(f"{self.name} refused {_head(sql)!r}: {first}") from exc
        except (OSError, EOFError) as exc:
            raise StorageError(
                f"{self.name} connection failed ({exc}); check that the server runs"
            ) from exc

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        """Run one statement that returns no rows.

        Not for ``INSERT ... VALUES (...)`` with inline data: the driver then waits for
        data blocks that never come (seen hanging on 18.16); use :meth:`insert`.
        """
        self._run(self._client, render(sql, params))

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        """Run one ``SELECT``; rows as tuples."""
        rows = self._run(self._client, render(sql, params))
        return [tuple(r) for r in rows]

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """One native-protocol ``INSERT`` of all ``rows`` (the driver sends typed blocks).

        Handed over as columns (a transpose in C): the driver's row-oriented path builds
        each column with a Python loop over the rows, about a tenth of a flush's time.
        """
        if not rows:
            return
        data = list(zip(*rows, strict=True))
        sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES"
        self._run(self._client, sql, data, columnar=True)

    def close(self) -> None:
        """Disconnect; idempotent."""
        if not self._closed:
            self._closed = True
            self._client.disconnect()

    def drop_database(self) -> None:
        """Drop this backend's database (tests use a fresh database each)."""
        self._run(self._client, f"DROP DATABASE IF EXISTS {self.database}")

    def __repr__(self) -> str:
        return f"ServerBackend({quote_string(self.name)})"


def _head(sql: str) -> str:
    text = " ".join(sql.split())
    return text if len(text) <= 120 else text[:117] + "..."
