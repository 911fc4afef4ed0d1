"""Server URLs and logins: TLS schemes, password sources, and no password in any message."""

from __future__ import annotations

import argparse
import pickle
from pathlib import Path

import pytest

from streams.cli import build_parser, main
from streams.clickhouse.address import (
    ServerAddress,
    is_server_url,
    parse_server_url,
    redact_url,
    server_address,
)
from streams.clickhouse.options import target_from_args
from streams.errors import ConfigError, StorageError
from streams.settings import Settings

SECRET = "s3cr%3At-pw"  # percent-encoded "s3cr:t-pw"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("clickhouse://h/db", ServerAddress("h", 9000, "db")),
        ("clickhouses://h/db", ServerAddress("h", 9440, "db", secure=True)),
        ("clickhouse://h:9440/db?secure=true", ServerAddress("h", 9440, "db", secure=True)),
        ("clickhouse://h?secure=false", ServerAddress("h", 9000, "default")),
        (
            f"clickhouses://ana:{SECRET}@h:19440/shop",
            ServerAddress("h", 19440, "shop", "ana", "s3cr:t-pw", secure=True),
        ),
        ("clickhouse://ana@h:9000/shop", ServerAddress("h", 9000, "shop", "ana")),
    ],
)
def test_urls_name_server_login_and_tls(url: str, expected: ServerAddress) -> None:
    """Scheme or ?secure= picks TLS and its default port 9440; user and password are decoded."""
    assert is_server_url(url)
    assert parse_server_url(url) == expected


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("clickhouse://ana:pw@h:9000/db", "clickhouse://ana:***@h:9000/db"),
        ("clickhouses://ana:p@ss@h/db?secure=1", "clickhouses://ana:***@h/db?secure=1"),
        ("clickhouse://ana:pw@h:notaport/db", "clickhouse://ana:***@h:notaport/db"),
        ("clickhouse://ana:pw@", "clickhouse://ana:***@"),
        ("clickhouse://ana@h/db", "clickhouse://ana@h/db"),
        ("clickhouse://h:9000/db", "clickhouse://h:9000/db"),
        ("/var/lib/journey/clickhouse", "/var/lib/journey/clickhouse"),
    ],
)
def test_redact_url_hides_only_the_password(url: str, shown: str) -> None:
    """The password becomes ***, in well-formed and malformed URLs alike; the rest stays."""
    assert redact_url(url) == shown


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("clickhouse://ana:hunter22@h:port/db", "bad port"),
        ("clickhouse://ana:hunter22@h/db;drop", "letters, digits"),
        ("http://ana:hunter22@h/db", "not a ClickHouse URL"),
        ("clickhouse://ana:hunter22@h/db?verify=false", "unknown URL parameter verify"),
        ("clickhouses://ana:hunter22@h/db?secure=false", "always uses TLS"),
    ],
)
def test_bad_urls_are_refused_without_their_password(url: str, match: str) -> None:
    """Every URL error says what is wrong and quotes the URL with its password redacted."""
    with pytest.raises(StorageError, match=match) as caught:
        parse_server_url(url)
    assert "hunter22" not in str(caught.value)
    assert "ana:***@h" in str(caught.value)


def test_password_comes_from_the_file_without_its_trailing_newline(tmp_path: Path) -> None:
    """JOURNEY_CLICKHOUSE_PASSWORD_FILE: content minus one trailing newline; spaces are kept."""
    secret = tmp_path / "password"
    secret.write_text(" pw with spaces \n")
    settings = Settings.from_env({"JOURNEY_CLICKHOUSE_PASSWORD_FILE": str(secret)})
    address = server_address("clickhouse://ana@h/db", settings)
    assert (address.user, address.password) == ("ana", " pw with spaces ")
    secret.write_text("pw\r\n")
    assert server_address("clickhouse://ana@h/db", settings).password == "pw"


@pytest.mark.parametrize(
    ("content", "match"), [("", "is empty"), ("\n", "is empty"), ("a\nb\n", "more than one line")]
)
def test_an_unusable_password_file_is_refused(tmp_path: Path, content: str, match: str) -> None:
    """An empty or multi-line password file stops the command, naming the setting."""
    secret = tmp_path / "password"
    secret.write_text(content)
    settings = Settings.from_env({"JOURNEY_CLICKHOUSE_PASSWORD_FILE": str(secret)})
    with pytest.raises(ConfigError, match=f"JOURNEY_CLICKHOUSE_PASSWORD_FILE.*{match}"):
        server_address("clickhouse://ana@h/db", settings)


def test_settings_that_cannot_apply_are_refused(tmp_path: Path) -> None:
    """Two passwords, TLS settings with a plain URL, or a missing file: one error each."""
    secret = tmp_path / "password"
    secret.write_text("pw\n")
    both = Settings.from_env({"JOURNEY_CLICKHOUSE_PASSWORD_FILE": str(secret)})
    with pytest.raises(ConfigError, match="given twice") as caught:
        server_address("clickhouse://ana:hunter22@h/db", both)
    assert "hunter22" not in str(caught.value)
    ca = Settings.from_env({"JOURNEY_CLICKHOUSE_SSL_CAFILE": str(secret)})
    with pytest.raises(ConfigError, match="JOURNEY_CLICKHOUSE_SSL_CAFILE is set but"):
        server_address("clickhouse://h/db", ca)
    assert server_address("clickhouses://h/db", ca).ca_file == str(secret)
    names = Settings.from_env({"JOURNEY_CLICKHOUSE_SSL_CHECK_HOSTNAME": "false"})
    with pytest.raises(ConfigError, match="JOURNEY_CLICKHOUSE_SSL_CHECK_HOSTNAME"):
        server_address("clickhouse://h/db", names)
    assert server_address("clickhouses://h/db", names).check_hostname is False
    for name in ("JOURNEY_CLICKHOUSE_PASSWORD_FILE", "JOURNEY_CLICKHOUSE_SSL_CAFILE"):
        with pytest.raises(ConfigError, match=f"{name}=.*not a readable file"):
            Settings.from_env({name: str(tmp_path / "missing")})


def test_the_password_stays_out_of_reprs_names_and_pickles_keep_it() -> None:
    """repr of an address or of the settings never shows it; the writer child still gets it."""
    url = "clickhouses://ana:hunter22@h/db"
    address = parse_server_url(url)
    assert "hunter22" not in repr(address) + address.name
    assert "hunter22" not in repr(Settings(clickhouse_url=url))
    assert pickle.loads(pickle.dumps(address)).password == "hunter22"


def test_a_bad_clickhouse_option_is_refused_without_its_password(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """journey summary --clickhouse with a malformed URL: one line, the password redacted."""
    with pytest.raises(ConfigError) as caught:
        target_from_args(argparse.Namespace(embedded=None, clickhouse="clickhose://a:hunter22@h"))
    assert "hunter22" not in str(caught.value)
    status = main(["migrate", "--clickhouse", "clickhouse://ana:hunter22@h:x/db"])
    err = capsys.readouterr().err
    assert status == 2
    assert "hunter22" not in err
    assert "ana:***@h:x" in err


def test_help_never_shows_a_configured_url(monkeypatch: pytest.MonkeyPatch) -> None:
    """--help of every command prints no password even with one in JOURNEY_CLICKHOUSE_URL."""
    monkeypatch.setenv("JOURNEY_CLICKHOUSE_URL", "clickhouse://ana:hunter22@h/db")
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for command in sub.choices:  # type: ignore[union-attr]
        text = sub.choices[command].format_help()  # type: ignore[index]
        assert "hunter22" not in text, command
