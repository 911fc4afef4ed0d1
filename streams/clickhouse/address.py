"""Where a ClickHouse server is and how to log in: a URL plus the ``JOURNEY_CLICKHOUSE_*`` settings.

``clickhouse://[user[:password]@]host[:port]/db`` is the plain native protocol (port 9000
by default); ``clickhouses://...`` or ``clickhouse://...?secure=true`` is the same over TLS
(port 9440 by default, ClickHouse's ``tcp_port_secure``), with the server's certificate
always verified. A password never leaves this module in a message: every error and every
name shows the URL through :func:`redact_url`. Imports no driver, so commands can parse
and redact without loading clickhouse-driver.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, unquote, urlsplit

from streams.errors import ConfigError, StorageError

if TYPE_CHECKING:
    from streams.settings import Settings

#: URL schemes of a server: plain native protocol, and native protocol over TLS.
PLAIN_SCHEME = "clickhouse"
TLS_SCHEME = "clickhouses"
#: ClickHouse's default native ports (``tcp_port``, ``tcp_port_secure``).
PLAIN_PORT = 9000
TLS_PORT = 9440
#: What a password looks like in anything printed.
REDACTED = "***"

_DB_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_USAGE = (
    "use clickhouse://host:9000/db, or clickhouses://host:9440/db for TLS (login: user:pw@host)"
)


def is_server_url(target: str) -> bool:
    """True when ``target`` names a ClickHouse server rather than an embedded folder."""
    return target.startswith((f"{PLAIN_SCHEME}://", f"{TLS_SCHEME}://"))


def redact_url(url: str) -> str:
    """``url`` with the password of its ``user:password@`` part replaced by ``***``.

    Works on any string, a malformed URL included (it only looks for the last ``@``
    before the path), so an error about a bad URL can quote it safely.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    authority_end = len(rest)
    for stop in "/?#":
        index = rest.find(stop)
        if index != -1:
            authority_end = min(authority_end, index)
    authority, tail = rest[:authority_end], rest[authority_end:]
    userinfo, at, hostport = authority.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    user = userinfo.split(":", 1)[0]
    return f"{scheme}://{user}:{REDACTED}@{hostport}{tail}"


@dataclass(frozen=True, slots=True)
class ServerAddress:
    """A ClickHouse server, its database and login; the password never shows in ``repr``."""

    host: str
    port: int
    database: str
    user: str = "default"
    password: str = field(default="", repr=False)
    #: Native protocol over TLS; the certificate is then always verified.
    secure: bool = False
    #: PEM file of the CA(s) that signed the server's certificate; "" = the system's CAs.
    ca_file: str = ""
    #: TLS: the certificate must name ``host``.
    check_hostname: bool = True

    @property
    def name(self) -> str:
        """Human-readable target for messages, without credentials."""
        tls = " (TLS)" if self.secure else ""
        return f"ClickHouse server {self.host}:{self.port}/{self.database}{tls}"

    def with_database(self, database: str) -> ServerAddress:
        """The same server and login, another database."""
        return replace(self, database=database)


def parse_server_url(url: str) -> ServerAddress:
    """The :class:`ServerAddress` a ``clickhouse://`` or ``clickhouses://`` URL names.

    The database defaults to ``default``, the user to ``default``; user and password may
    be percent-encoded. The only query parameter is ``secure`` (true/false). Every error
    quotes the URL redacted.
    """
    shown = redact_url(url)
    parts = urlsplit(url)
    if parts.scheme not in (PLAIN_SCHEME, TLS_SCHEME) or not parts.hostname:
        raise StorageError(f"{shown!r} is not a ClickHouse URL; {_USAGE}")
    secure = parts.scheme == TLS_SCHEME
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key != "secure" or value.lower() not in _TRUE | _FALSE:
            raise StorageError(
                f"{shown!r}: unknown URL parameter {key}={value!r}; the only one is "
                "secure=true|false (the CA file is JOURNEY_CLICKHOUSE_SSL_CAFILE)"
            )
        if value.lower() in _TRUE:
            secure = True
        elif parts.scheme == TLS_SCHEME:
            raise StorageError(f"{shown!r}: clickhouses:// always uses TLS; drop secure=false")
    try:
        port = parts.port or (TLS_PORT if secure else PLAIN_PORT)
    except ValueError:
        raise StorageError(f"{shown!r} has a bad port; {_USAGE}") from None
    database = parts.path.lstrip("/") or "default"
    if not set(database) <= _DB_CHARS:
        raise StorageError(f"database name {database!r} in {shown!r} must be letters, digits or _")
    return ServerAddress(
        host=parts.hostname,
        port=port,
        database=database,
        user=unquote(parts.username) if parts.username else "default",
        password=unquote(parts.password) if parts.password else "",
        secure=secure,
    )


def server_base(url: str) -> str:
    """``url`` without its database: ``scheme://[login@]host:port``, to append databases to.

    ``?secure=true`` becomes the ``clickhouses://`` scheme, so the TLS choice survives.
    """
    address = parse_server_url(url)  # validates, with the redacted URL in any error
    scheme = TLS_SCHEME if address.secure else PLAIN_SCHEME
    return f"{scheme}://{urlsplit(url).netloc}"


def server_address(url: str, settings: Settings) -> ServerAddress:
    """The server ``url`` names, with the login and TLS settings of ``settings`` applied.

    The password comes from the URL or from ``JOURNEY_CLICKHOUSE_PASSWORD_FILE``, not
    both; the TLS settings need a TLS URL (a setting that would be ignored is an error,
    since ignoring it would connect differently from what the operator wrote).
    """
    address = parse_server_url(url)
    shown = redact_url(url)
    if settings.clickhouse_password_file:
        if address.password:
            raise ConfigError(
                f"the ClickHouse password is given twice, in {shown!r} and in "
                "JOURNEY_CLICKHOUSE_PASSWORD_FILE; keep one"
            )
        address = replace(address, password=settings.clickhouse_password_value())
    if not address.secure:
        for name, value in (
            ("JOURNEY_CLICKHOUSE_SSL_CAFILE", settings.clickhouse_ssl_cafile),
            ("JOURNEY_CLICKHOUSE_SSL_CHECK_HOSTNAME", not settings.clickhouse_ssl_check_hostname),
        ):
            if value:
                raise ConfigError(
                    f"{name} is set but {shown!r} does not use TLS; use clickhouses:// "
                    f"(or ?secure=true) for the server's TLS port, or unset {name}"
                )
        return address
    return replace(
        address,
        ca_file=settings.clickhouse_ssl_cafile,
        check_hostname=settings.clickhouse_ssl_check_hostname,
    )
