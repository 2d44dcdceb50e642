"""Alembic environment of the profiles service: its own tables and version table, nothing else."""

from atelier_database.migrations import run_env
from atelier_profiles.migrations import MIGRATIONS
from atelier_profiles.tables import all_tables

run_env(MIGRATIONS, all_tables())
