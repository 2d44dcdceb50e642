"""Alembic environment of the media service: its own tables and version table, nothing else."""

from atelier_database.migrations import run_env
from atelier_media.assignments import ASSIGNMENT_TABLES
from atelier_media.files import FILE_TABLES
from atelier_media.migrations import MIGRATIONS
from atelier_media.repository import TABLES

run_env(MIGRATIONS, (*TABLES, *ASSIGNMENT_TABLES, *FILE_TABLES))
