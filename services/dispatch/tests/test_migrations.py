"""Dispatch's migrations hold to its models: on an empty database (SQLite, and PostgreSQL when
`ATELIER_TEST_DATABASE_URL` is set) head is exactly the tables the models describe.

`test_head_is_exactly_the_models` is the one that fails when a model changes without a new
revision: add one with `uv run alembic -c services/dispatch/pyproject.toml revision
--autogenerate -m "..."` (docs/operations.md, "Database schemas").
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command

from atelier_database import Database, migrate_to_head
from atelier_database.migrations import alembic_config
from atelier_dispatch import main
from atelier_dispatch.migrations import MIGRATIONS
from atelier_dispatch.repository import TABLES, JobRow
from atelier_dispatch.settings import Settings


def schema(url: str) -> dict[str, Any]:
    engine = sa.create_engine(url.replace("+aiosqlite", ""), poolclass=sa.NullPool)
    try:
        inspector = sa.inspect(engine)
        return {
            table: (
                [(c["name"], str(c["type"]), c["nullable"]) for c in inspector.get_columns(table)],
                sorted(i["name"] or "" for i in inspector.get_indexes(table)),
                [
                    (fk["constrained_columns"], fk["referred_table"])
                    for fk in inspector.get_foreign_keys(table)
                ],
            )
            for table in sorted(inspector.get_table_names())
        }
    finally:
        engine.dispose()


async def test_head_is_exactly_the_models(database_url: str) -> None:
    await migrate_to_head(MIGRATIONS, database_url)
    # Autogenerate's comparison of the database with the models: raises on any difference.
    command.check(alembic_config(MIGRATIONS, database_url))
    expected = {model.__tablename__ for model in TABLES} | {"alembic_version_dispatch"}
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
    try:
        await database.create_tables(TABLES)  # what start-up did before migrations
        now = datetime.now(UTC)
        async with database.session() as session:
            session.add(
                JobRow(
                    id="job-1",
                    project="p",
                    user_id="u",
                    status="queued",
                    request={"prompt": "kept"},
                    created_at=now,
                    updated_at=now,
                )
            )
            await session.commit()

        await migrate_to_head(MIGRATIONS, database_url)

        command.check(alembic_config(MIGRATIONS, database_url))
        async with database.session() as session:
            job = await session.get(JobRow, "job-1")
        assert job is not None and job.request == {"prompt": "kept"}
    finally:
        await database.dispose()


def test_starts_outside_local_without_any_s3_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATELIER_ENVIRONMENT", "production")
    monkeypatch.delenv("ATELIER_S3_SECRET_KEY", raising=False)
    assert Settings().environment == "production"


def test_migrate_only_runs_the_migrations_and_exits(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ATELIER_ENVIRONMENT", "production")
    monkeypatch.setenv("ATELIER_DISPATCH_DATABASE_URL", database_url)
    # Keep the process's logging as pytest set it up; nothing may be served.
    monkeypatch.setattr(main, "configure_telemetry", lambda *_, **__: None)
    monkeypatch.setattr(main, "serve", lambda *_, **__: pytest.fail("served"))
    main.cli(["--migrate-only"])
    command.check(alembic_config(MIGRATIONS, database_url))
