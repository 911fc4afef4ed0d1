"""The embedded chdb backend's one-folder-per-process rule is enforced safely."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.clickhouse.backend import open_backend
from streams.clickhouse.embedded import EmbeddedBackend
from streams.errors import StorageError

pytestmark = pytest.mark.integration


def test_same_folder_is_shared_until_the_last_close(tmp_path: Path) -> None:
    """Two backends on one folder share the engine; closing one leaves the other usable."""
    first = EmbeddedBackend(tmp_path / "ch")
    second = EmbeddedBackend(tmp_path / "ch")
    first.close()
    assert second.query("SELECT 1") == [(1,)]
    second.close()
    second.close()  # idempotent


def test_second_folder_while_one_is_open_is_refused(tmp_path: Path) -> None:
    """Opening another folder while one is open raises StorageError naming the open folder."""
    first = EmbeddedBackend(tmp_path / "a")
    try:
        with pytest.raises(StorageError, match="already open on"):
            EmbeddedBackend(tmp_path / "b")
    finally:
        first.close()
    other = EmbeddedBackend(tmp_path / "b")  # fine once the first is closed
    other.close()


def test_closed_backend_refuses_queries(tmp_path: Path) -> None:
    """A query on a closed backend is a StorageError, not a crash inside chdb."""
    backend = open_backend(str(tmp_path / "ch"))
    backend.close()
    with pytest.raises(StorageError, match="is closed"):
        backend.query("SELECT 1")


def test_sql_errors_name_the_backend(tmp_path: Path) -> None:
    """A refused statement raises StorageError naming the folder and the statement."""
    backend = EmbeddedBackend(tmp_path / "ch")
    try:
        with pytest.raises(StorageError, match=r"embedded ClickHouse in .*nosuchfn"):
            backend.query("SELECT nosuchfn(1)")
    finally:
        backend.close()
