"""The one clock: every time Atelier stores or sends is an aware UTC datetime."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(moment: datetime) -> datetime:
    """`moment` in UTC. A naive one is taken as UTC: SQLite hands back what we stored (always
    UTC) without a zone; PostgreSQL answers in the session's zone."""
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
