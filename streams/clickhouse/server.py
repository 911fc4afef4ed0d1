"""A ClickHouse server over the native protocol (clickhouse-driver), e.g. the 18.16 server."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from clickhouse_driver import Client
from clickhouse_driver import errors as driver_errors

from streams.clickhouse.address import ServerAddress, parse_server_url
from streams.clickhouse.dialect import quote_string, render
from streams.errors import StorageError

# The driver logs every failed connection attempt at WARNING with its traceback (and
# Python's last-resort handler prints it where logging is not configured); the failure
# reaches the caller anyway, as one StorageError naming the setting to fix.
logging.getLogger("clickhouse_driver.connection").setLevel(logging.ERROR)

#: Server error codes of a refused login (18.16: unknown user, wrong password, password
#: required; later versions answer 516 for all of them).
_LOGIN_REFUSED = {192, 193, 194, 516}
#: Where the login and TLS come from, for messages.
_LOGIN_SETTINGS = "JOURNEY_CLICKHOUSE_URL (user:password@) or JOURNEY_CLICKHOUSE_PASSWORD_FILE"


class ServerBackend:
    """:class:`~streams.clickhouse.backend.ClickHouse` on a real server; creates the db if missing.

    One driver connection, opened at construction so a wrong address fails early with
    a message naming it.
    """

    def __init__(
        self,
        target: str | ServerAddress,
        *,
        connect_timeout_s: float = 5.0,
        timeout_s: float = 120.0,
    ) -> None:
        """Connect to ``target`` and create its database when it does not exist yet.

        ``target`` is a URL (login and TLS from it alone) or a :class:`ServerAddress`
        (``streams.clickhouse.address.server_address`` adds the settings' password file
        and CA file).
        """
        address = parse_server_url(target) if isinstance(target, str) else target
        self.address = address
        self.database = address.database
        self.name = address.name
        self._closed = False
        options: dict[str, Any] = {
            "port": address.port,
            "user": address.user,
            "password": address.password,
            "connect_timeout": connect_timeout_s,
            "send_receive_timeout": timeout_s,
        }
        if address.secure:
            options |= {
                "secure": True,
                "verify": True,
                "check_hostname": address.check_hostname,
                "ca_certs": address.ca_file or None,
            }
        boot = Client(address.host, **options)
        try:
            self._run(boot, f"CREATE DATABASE IF NOT EXISTS {address.database}")
        finally:
            boot.disconnect()
        self._client = Client(address.host, database=address.database, **options)

    def _run(self, client: Client, sql: str, data: Any = None, columnar: bool = False) -> Any:
        try:
            if data is None:
                return client.execute(sql)
            return client.execute(sql, data, columnar=columnar)
        except driver_errors.NetworkError as exc:
            raise StorageError(self._network_failure(str(exc))) from exc
        except driver_errors.Error as exc:
            first = " ".join(str(exc).split("Stack trace:")[0].split())
            if getattr(exc, "code", None) in _LOGIN_REFUSED:
                raise StorageError(
                    f"{self.name} refused the login of user {self.address.user!r} ({first}); "
                    f"check the password in {_LOGIN_SETTINGS}"
                ) from exc
            raise StorageError(f"{self.name} refused {_head(sql)!r}: {first}") from exc
        except (OSError, EOFError) as exc:
            raise StorageError(
                f"{self.name} connection failed ({exc}); check that the server runs"
            ) from exc

    def _network_failure(self, reason: str) -> str:
        """The message of a connection that failed, saying which setting to fix."""
        if "CERTIFICATE_VERIFY_FAILED" in reason:
            return (
                f"{self.name}: the server's TLS certificate did not verify ({reason}); set "
                "JOURNEY_CLICKHOUSE_SSL_CAFILE to the CA that signed it (or, when only the "
                "host name differs, JOURNEY_CLICKHOUSE_SSL_CHECK_HOSTNAME=false)"
            )
        if "WRONG_VERSION_NUMBER" in reason or "UNEXPECTED_EOF" in reason:
            return (
                f"{self.name}: the port does not speak TLS ({reason}); use the server's "
                "tcp_port_secure (9440) or a plain clickhouse:// URL in JOURNEY_CLICKHOUSE_URL"
            )
        if self.address.secure or "reset by peer" not in reason:
            return (
                f"{self.name} is unreachable ({reason}); start it or fix --clickhouse / "
                "JOURNEY_CLICKHOUSE_URL"
            )
        return (
            f"{self.name} closed the connection ({reason}); if that port is the server's TLS "
            "port, use a clickhouses:// URL in JOURNEY_CLICKHOUSE_URL"
        )

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
