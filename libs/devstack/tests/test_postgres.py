"""Throwaway databases on the machine's PostgreSQL (skipped when there is none)."""

import os

import psycopg
import pytest

from atelier_devstack.postgres import throwaway_database

pytestmark = pytest.mark.integration

# The same variable the workspace conftest reads; the default is the machine's own server.
ADMIN_URL = os.environ.get(
    "ATELIER_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


@pytest.fixture(scope="module")
def admin_url() -> str:
    try:
        psycopg.connect(ADMIN_URL, connect_timeout=2).close()
    except psycopg.OperationalError as exc:
        pytest.skip(f"no PostgreSQL at {ADMIN_URL}: {exc}")
    return ADMIN_URL


def database_exists(admin_url: str, name: str) -> bool:
    with psycopg.connect(admin_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_database WHERE datname = %s", (name,)
        ).fetchone()
    return row is not None and row[0] == 1


async def test_database_is_usable_then_dropped_even_with_a_session_open(admin_url: str) -> None:
    sqlalchemy = pytest.importorskip("sqlalchemy.ext.asyncio")

    with throwaway_database(admin_url) as url:
        assert url.startswith("postgresql+psycopg://")
        name = url.rsplit("/", 1)[1]
        assert database_exists(admin_url, name)

        engine = sqlalchemy.create_async_engine(url)
        conn = await engine.connect()
        assert (await conn.exec_driver_sql("SELECT current_database()")).scalar() == name
        # The connection is deliberately left open: the drop must not depend on test hygiene.

    assert not database_exists(admin_url, name)
    await conn.invalidate()  # the server ended this session; don't hand it back to the pool
    await conn.close()
    await engine.dispose()
