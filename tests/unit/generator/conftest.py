"""Shared fixtures for the generator tests: the v1 contract validator."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

SCHEMA_PATH = Path(__file__).resolve().parents[3] / "schemas" / "event.v1.json"


@pytest.fixture(scope="session")
def validator() -> Draft202012Validator:
    """A Draft 2020-12 validator for the v1 event contract."""
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)
