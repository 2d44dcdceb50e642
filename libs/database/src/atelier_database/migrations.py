"""Alembic migrations per service, run from code: at start-up, or as a one-shot job.

Each service with tables keeps its own script directory (`atelier_<service>/migrations/`, whose
`env.py` calls `run_env` with that service's tables) and its own version table
(`alembic_version_<service>`), so services can share one database without seeing each other's
tables or revisions.
"""

from __future__ import annotations

import asyncio
import os
import threading
import zlib
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from alembic import command, context
from alembic.config import Config
from sqlalchemy import Connection, MetaData, Table, pool, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlmodel import SQLModel
from sqlmodel.sql.sqltypes import AutoString

from atelier_database.engine import normalize_url
from atelier_settings import default_database_url


@dataclass(frozen=True)
class Migrations:
    """One service's migrations: where its scripts live and which table records its revision."""

    service: str
    script_location: Path

    @property
    def version_table(self) -> str:
        return f"alembic_version_{self.service}"

    def default_url(self) -> str:
        """The URL the service itself would use: `ATELIER_<SERVICE>_DATABASE_URL`, else
        `DATABASE_URL`, else its SQLite file under var/ (for `alembic` run by hand)."""
        own = os.environ.get(f"ATELIER_{self.service.upper()}_DATABASE_URL")
        return own or default_database_url(self.service)

    def upgrade(self, url: str) -> None:
        """Bring the database at `url` to the newest revision (what `--migrate-only` runs)."""
        upgrade_to_head(self, url)


def alembic_config(migrations: Migrations, url: str) -> Config:
    """A Config built in code: no alembic.ini, nothing read from the working directory."""
    config = Config()
    config.set_main_option("script_location", str(migrations.script_location))
    # Not a main option: those go through ConfigParser interpolation, which a URL-encoded
    # password (`%40`) would break.
    config.attributes["url"] = url
    return config


# Alembic keeps the running environment in module globals (`alembic.context`): two migrations at
# once in one process (services sharing a test process) would mix them up.
_ONE_AT_A_TIME = threading.Lock()


def upgrade_to_head(migrations: Migrations, url: str) -> None:
    with _ONE_AT_A_TIME:
        command.upgrade(alembic_config(migrations, url), "head")


async def migrate_to_head(migrations: Migrations, url: str) -> None:
    """Bring the service's tables to the newest revision; a no-op when they are there already.

    Alembic is synchronous and `env.py` runs the async engine in an event loop of its own, so
    it runs in a thread.
    """
    await asyncio.to_thread(upgrade_to_head, migrations, url)


# --- env.py ------------------------------------------------------------------------------------


def run_env(migrations: Migrations, tables: Iterable[Table | type[SQLModel]]) -> None:
    """The whole of a service's `env.py`: migrate (or compare against) its own tables only.

    In one process (tests, the dev stack) SQLModel's shared metadata holds every service's tables,
    and in a shared database other services' tables and version tables are present: both are left
    out of autogenerate's comparison by name.
    """
    own: list[Table] = [t if isinstance(t, Table) else t.__table__ for t in tables]  # type: ignore[attr-defined]
    names = {table.name for table in own}
    metadata: MetaData = own[0].metadata

    def include_name(name: str | None, type_: str, _parents: Any) -> bool:
        return type_ != "table" or name in names

    def include_object(
        _object: Any, name: str | None, type_: str, _reflected: bool, _compare_to: Any
    ) -> bool:
        return type_ != "table" or name in names

    config = context.config
    url = normalize_url(
        config.attributes.get("url")
        or context.get_x_argument(as_dictionary=True).get("url")
        or migrations.default_url()
    )
    options: dict[str, Any] = {
        "target_metadata": metadata,
        "version_table": migrations.version_table,
        "include_name": include_name,
        "include_object": include_object,
        "compare_type": True,
        # SQLite alters a table by copying it: batch operations serve both databases (plain
        # ALTERs on PostgreSQL), whichever one a revision was generated against.
        "render_as_batch": True,
        "render_item": _render_item,
    }
    if context.is_offline_mode():  # `alembic upgrade head --sql`: print the DDL
        context.configure(url=url, literal_binds=True, **options)
        with context.begin_transaction():
            context.run_migrations()
        return
    _run_to_completion(_run_online(url, migrations.version_table, options))


def _run_to_completion(migration: Coroutine[Any, Any, None]) -> None:
    """`asyncio.run`, also when the caller is inside an event loop (a `command.check` in an async
    test): then in a thread of its own."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(migration)
        return
    failure: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(migration)
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=run, name="alembic-env")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]


def _render_item(type_: str, obj: Any, _autogen_context: Any) -> str | Literal[False]:
    # SQLModel's AutoString is a plain VARCHAR: revisions say `sa.String` and never import
    # sqlmodel, so they keep working whatever becomes of the models.
    if type_ == "type" and isinstance(obj, AutoString):
        return f"sa.String(length={obj.length})" if obj.length else "sa.String()"
    return False


async def _run_online(url: str, version_table: str, options: dict[str, Any]) -> None:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(url, poolclass=pool.NullPool)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run_migrations, version_table, options)
    finally:
        await engine.dispose()


def _run_migrations(connection: Connection, version_table: str, options: dict[str, Any]) -> None:
    context.configure(connection=connection, **options)
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            # Replicas starting together: one migrates, the others wait for its commit here and
            # then find the database at head. Released with the transaction.
            key = zlib.crc32(version_table.encode())
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
        context.run_migrations()
