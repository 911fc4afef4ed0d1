"""The schemas ship inside the package from the one top-level copy, read as package data."""

from __future__ import annotations

import fnmatch
import tomllib
from importlib import resources
from pathlib import Path

from streams.clickhouse.migrations import MIGRATIONS_DIR, load_migrations
from streams.engine.stages import DEFAULT_RULES_PATH, StageRules, load_stage_rules

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "schemas"


def test_streams_schemas_is_a_link_to_the_top_level_folder() -> None:
    """streams/schemas is a symbolic link to ../schemas: one copy, nothing to drift."""
    link = ROOT / "streams" / "schemas"
    assert link.is_symlink()
    assert link.readlink() == Path("../schemas")
    assert link.resolve() == SCHEMAS.resolve()


def test_every_schema_file_is_declared_package_data() -> None:
    """Each file under schemas/ matches a package-data pattern, so the wheel carries it."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = config["tool"]["setuptools"]["package-data"]["streams"]
    files = [p.relative_to(ROOT).as_posix() for p in SCHEMAS.rglob("*") if p.is_file()]
    assert {"schemas/event.v1.json", "schemas/stages.yaml"} <= set(files)
    for name in files:
        assert any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns), name


def test_the_code_reads_the_schemas_through_importlib_resources() -> None:
    """Migrations, stage rules and the event schema are found as resources of `streams`."""
    data = resources.files("streams").joinpath("schemas")
    for name in ("event.v1.json", "stages.yaml"):
        assert data.joinpath(name).read_bytes() == (SCHEMAS / name).read_bytes()
    assert str(MIGRATIONS_DIR) == str(data.joinpath("clickhouse"))
    assert [m.version for m in load_migrations()] == [
        int(p.name[:4]) for p in sorted((SCHEMAS / "clickhouse").glob("*.sql"))
    ]
    assert load_stage_rules(DEFAULT_RULES_PATH) == StageRules.default()
