"""How every Kafka client of journey-streams connects: one place, three client libraries.

The worker, the generator and the bench use three libraries that spell the same
connection differently: aiokafka (the intake consumer, the output producer, the repair
reader, the bench's producers and raw consumer), kafka-python (topic creation, the
generator's producer, the bench's admin client) and Faust (the worker's app and the
bench's naive baseline). :func:`client_config` turns one :class:`KafkaConnection` into the
keyword arguments of the library asked for; each caller adds only what belongs to its
role (group id, client id, linger, acks, sizes, timeouts). A unit test fails if any
module under ``streams/`` builds a client without it.

Security lives here, and only here: the ``JOURNEY_KAFKA_*`` settings become fields of
``KafkaConnection`` in :meth:`KafkaConnection.from_settings`, and each translation spells
them for its library. With PLAINTEXT (the default) the result is the bootstrap servers
alone, as before. The libraries installed spell security as follows:

- aiokafka (``AIOKafkaConsumer``, ``AIOKafkaProducer``, ``AIOKafkaAdminClient``):
  ``security_protocol`` (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL), ``sasl_mechanism``
  (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512; its default is PLAIN), ``sasl_plain_username``,
  ``sasl_plain_password`` (used by SCRAM too) and ``ssl_context``: there are no file
  options, the CA, certificate and key go into an ``ssl.SSLContext``
  (``aiokafka.helpers.create_ssl_context(cafile=, certfile=, keyfile=)`` checks hostnames;
  switching that off means ``context.check_hostname = False``).
- kafka-python (``KafkaProducer``, ``KafkaConsumer``, ``KafkaAdminClient``):
  ``security_protocol``, ``sasl_mechanism`` (default None, so it must be given with SASL),
  ``sasl_plain_username``, ``sasl_plain_password``, ``ssl_cafile``, ``ssl_certfile``,
  ``ssl_keyfile`` and ``ssl_check_hostname`` (default True).
- Faust (``faust.App``): the ``broker_credentials`` setting, either
  ``faust.SASLCredentials(username=, password=, mechanism=, ssl_context=)`` (an
  ``ssl_context`` makes it SASL_SSL) or ``faust.SSLCredentials(context)``. Pass the
  context built for aiokafka: ``SSLCredentials(cafile=...)`` without ``purpose=`` raises
  TypeError in faust-streaming 0.15 (it calls ``ssl.create_default_context(purpose=None)``).
  Faust hands these to its aiokafka clients; the broker URLs keep the ``kafka://`` scheme.

One ``ssl.SSLContext`` (:meth:`KafkaConnection.ssl_context`) serves aiokafka and Faust:
the CA file (else the system's CAs), the client certificate and key, hostname checking
as ``JOURNEY_KAFKA_SSL_CHECK_HOSTNAME`` says (on by default); kafka-python gets the same
files and flag as its own options and builds the equivalent context.

No client library is imported here, so a command that only parses its options stays
light; a translation that needs one (Faust's credential classes) imports it when called.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

from streams.errors import ConfigError, JourneyError, StreamError
from streams.settings import Settings

#: The client libraries whose keyword arguments :func:`client_config` returns.
ClientLibrary = Literal["aiokafka", "kafka-python", "faust"]


@dataclass(frozen=True, slots=True)
class KafkaConnection:
    """What every client needs to reach the cluster, whatever its role or library.

    The bootstrap servers and how to authenticate and encrypt: the ``JOURNEY_KAFKA_*``
    security settings, already checked together by :meth:`Settings.check_kafka_security`.
    """

    #: ``host:port`` of each bootstrap server, in the order given.
    servers: tuple[str, ...]
    #: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL.
    security_protocol: str = "PLAINTEXT"
    #: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 with SASL; empty otherwise.
    sasl_mechanism: str = ""
    sasl_username: str = ""
    #: The password itself (read from its file); never shown by ``repr``.
    sasl_password: str = field(default="", repr=False)
    #: PEM files; an empty CA file means the system's CAs.
    ssl_cafile: str = ""
    ssl_certfile: str = ""
    ssl_keyfile: str = ""
    ssl_check_hostname: bool = True
    #: Whether the password came from JOURNEY_KAFKA_SASL_PASSWORD_FILE (for messages).
    sasl_password_from_file: bool = False

    @property
    def uses_sasl(self) -> bool:
        """True for SASL_PLAINTEXT and SASL_SSL."""
        return self.security_protocol.startswith("SASL_")

    @property
    def uses_tls(self) -> bool:
        """True for SSL and SASL_SSL."""
        return self.security_protocol in {"SSL", "SASL_SSL"}

    def ssl_context(self) -> ssl.SSLContext:
        """A fresh client TLS context: CA file (else the system CAs), client certificate.

        Certificates are always verified; hostname checking follows
        ``JOURNEY_KAFKA_SSL_CHECK_HOSTNAME``. A file that is not the PEM its setting
        promises fails here with the setting named.
        """
        try:
            context = ssl.create_default_context(cafile=self.ssl_cafile or None)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"JOURNEY_KAFKA_SSL_CAFILE={self.ssl_cafile!r} is not a PEM file of CA "
                f"certificates ({exc})"
            ) from None
        context.check_hostname = self.ssl_check_hostname
        if self.ssl_certfile:
            try:
                context.load_cert_chain(self.ssl_certfile, self.ssl_keyfile or None)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(
                    f"JOURNEY_KAFKA_SSL_CERTFILE={self.ssl_certfile!r} / "
                    f"JOURNEY_KAFKA_SSL_KEYFILE={self.ssl_keyfile!r} are not a PEM certificate "
                    f"and its key ({exc})"
                ) from None
        return context

    @classmethod
    def parse(cls, brokers: str) -> KafkaConnection:
        """From a comma-separated broker list (``--brokers`` or ``JOURNEY_BROKERS``).

        Blanks around names and empty entries are dropped, so ``"a:9092, b:9092,"`` is two
        servers; a list with none is refused here rather than as a client's connect error.
        """
        servers = tuple(name.strip() for name in brokers.split(",") if name.strip())
        if not servers:
            raise ConfigError(
                f"no Kafka bootstrap server in {brokers!r}; give JOURNEY_BROKERS (or --brokers) "
                "as host:port[,host:port...]"
            )
        return cls(servers)

    @classmethod
    def from_settings(cls, settings: Settings) -> KafkaConnection:
        """The connection ``settings`` describe: ``JOURNEY_BROKERS`` and ``JOURNEY_KAFKA_*``.

        The password file, if any, is read here, so a rotated password takes effect at the
        next start.
        """
        servers = cls.parse(settings.brokers).servers
        settings.check_kafka_security()
        sasl = settings.kafka_security_protocol.startswith("SASL_")
        return cls(
            servers,
            security_protocol=settings.kafka_security_protocol,
            sasl_mechanism=settings.kafka_sasl_mechanism if sasl else "",
            sasl_username=settings.kafka_sasl_username if sasl else "",
            sasl_password=settings.kafka_sasl_password_value() if sasl else "",
            ssl_cafile=settings.kafka_ssl_cafile,
            ssl_certfile=settings.kafka_ssl_certfile,
            ssl_keyfile=settings.kafka_ssl_keyfile,
            ssl_check_hostname=settings.kafka_ssl_check_hostname,
            sasl_password_from_file=bool(settings.kafka_sasl_password_file),
        )


def client_config(
    source: Settings | KafkaConnection | str, library: ClientLibrary
) -> dict[str, Any]:
    """Keyword arguments connecting a client of ``library`` to the cluster ``source`` names.

    ``source`` is the settings, a connection built from them (the bench builds one for
    all its clients), or a plain broker list (PLAINTEXT). The result is a fresh dict for
    the client's constructor (aiokafka, kafka-python) or for ``faust.App`` (Faust), with
    a fresh TLS context; the caller adds its role's own options next to it, never
    connection ones.
    """
    return _TRANSLATIONS[library](_connection(source))


def _bootstrap_and_sasl(connection: KafkaConnection) -> dict[str, Any]:
    """The options aiokafka and kafka-python spell alike: servers, protocol, SASL login."""
    config: dict[str, Any] = {"bootstrap_servers": list(connection.servers)}
    if connection.security_protocol == "PLAINTEXT":
        return config
    config["security_protocol"] = connection.security_protocol
    if connection.uses_sasl:
        config["sasl_mechanism"] = connection.sasl_mechanism
        config["sasl_plain_username"] = connection.sasl_username
        config["sasl_plain_password"] = connection.sasl_password
    return config


def _aiokafka(connection: KafkaConnection) -> dict[str, Any]:
    config = _bootstrap_and_sasl(connection)
    if connection.uses_tls:
        # aiokafka has no file or hostname options: the context carries both.
        config["ssl_context"] = connection.ssl_context()
    return config


def _kafka_python(connection: KafkaConnection) -> dict[str, Any]:
    config = _bootstrap_and_sasl(connection)
    if connection.uses_tls:
        # kafka-python builds its context from these (system CAs without a CA file).
        config["ssl_cafile"] = connection.ssl_cafile or None
        config["ssl_certfile"] = connection.ssl_certfile or None
        config["ssl_keyfile"] = connection.ssl_keyfile or None
        config["ssl_check_hostname"] = connection.ssl_check_hostname
    return config


def _faust(connection: KafkaConnection) -> dict[str, Any]:
    # One URL per server: Faust takes the list as its bootstrap servers.
    config: dict[str, Any] = {"broker": [f"kafka://{server}" for server in connection.servers]}
    if connection.security_protocol == "PLAINTEXT":
        return config
    import faust

    context = connection.ssl_context() if connection.uses_tls else None
    if connection.uses_sasl:
        # With a context Faust asks aiokafka for SASL_SSL, without one SASL_PLAINTEXT.
        config["broker_credentials"] = faust.SASLCredentials(
            username=connection.sasl_username,
            password=connection.sasl_password,
            mechanism=connection.sasl_mechanism,
            ssl_context=context,
        )
    else:
        config["broker_credentials"] = faust.SSLCredentials(context)
    return config


_TRANSLATIONS: dict[ClientLibrary, Callable[[KafkaConnection], dict[str, Any]]] = {
    "aiokafka": _aiokafka,
    "kafka-python": _kafka_python,
    "faust": _faust,
}


def check_connection(source: Settings | KafkaConnection | str, timeout_s: float = 10.0) -> None:
    """Talk to a bootstrap server the way the clients will; fail saying why it does not work.

    The client libraries log why they cannot connect (a refused SASL login, a certificate
    that does not verify, TLS spoken to a plaintext listener) and raise only "unable to
    bootstrap", kafka-python after 30 s. This opens one connection with the same options,
    sends one request, and turns what went wrong into one line naming the setting to fix:
    :class:`ConfigError` for a setting, :class:`StreamError` for a broker that is not
    there. The worker and ``journey generate`` call it before their first client.
    """
    connection = _connection(source)
    problems: list[JourneyError] = []
    with ThreadPoolExecutor(1) as pool:  # its own event loop, whoever calls
        for server in connection.servers:
            problem = pool.submit(asyncio.run, _probe(connection, server, timeout_s)).result()
            if problem is None:
                return
            problems.append(problem)
    first = problems[0]
    if len(problems) > 1:
        first.args = ("; ".join(str(p) for p in problems),)
    raise first


def _connection(source: Settings | KafkaConnection | str) -> KafkaConnection:
    if isinstance(source, Settings):
        return KafkaConnection.from_settings(source)
    if isinstance(source, KafkaConnection):
        return source
    return KafkaConnection.parse(source)


async def _probe(connection: KafkaConnection, server: str, timeout_s: float) -> JourneyError | None:
    """None when ``server`` answers a request over ``connection``; else what is wrong."""
    from aiokafka import errors
    from aiokafka.conn import create_conn
    from aiokafka.protocol.admin import ApiVersionRequest

    host, _, port = server.rpartition(":")
    protocol = connection.security_protocol
    try:
        tcp = await asyncio.wait_for(asyncio.open_connection(host, int(port)), timeout_s)
    except (OSError, TimeoutError, ValueError) as exc:
        return StreamError(
            f"cannot reach Kafka at {server} ({_reason(exc)}); is the broker "
            "running (make up)? Check JOURNEY_BROKERS"
        )
    tcp[1].close()
    options = _aiokafka(connection)
    del options["bootstrap_servers"]
    try:
        conn = await asyncio.wait_for(
            create_conn(
                host,
                int(port),
                client_id="journey-check",
                request_timeout_ms=int(timeout_s * 1000),
                **options,
            ),
            timeout_s,
        )
        try:
            await asyncio.wait_for(conn.send(ApiVersionRequest()), timeout_s)
        finally:
            conn.close()
    except errors.SaslAuthenticationFailed:
        password = (
            "JOURNEY_KAFKA_SASL_PASSWORD_FILE"
            if connection.sasl_password_from_file
            else "JOURNEY_KAFKA_SASL_PASSWORD"
        )
        return ConfigError(
            f"Kafka at {server} refused the {connection.sasl_mechanism} login of "
            f"JOURNEY_KAFKA_SASL_USERNAME={connection.sasl_username!r}: check {password} "
            "(and the user name)"
        )
    except errors.UnsupportedSaslMechanismError:
        return ConfigError(
            f"Kafka at {server} does not accept "
            f"JOURNEY_KAFKA_SASL_MECHANISM={connection.sasl_mechanism}"
        )
    except ssl.SSLCertVerificationError as exc:
        return ConfigError(
            f"the TLS certificate of Kafka at {server} did not verify ({exc.verify_message}): "
            "check JOURNEY_KAFKA_SSL_CAFILE (the CA that signed it) and that JOURNEY_BROKERS "
            "names a host the certificate is for (JOURNEY_KAFKA_SSL_CHECK_HOSTNAME)"
        )
    except ssl.SSLError as exc:
        return ConfigError(
            f"TLS with Kafka at {server} failed ({exc.reason or exc}): the listener may not use "
            f"TLS; check JOURNEY_KAFKA_SECURITY_PROTOCOL={protocol}"
        )
    except (errors.KafkaError, OSError, TimeoutError) as exc:
        return _explain_refusal(connection, server, host, int(port), exc)
    return None


def _explain_refusal(
    connection: KafkaConnection, server: str, host: str, port: int, exc: BaseException
) -> JourneyError:
    """The broker took the connection and then would not talk: which protocol did it want?"""
    protocol = connection.security_protocol
    speaks_tls = _speaks_tls(host, port)
    if connection.uses_tls and not speaks_tls:
        return ConfigError(
            f"Kafka at {server} does not speak TLS but JOURNEY_KAFKA_SECURITY_PROTOCOL="
            f"{protocol} does: use the broker's TLS listener in JOURNEY_BROKERS, or PLAINTEXT "
            "or SASL_PLAINTEXT"
        )
    if not connection.uses_tls and speaks_tls:
        return ConfigError(
            f"Kafka at {server} speaks TLS but JOURNEY_KAFKA_SECURITY_PROTOCOL={protocol} does "
            "not: set it to SSL or SASL_SSL (with JOURNEY_KAFKA_SSL_CAFILE), or use the "
            "broker's plaintext listener in JOURNEY_BROKERS"
        )
    if not connection.uses_sasl:
        return ConfigError(
            f"Kafka at {server} closed the connection over {protocol} "
            f"({_reason(exc)}): does its listener need SASL? Check "
            "JOURNEY_KAFKA_SECURITY_PROTOCOL"
        )
    return ConfigError(
        f"Kafka at {server} did not answer over {protocol} ({_reason(exc)}): "
        "check JOURNEY_KAFKA_SECURITY_PROTOCOL and JOURNEY_KAFKA_SASL_MECHANISM"
    )


def _reason(exc: BaseException) -> str:
    """``exc`` as a short phrase: its message, or its type when it has none."""
    return str(exc) or type(exc).__name__


def _speaks_tls(host: str, port: int) -> bool:
    """True if ``host:port`` completes a TLS handshake (certificate not checked: a sniff)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with (
            socket.create_connection((host, port), timeout=3) as raw,
            context.wrap_socket(raw, server_hostname=host),
        ):
            return True
    except (OSError, ssl.SSLError):
        return False
