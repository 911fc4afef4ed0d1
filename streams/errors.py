"""The one error hierarchy of journey-streams, and how a failure becomes one line.

Adapters translate driver errors into these with ``raise X(msg) from exc`` so callers
handle one family of exceptions and messages always say what to do next. The ``journey``
command prints what :func:`explain` makes of a failure as one line, without a traceback.
"""

from __future__ import annotations


class JourneyError(Exception):
    """Root of every error journey-streams raises on purpose."""


class ConfigError(JourneyError):
    """A setting, a rules file or a command-line option is wrong; the message names it."""


class StorageError(JourneyError):
    """ClickHouse (server or embedded) refused or could not be reached."""


class StreamError(JourneyError):
    """Kafka could not be reached or a topic is not usable."""


class InputError(JourneyError):
    """The input could not be used at all (every line of a replay rejected); says the fix."""


def explain(exc: BaseException) -> str | None:
    """``exc`` as one line a user can act on, or None when it is not a known failure.

    Known failures are the errors raised on purpose (:class:`JourneyError`) and those of
    the operating system (a file that cannot be read or written, a port that is taken),
    whose message names the file. Anything else is a bug, whose traceback is the report.
    """
    if isinstance(exc, JourneyError):
        return str(exc) or type(exc).__name__
    if isinstance(exc, OSError):
        reason = exc.strerror or str(exc) or type(exc).__name__
        if exc.filename is not None:
            return f"{exc.filename}: {reason}"
        return reason
    return None
