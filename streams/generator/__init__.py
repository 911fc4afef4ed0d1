"""Synthetic online-store traffic in the v1 event contract (``journey generate``).

The model (personas, channels, sessions, malformed messages, batching) is pure: it turns
a seeded ``random.Random`` and a start time into messages and never reads the clock or
touches Kafka. ``sinks`` holds the thin Kafka and file adapters; ``command`` wires them
to the CLI.
"""

from streams.generator.traffic import GeneratedMessage, TrafficConfig, TrafficModel

__all__ = ["GeneratedMessage", "TrafficConfig", "TrafficModel"]
