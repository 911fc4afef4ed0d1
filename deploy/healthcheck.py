"""Real health checks for the local stack, used by deploy/stack.sh.

    python deploy/healthcheck.py kafka 127.0.0.1:9092
    python deploy/healthcheck.py kafka-sasl-ssl .stack/kafka/secure/journey.env
    python deploy/healthcheck.py clickhouse 127.0.0.1:8123
    python deploy/healthcheck.py clickhouse-secure .stack/clickhouse/secure/journey.env
    python deploy/healthcheck.py http http://127.0.0.1:9090/-/ready

Exit 0 when the service answers a real request (a Kafka metadata request, ClickHouse
``SELECT 1``, an HTTP readiness endpoint), 1 otherwise with the reason on stderr. Each
check is a single attempt with a short timeout; the caller owns the retry loop.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.parse
import urllib.request


def check_kafka(bootstrap: str) -> None:
    """Ask the broker for cluster metadata (the same request every client starts with)."""
    from kafka import KafkaAdminClient  # from the project venv

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
    try:
        brokers = admin.describe_cluster()["brokers"]
        if not brokers:
            raise RuntimeError("metadata response lists no brokers")
    finally:
        admin.close()


def check_kafka_sasl_ssl(env_file: str) -> None:
    """A metadata request over the SASL_SSL listener, as the client ``env_file`` describes.

    ``env_file`` is the ``journey.env`` deploy/stack.sh writes (``JOURNEY_*=value`` lines):
    it proves the certificate verifies for the address and the SCRAM user logs in.
    """
    from pathlib import Path

    from kafka import KafkaAdminClient

    env = dict(
        line.split("=", 1) for line in Path(env_file).read_text().splitlines() if "=" in line
    )
    admin = KafkaAdminClient(
        bootstrap_servers=env["JOURNEY_BROKERS"],
        security_protocol=env["JOURNEY_KAFKA_SECURITY_PROTOCOL"],
        sasl_mechanism=env["JOURNEY_KAFKA_SASL_MECHANISM"],
        sasl_plain_username=env["JOURNEY_KAFKA_SASL_USERNAME"],
        sasl_plain_password=Path(env["JOURNEY_KAFKA_SASL_PASSWORD_FILE"]).read_text().strip(),
        ssl_cafile=env["JOURNEY_KAFKA_SSL_CAFILE"],
        request_timeout_ms=3000,
    )
    try:
        if not admin.describe_cluster()["brokers"]:
            raise RuntimeError("metadata response lists no brokers")
    finally:
        admin.close()


def check_clickhouse(http_address: str) -> None:
    """Run ``SELECT 1`` over ClickHouse's HTTP interface."""
    query = urllib.parse.urlencode({"query": "SELECT 1"})
    with urllib.request.urlopen(f"http://{http_address}/?{query}", timeout=3) as response:
        body = response.read().strip()
    if body != b"1":
        raise RuntimeError(f"SELECT 1 answered {body!r}")


def check_clickhouse_secure(env_file: str) -> None:
    """``SELECT 1`` over the TLS native port, as the client ``env_file`` describes.

    ``env_file`` is the ``journey.env`` deploy/stack.sh writes: it proves the certificate
    verifies for the address and the password user logs in.
    """
    import logging
    from pathlib import Path

    from clickhouse_driver import Client  # from the project venv

    # The driver logs a failed connect with its traceback; the reason is printed anyway.
    logging.getLogger("clickhouse_driver.connection").setLevel(logging.ERROR)
    env = dict(
        line.split("=", 1) for line in Path(env_file).read_text().splitlines() if "=" in line
    )
    url = urllib.parse.urlsplit(env["JOURNEY_CLICKHOUSE_URL"])
    client = Client(
        url.hostname,
        port=url.port,
        user=url.username,
        password=Path(env["JOURNEY_CLICKHOUSE_PASSWORD_FILE"]).read_text().rstrip("\n"),
        secure=True,
        verify=True,
        ca_certs=env["JOURNEY_CLICKHOUSE_SSL_CAFILE"],
        connect_timeout=3,
        send_receive_timeout=3,
    )
    try:
        if client.execute("SELECT 1") != [(1,)]:
            raise RuntimeError("SELECT 1 over TLS answered something else")
    finally:
        client.disconnect()


def check_http(url: str) -> None:
    """GET a readiness endpoint and expect 200."""
    with urllib.request.urlopen(url, timeout=3) as response:
        if response.status != 200:
            raise RuntimeError(f"{url} answered HTTP {response.status}")


CHECKS = {
    "kafka": check_kafka,
    "kafka-sasl-ssl": check_kafka_sasl_ssl,
    "clickhouse": check_clickhouse,
    "clickhouse-secure": check_clickhouse_secure,
    "http": check_http,
}


def main(argv: list[str]) -> int:
    """Run one check named on the command line."""
    if len(argv) != 3 or argv[1] not in CHECKS:
        print(f"usage: {argv[0]} {{{'|'.join(CHECKS)}}} ADDRESS", file=sys.stderr)
        return 2
    try:
        CHECKS[argv[1]](argv[2])
    except Exception as exc:  # any failure means "not healthy yet"; the reason is printed
        print(f"{argv[1]} {argv[2]}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
