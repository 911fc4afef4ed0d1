"""What a bench figure was measured on: component versions and the machine."""

from __future__ import annotations

import contextlib
import os
import platform
import re
from pathlib import Path
from typing import Any

from streams.clickhouse.address import ServerAddress
from streams.clickhouse.server import ServerBackend
from streams.errors import StorageError

#: The broker the local stack fetches from Maven Central (see deploy/stack.sh).
KAFKA_POM = Path(__file__).resolve().parents[2] / "deploy" / "kafka" / "pom.xml"


def kafka_version(pom: Path = KAFKA_POM) -> str | None:
    """``<kafka.version>`` of the stack's Maven file, None outside a source checkout."""
    try:
        match = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", pom.read_text())
    except OSError:
        return None
    return match.group(1).strip() if match else None


def clickhouse_version(address: ServerAddress) -> str | None:
    """``SELECT version()`` of the server at ``address``."""
    with contextlib.suppress(StorageError):
        backend = ServerBackend(address)
        try:
            return str(backend.query("SELECT version()")[0][0])
        finally:
            backend.close()
    return None


def chdb_version() -> str | None:
    """The chdb package and its ClickHouse engine version, e.g. ``4.4.0 (ClickHouse 26.9)``."""
    try:
        import chdb
    except ImportError:
        return None
    package = str(getattr(chdb, "__version__", "?"))
    engine = getattr(chdb, "engine_version", None)
    return f"{package} (ClickHouse {engine})" if engine else package


def versions(clickhouse: ServerAddress) -> dict[str, Any]:
    """Versions of Python and every component the figures depend on."""
    import aiokafka
    import faust

    return {
        "python": platform.python_version(),
        "faust": getattr(faust, "__version__", None),
        "aiokafka": getattr(aiokafka, "__version__", None),
        "kafka_broker": kafka_version(),
        "clickhouse_server": clickhouse_version(clickhouse),
        "chdb": chdb_version(),
    }


def machine() -> dict[str, Any]:
    """Cores, memory, CPU model and the load average at the time of the call."""
    model = None
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory = None
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = int(line.split()[1]) * 1024
                break
    return {
        "cores": os.cpu_count(),
        "memory_bytes": memory,
        "cpu_model": model,
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
