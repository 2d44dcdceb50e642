"""Media's migrations hold to its models: on an empty database (SQLite, and PostgreSQL when
`ATELIER_TEST_DATABASE_URL` is set) head is exactly the tables the models describe.

`test_head_is_exactly_the_models` is the one that fails when a model changes without a new
revision: add one with `uv run alembic -c services/media/pyproject.toml revision
--autogenerate -m "..."` (docs/operations.md, "Database schemas").
"""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command

from atelier_contracts.testing import media_item
from atelier_database import Database, migrate_to_head
from atelier_database.migrations import alembic_config
from atelier_media import main
from atelier_media.assignments import ASSIGNMENT_TABLES
from atelier_media.files import FILE_TABLES
from atelier_media.migrations import MIGRATIONS
from atelier_media.repository import TABLES, MediaRepository
from atelier_web import runner


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
    models = (*TABLES, *ASSIGNMENT_TABLES, *FILE_TABLES)
    expected = {model.__tablename__ for model in models} | {"alembic_version_media"}
    assert set(schema(database_url)) == expected


async def test_migrating_again_changes_nothing(database_url: str) -> None:
    await migrate_to_head(MIGRATIONS, database_url)
    before = schema(database_url)
    await migrate_to_head(MIGRATIONS, database_url)
    assert schema(database_url) == before


async def test_a_database_made_before_migrations_is_adopted_with_its_data(
    database_url: str,
) -> None:
    database = Database(database_url)
    repository = MediaRepository(database)
    item = media_item(id="media-1")
    try:
        await database.create_tables(TABLES)  # what start-up did before migrations
        await repository.insert_if_absent([item])

        await migrate_to_head(MIGRATIONS, database_url)

        command.check(alembic_config(MIGRATIONS, database_url))
        assert await repository.get("media-1") == item
    finally:
        await database.dispose()


async def test_a_seed_past_32_bits_is_stored(database_url: str) -> None:
    # Stability takes seeds up to 2^32 - 2: revision 0003 made the column 64-bit.
    await migrate_to_head(MIGRATIONS, database_url)
    database = Database(database_url)
    repository = MediaRepository(database)
    item = media_item(id="media-big-seed", provider="stability", model="sd3", seed=4_294_967_294)
    try:
        await repository.insert_if_absent([item])
        stored = await repository.get("media-big-seed")
        assert stored is not None and stored.seed == 4_294_967_294
    finally:
        await database.dispose()


def test_migrate_only_needs_no_s3_secret_outside_local(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ATELIER_ENVIRONMENT", "production")
    monkeypatch.delenv("ATELIER_S3_SECRET_KEY", raising=False)
    monkeypatch.setenv("ATELIER_MEDIA_DATABASE_URL", database_url)
    # Keep the process's logging as pytest set it up; nothing may be served.
    monkeypatch.setattr(runner, "configure_telemetry", lambda *_, **__: None)
    monkeypatch.setattr(runner, "serve", lambda *_, **__: pytest.fail("served"))
    main.cli(["--migrate-only"])
    command.check(alembic_config(MIGRATIONS, database_url))
