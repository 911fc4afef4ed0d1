"""Helpers for the generator tests: seeded runs of the traffic model."""

from __future__ import annotations

import random
from datetime import UTC, datetime

from streams.generator.traffic import GeneratedMessage, TrafficConfig, TrafficModel

START = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)


def run_model(seed: int = 7, **config: object) -> tuple[list[GeneratedMessage], TrafficModel]:
    """All messages of one seeded run starting at ``START``."""
    model = TrafficModel(TrafficConfig(**config), random.Random(seed), START)  # type: ignore[arg-type]
    return list(model), model
