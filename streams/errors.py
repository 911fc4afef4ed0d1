"""The one error hierarchy of journey-streams.

Adapters translate driver errors into these with ``raise X(msg) from exc`` so callers
handle one family of exceptions and messages always say what to do next.
"""


class JourneyError(Exception):
    """Root of every error journey-streams raises on purpose."""


class ConfigError(JourneyError):
    """A setting, a rules file or a command-line option is wrong; the message names it."""


class StorageError(JourneyError):
    """ClickHouse (server or embedded) refused or could not be reached."""


class StreamError(JourneyError):
    """Kafka could not be reached or a topic is not usable."""
