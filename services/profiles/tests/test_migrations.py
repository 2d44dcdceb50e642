"""The profiles service's migrations hold to its models: on an empty database (SQLite, and
PostgreSQL when `ATELIER_TEST_DATABASE_URL` is set) head is exactly the tables the models describe.

`test_head_is_exactly_the_models` is the one that fails when a model changes without a new
revision: add one with `uv run alembic -c services/profiles/pyproject.toml revision
--autogenerate -m "..."` (docs/operations.md, "Database schemas").
"""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command

from atelier_contracts.errors import Conflict
from atelier_database import Database, migrate_to_head
from atelier_database.migrations import alembic_config
from atelier_profiles import main
from atelier_profiles.migrations import MIGRATIONS
from atelier_profiles.repository import ProfileRepository
from atelier_profiles.service import ProfileService
from atelier_profiles.tables import all_tables
from atelier_web import runner

from .conftest import profile_fields

# SQLite cannot reflect the lower(name) index, so autogenerate compares it on PostgreSQL only;
# `test_names_stay_unique_regardless_of_case_after_migrating` covers it on both.
pytestmark = [
    pytest.mark.filterwarnings("ignore:autogenerate skipping metadata-specified expression"),
    pytest.mark.filterwarnings("ignore:Skipped unsupported reflection of expression-based"),
]


def schema(url: str) -> dict[str, Any]:
    engine = sa.create_engine(url.replace("+aiosqlite", ""), poolclass=sa.NullPool)
    try:
        inspector = sa.inspect(engine)
        return {
            table: (
                [(c["name"], str(c["type"]), c["nullable"]) for c in inspector.get_columns(table)],
                sorted(i["name"] or "" for i in inspector.get_indexes(table)),
            )
            for table in sorted(inspector.get_table_names())
        }
    finally:
        engine.dispose()


async def test_head_is_exactly_the_models(database_url: str) -> None:
    await migrate_to_head(MIGRATIONS, database_url)
    # Autogenerate's comparison of the database with the models: raises on any difference.
    command.check(alembic_config(MIGRATIONS, database_url))
    expected = {table.name for table in all_tables()} | {"alembic_version_profiles"}
    assert set(schema(database_url)) == expected


async def test_migrating_again_changes_nothing(database_url: str) -> None:
    await migrate_to_head(MIGRATIONS, database_url)
    before = schema(database_url)
    await migrate_to_head(MIGRATIONS, database_url)
    assert schema(database_url) == before


async def test_names_stay_unique_regardless_of_case_after_migrating(database_url: str) -> None:
    await migrate_to_head(MIGRATIONS, database_url)
    database = Database(database_url)

    async def publish(_: Any) -> None:
        return None

    service = ProfileService(ProfileRepository(database), publish)
    try:
        await service.create_profile(profile_fields(name="Sketch"))
        with pytest.raises(Conflict):
            await service.create_profile(profile_fields(name="sketch"))
    finally:
        await database.dispose()


async def test_a_database_made_before_migrations_is_adopted_with_its_data(
    database_url: str,
) -> None:
    """Tables created at start-up by an older version, without the column added last."""
    database = Database(database_url)
    repository = ProfileRepository(database)
    try:
        await repository.create_tables()
        kept = await repository.insert_profile(profile_fields())
        async with database.engine.begin() as conn:
            await conn.execute(
                sa.text("ALTER TABLE profiles_profile DROP COLUMN fallback_profile_id")
            )

        await migrate_to_head(MIGRATIONS, database_url)

        command.check(alembic_config(MIGRATIONS, database_url))
        assert await repository.get_profile(kept.id) == kept
    finally:
        await database.dispose()


def test_migrate_only_needs_no_secret_outside_local(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ATELIER_ENVIRONMENT", "production")
    monkeypatch.setenv("ATELIER_PROFILES_DATABASE_URL", database_url)
    # Keep the process's logging as pytest set it up; nothing may be served.
    monkeypatch.setattr(runner, "configure_telemetry", lambda *_, **__: None)
    monkeypatch.setattr(runner, "serve", lambda *_, **__: pytest.fail("served"))
    main.cli(["--migrate-only"])
    command.check(alembic_config(MIGRATIONS, database_url))
