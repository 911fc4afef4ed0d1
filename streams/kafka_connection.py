"""How every Kafka client of journey-streams connects: one place, three client libraries.

The worker, the generator and the bench use three libraries that spell the same
connection differently: aiokafka (the intake consumer, the output producer, the repair
reader, the bench's producers and raw consumer), kafka-python (topic creation, the
generator's producer, the bench's admin client) and Faust (the worker's app and the
bench's naive baseline). :func:`client_config` turns one :class:`KafkaConnection` into the
keyword arguments of the library asked for; each caller adds only what belongs to its
role (group id, client id, linger, acks, sizes, timeouts). A unit test fails if any
module under ``streams/`` builds a client without it.

Security goes here, and only here, when it is added (issue 13): a field on
``KafkaConnection`` read from ``Settings`` in :meth:`KafkaConnection.from_settings`, and a
line in each translation. The libraries installed spell it as follows:

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

No client library is imported here, so a command that only parses its options stays
light; a translation that needs one (Faust's credential classes) imports it when called.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from streams.errors import ConfigError
from streams.settings import Settings

#: The client libraries whose keyword arguments :func:`client_config` returns.
ClientLibrary = Literal["aiokafka", "kafka-python", "faust"]


@dataclass(frozen=True, slots=True)
class KafkaConnection:
    """What every client needs to reach the cluster, whatever its role or library.

    Only the bootstrap servers today; the security settings of issue 13 join them here.
    """

    #: ``host:port`` of each bootstrap server, in the order given.
    servers: tuple[str, ...]

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
        """The connection ``settings`` describe (``JOURNEY_BROKERS``)."""
        return cls.parse(settings.brokers)


def client_config(source: Settings | str, library: ClientLibrary) -> dict[str, Any]:
    """Keyword arguments connecting a client of ``library`` to the cluster ``source`` names.

    ``source`` is the settings, or a plain broker list where a command has only that (the
    generator's sink, the bench). The result is a fresh dict for the client's constructor
    (aiokafka, kafka-python) or for ``faust.App`` (Faust); the caller adds its role's own
    options next to it, never connection ones.
    """
    if isinstance(source, Settings):
        connection = KafkaConnection.from_settings(source)
    else:
        connection = KafkaConnection.parse(source)
    return _TRANSLATIONS[library](connection)


def _aiokafka(connection: KafkaConnection) -> dict[str, Any]:
    return {"bootstrap_servers": list(connection.servers)}


def _kafka_python(connection: KafkaConnection) -> dict[str, Any]:
    return {"bootstrap_servers": list(connection.servers)}


def _faust(connection: KafkaConnection) -> dict[str, Any]:
    # One URL per server: Faust takes the list as its bootstrap servers.
    return {"broker": [f"kafka://{server}" for server in connection.servers]}


_TRANSLATIONS: dict[ClientLibrary, Callable[[KafkaConnection], dict[str, Any]]] = {
    "aiokafka": _aiokafka,
    "kafka-python": _kafka_python,
    "faust": _faust,
}
