"""Fixtures every test suite in the workspace may use."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from atelier_devstack import throwaway_database


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database: a SQLite file, and a throwaway PostgreSQL database when
    `ATELIER_TEST_DATABASE_URL` names a server (`.ci/run` sets it when one answers)."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'test.db'}"
        return
    admin_url = os.environ.get("ATELIER_TEST_DATABASE_URL")
    if not admin_url:
        pytest.skip("ATELIER_TEST_DATABASE_URL is not set: no PostgreSQL server to test on")
    with throwaway_database(admin_url) as url:
        yield url
