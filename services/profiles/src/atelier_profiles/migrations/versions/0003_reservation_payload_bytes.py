"""profiles_quota_reservation.payload_bytes and an index of each user's unsettled reservations.

A user's jobs in flight are their unsettled reservations; their requests' bytes are bounded per
user (ATELIER_PROFILES_USER_MAX_BYTES_IN_FLIGHT), so one user cannot fill the job stream.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLE = "profiles_quota_reservation"
_INDEX = "profiles_quota_reservation_user_unsettled"


def upgrade() -> None:
    # A database whose tables were made at start-up from the newest models already has both.
    if not op.get_context().as_sql:
        inspector = sa.inspect(op.get_bind())
        columns = {column["name"] for column in inspector.get_columns(_TABLE)}
        indexes = {index["name"] for index in inspector.get_indexes(_TABLE)}
        if "payload_bytes" in columns and _INDEX in indexes:
            return
        if "payload_bytes" in columns:
            _create_index()
            return
    # Reservations made before carried no size: they count as 0 bytes until they settle.
    op.add_column(
        _TABLE, sa.Column("payload_bytes", sa.BigInteger(), nullable=False, server_default="0")
    )
    _create_index()


def _create_index() -> None:
    unsettled = sa.text("settled = false")
    op.create_index(
        _INDEX,
        _TABLE,
        ["user_id"],
        postgresql_where=unsettled,
        sqlite_where=unsettled,
    )


def downgrade() -> None:
    op.drop_index(_INDEX, table_name=_TABLE)
    with op.batch_alter_table(_TABLE) as batch:
        batch.drop_column("payload_bytes")
