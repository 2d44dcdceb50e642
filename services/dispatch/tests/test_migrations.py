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
from atelier_web import runner


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
    """Tables as start-up made them before migrations (revision 0001's, no version table), with
    a job whose request was stored whole: adopted, and the request moved into columns (0002)."""
    sync_url = database_url.replace("+aiosqlite", "")
    command.upgrade(alembic_config(MIGRATIONS, database_url), "0001")
    engine = sa.create_engine(sync_url, poolclass=sa.NullPool)
    request = {
        "job_id": "job-1",
        "user_id": "u",
        "project": "p",
        "profile": {
            "id": "p1",
            "name": "Sketch",
            "provider": "offline",
            "model": "sketch",
            "credit_cost": 2,
            "timeout_s": 60,
        },
        "prompt": "kept",
        "size": "64x64",
        "count": 2,
        "options": {"seed": 3},
        "target": {"kind": "element", "element_id": "e1"},
        "request_digest": "d" * 64,
    }
    now = datetime.now(UTC)
    try:
        with engine.begin() as connection:
            connection.execute(sa.text("DROP TABLE alembic_version_dispatch"))
            jobs = sa.table(
                "dispatch_jobs",
                *(sa.column(name) for name in ("id", "project", "user_id", "status")),
                sa.column("request", sa.JSON()),
                sa.column("landed"),
                sa.column("failed"),
                sa.column("created_at"),
                sa.column("updated_at"),
            )
            connection.execute(
                jobs.insert().values(
                    id="job-1",
                    project="p",
                    user_id="u",
                    status="queued",
                    request=request,
                    landed=0,
                    failed=0,
                    created_at=now,
                    updated_at=now,
                )
            )
    finally:
        engine.dispose()

    await migrate_to_head(MIGRATIONS, database_url)

    command.check(alembic_config(MIGRATIONS, database_url))
    database = Database(database_url)
    try:
        async with database.session() as session:
            job = await session.get(JobRow, "job-1")
    finally:
        await database.dispose()
    assert job is not None
    assert (job.prompt, job.size, job.count, job.options) == ("kept", "64x64", 2, {"seed": 3})
    assert (job.profile_id, job.provider, job.model, job.credit_cost) == (
        "p1",
        "offline",
        "sketch",
        2,
    )
    assert (job.target_kind, job.target_element_id) == ("element", "e1")
    assert job.profile["timeout_s"] == 60 and job.request_digest == "d" * 64


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
    monkeypatch.setattr(runner, "configure_telemetry", lambda *_, **__: None)
    monkeypatch.setattr(runner, "serve", lambda *_, **__: pytest.fail("served"))
    main.cli(["--migrate-only"])
    command.check(alembic_config(MIGRATIONS, database_url))
