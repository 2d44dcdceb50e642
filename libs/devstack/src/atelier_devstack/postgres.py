"""Throwaway databases on an existing PostgreSQL server.

A fresh database per test session (or per test) isolates tests from each other and from
whatever else uses the server, without the cost of running initdb.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

_LIBPQ_SCHEMES = ("postgresql", "postgres")


def _libpq_url(url: str) -> str:
    """Accept an SQLAlchemy-style URL (`postgresql+psycopg://`) where libpq wants `postgresql://`."""
    parts = urlsplit(url)
    scheme = parts.scheme.split("+", 1)[0]
    if scheme not in _LIBPQ_SCHEMES:
        raise ValueError(f"not a PostgreSQL URL: {url!r}")
    return urlunsplit(parts._replace(scheme="postgresql"))


def with_database(url: str, database: str, *, driver: str = "postgresql+psycopg") -> str:
    """`url` pointing at `database`, with the scheme SQLAlchemy needs for `driver`."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(scheme=driver, path=f"/{database}"))


@contextmanager
def throwaway_database(admin_url: str, *, prefix: str = "atelier_test") -> Iterator[str]:
    """Create a uniquely named database, yield its SQLAlchemy async URL, drop it afterwards.

    `admin_url` (e.g. `postgresql://postgres@127.0.0.1:5432/postgres`) must be allowed to create
    databases. The yielded URL uses the same credentials with the `postgresql+psycopg` driver.
    """
    admin = _libpq_url(admin_url)
    # Lowercase letters, digits and underscores: valid unquoted, so psql users can type it.
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    # CREATE/DROP DATABASE cannot run inside a transaction, hence autocommit.
    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield with_database(admin, name)
    finally:
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            # FORCE ends sessions still open (an engine the test did not dispose of); without it
            # the drop fails and the database leaks.
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
