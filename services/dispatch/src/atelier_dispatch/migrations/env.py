"""Alembic environment of the dispatch service: its own tables and version table, nothing else."""

from atelier_database.migrations import run_env
from atelier_dispatch.migrations import MIGRATIONS
from atelier_dispatch.repository import TABLES

run_env(MIGRATIONS, TABLES)
