"""Async SQLModel engine set-up: SQLite files by default, PostgreSQL when the URL says so."""

from atelier_database.engine import Database

__all__ = ["Database"]
