"""Async SQLModel engine set-up: SQLite files by default, PostgreSQL when the URL says so; each
service's Alembic migrations, run to head at start-up or by a one-shot job."""

from atelier_database.engine import Database
from atelier_database.migrations import Migrations, migrate_to_head, upgrade_to_head

__all__ = ["Database", "Migrations", "migrate_to_head", "upgrade_to_head"]
