"""ClickHouse over TLS with a password user, against the real 18.16 server's TLS native port.

The port, its CA and the user are the ones ``CLICKHOUSE_SECURE=1 deploy/stack.sh up`` adds
(``make test`` does); a test fails, never skips, when they are missing. Figures are checked
against the plain port and against reference_sql (SPEC figures recomputed by SQL over
``raw_events`` in chdb) or the hand-computed worked example, never against the engine alone.
"""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

_TESTS = Path(__file__).resolve().parents[1]
for _folder in ("clickhouse", "replay"):  # chrows, reference_sql; replay_support (OTTO)
    if str(_TESTS / _folder) not in sys.path:
        sys.path.insert(0, str(_TESTS / _folder))

from chrows import DAY, T0, WORKED_EXAMPLE_SUMMARY, worked_example  # noqa: E402
from reference_sql import reference_summary  # noqa: E402
from replay_support import otto_events  # noqa: E402
from support import (  # noqa: E402
    CLICKHOUSE_URL,
    clean_env,
    database_url,
    drop_database,
    journey_executable,
    secure_clickhouse_env,
)

from streams.clickhouse.address import ServerAddress, server_address  # noqa: E402
from streams.clickhouse.embedded import EmbeddedBackend  # noqa: E402
from streams.clickhouse.process import WriterProcess  # noqa: E402
from streams.clickhouse.server import ServerBackend  # noqa: E402
from streams.clickhouse.summary import compute_summary  # noqa: E402
from streams.errors import StorageError  # noqa: E402
from streams.settings import Settings  # noqa: E402

pytestmark = pytest.mark.integration


def secure_address(database: str) -> ServerAddress:
    """The TLS port's address with the stack's password file and CA applied, on ``database``."""
    env = secure_clickhouse_env()
    return server_address(env["JOURNEY_CLICKHOUSE_URL"], Settings.from_env(env)).with_database(
        database
    )


def password() -> str:
    """The password user's password (the test must never find it in any output)."""
    return Path(secure_clickhouse_env()["JOURNEY_CLICKHOUSE_PASSWORD_FILE"]).read_text().strip()


@pytest.fixture
def database() -> Iterator[str]:
    """A fresh database name, dropped on the plain and TLS ports afterwards."""
    name = f"journey_tls_{uuid.uuid4().hex[:12]}"
    yield name
    drop_database(database_url(name))


def run_command(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``journey ARGS`` with only ``env`` as its settings; its exit status and output."""
    return subprocess.run(
        [str(journey_executable()), *args],
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def secure_env(database: str, **override: str) -> dict[str, str]:
    """The TLS client's settings on ``database``; an empty ``override`` value unsets it."""
    env = secure_clickhouse_env()
    env["JOURNEY_CLICKHOUSE_URL"] = database_url(database, env["JOURNEY_CLICKHOUSE_URL"])
    env |= override
    return {k: v for k, v in env.items() if v}


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *named: str) -> str:
    """A non-zero exit, one stderr line naming ``named``, no traceback, no password anywhere."""
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for name in named:
        assert name in lines[0], lines[0]
    secret = password()
    assert secret not in proc.stdout + proc.stderr
    return lines[0]


def test_connects_over_tls_as_the_password_user(database: str) -> None:
    """The backend's socket is TLS (verified against the stack CA) and the server sees the user."""
    address = secure_address(database)
    assert address.secure
    assert address.user != "default"
    assert address.password
    backend = ServerBackend(address)
    try:
        marker = uuid.uuid4().hex
        users = backend.query(
            f"SELECT user FROM system.processes WHERE query LIKE '%{marker}%' AND user != ''"
        )
        assert users == [(address.user,)]
        socket = backend._client.connection.socket
        assert isinstance(socket, ssl.SSLSocket), type(socket)
        assert socket.version() in {"TLSv1.2", "TLSv1.3"}
    finally:
        backend.close()


def test_writer_process_writes_over_tls_without_the_password_in_its_command_line(
    database: str,
) -> None:
    """The worker's writer child writes the worked example over TLS; ps never shows the password."""
    writer = WriterProcess(secure_address(database))
    try:
        pid = writer._process.pid
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        assert password() not in cmdline
        sessions, orders = worked_example()
        writer.write(sessions, [], orders)
    finally:
        writer.close()
    backend = ServerBackend(secure_address(database))
    try:
        assert compute_summary(backend, T0, T0 + DAY) == WORKED_EXAMPLE_SUMMARY
    finally:
        backend.close()


def test_replay_over_tls_gives_the_figures_of_the_plain_port_and_the_sql_reference(
    database: str, tmp_path: Path
) -> None:
    """journey replay + summary over TLS equal the plain port's and reference_sql's figures."""
    events = tmp_path / "otto.jsonl"
    events.write_text("".join(json.dumps(e) + "\n" for e in otto_events()))
    folder = tmp_path / "embedded"
    plain_db = f"{database}_plain"
    plain = {"JOURNEY_CLICKHOUSE_URL": database_url(plain_db, CLICKHOUSE_URL)}
    printed: dict[str, object] = {}
    try:
        for label, env in (("tls", secure_env(database)), ("plain", plain)):
            replayed = run_command(["replay", str(events)], env)
            assert replayed.returncode == 0, replayed.stderr
            summary = run_command(["summary", "--json"], env)
            assert summary.returncode == 0, summary.stderr
            assert password() not in replayed.stdout + replayed.stderr + summary.stderr
            printed[label] = json.loads(summary.stdout)
    finally:
        drop_database(plain["JOURNEY_CLICKHOUSE_URL"])
    reference = run_command(["replay", str(events), "--embedded", str(folder), "--raw-events"], {})
    assert reference.returncode == 0, reference.stderr
    with closing(EmbeddedBackend(str(folder))) as backend:
        expected = reference_summary(backend)
    assert expected["events"] == 862, "raw_events should hold every OTTO event"
    assert printed["tls"] == printed["plain"]
    differing = {k: (v, expected[k]) for k, v in printed["tls"].items() if v != expected[k]}
    assert not differing, f"TLS summary vs reference (printed, expected): {differing}"


def test_a_wrong_password_file_fails_in_one_line_naming_the_setting(
    database: str, tmp_path: Path
) -> None:
    """journey replay: a refused login is one line naming the password file, status 2."""
    wrong = tmp_path / "wrong-password"
    wrong.write_text("not-the-password\n")
    env = secure_env(database, JOURNEY_CLICKHOUSE_PASSWORD_FILE=str(wrong))
    events = tmp_path / "empty.jsonl"
    events.write_text("")
    proc = run_command(["replay", str(events)], env)
    assert proc.returncode == 2
    line = assert_one_line_error(proc, "JOURNEY_CLICKHOUSE_PASSWORD_FILE", "refused the login")
    assert "not-the-password" not in line


def test_a_wrong_password_in_the_url_is_not_printed(database: str) -> None:
    """journey summary with user:password@ in the URL: the refusal does not repeat the password."""
    env = secure_env(database, JOURNEY_CLICKHOUSE_PASSWORD_FILE="")
    env["JOURNEY_CLICKHOUSE_URL"] = env["JOURNEY_CLICKHOUSE_URL"].replace(
        "://journey@", "://journey:wrong-Pa55word@"
    )
    proc = run_command(["summary", "--json"], env)
    line = assert_one_line_error(proc, "JOURNEY_CLICKHOUSE_URL", "refused the login")
    assert "wrong-Pa55word" not in proc.stdout + proc.stderr, line


def test_a_malformed_url_with_the_password_does_not_print_it() -> None:
    """A bad port in a URL carrying the real password: the error quotes the URL redacted."""
    url = secure_clickhouse_env()["JOURNEY_CLICKHOUSE_URL"].replace(
        "://journey@", f"://journey:{password()}@"
    )
    bad = url.replace("/default", ":x/default")
    proc = run_command(["migrate", "--clickhouse", bad], {})
    line = assert_one_line_error(proc, "bad port")
    assert "journey:***@" in line


def test_a_server_certificate_from_an_unknown_ca_does_not_verify(
    database: str, tmp_path: Path
) -> None:
    """With the system CAs, or another CA, the server's certificate is refused in one line."""
    other_ca = tmp_path / "other-ca.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(tmp_path / "other-ca.key"), "-out", str(other_ca),
         "-subj", "/CN=not the stack CA", "-addext", "basicConstraints=critical,CA:TRUE"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    for ca_file in ("", str(other_ca)):
        env = secure_env(database, JOURNEY_CLICKHOUSE_SSL_CAFILE=ca_file)
        proc = run_command(["migrate"], env)
        line = assert_one_line_error(proc, "JOURNEY_CLICKHOUSE_SSL_CAFILE", "did not verify")
        assert "CERTIFICATE_VERIFY_FAILED" in line


def test_a_plain_client_on_the_tls_port_is_told_to_use_tls(database: str) -> None:
    """clickhouse:// against the TLS port says to use clickhouses://; the reverse says no TLS."""
    address = secure_address(database)
    with pytest.raises(StorageError, match="use a clickhouses:// URL"):
        ServerBackend(f"clickhouse://127.0.0.1:{address.port}/{database}", connect_timeout_s=3)
    plain = ServerBackend(database_url(database, CLICKHOUSE_URL))
    plain_port = plain.address.port
    plain.close()
    with pytest.raises(StorageError, match="does not speak TLS"):
        ServerBackend(f"clickhouses://127.0.0.1:{plain_port}/{database}", connect_timeout_s=3)
