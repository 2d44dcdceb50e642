"""profiles_profile.price_per_image_usd and profiles_audit.receipt (ADR 0024).

The estimate shows the provider's price in money where an admin gave the profile one; the audit
keeps each finished job's receipt (each image charged or not, and why). Rows written before have
neither (NULL).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-20
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ADDED = (
    ("profiles_profile", sa.Column("price_per_image_usd", sa.Float(), nullable=True)),
    ("profiles_audit", sa.Column("receipt", sa.JSON(), nullable=True)),
)


def upgrade() -> None:
    for table, column in _ADDED:
        # A database whose tables were made at start-up from the newest models already has it.
        if not op.get_context().as_sql:
            existing = sa.inspect(op.get_bind()).get_columns(table)
            if any(c["name"] == column.name for c in existing):
                continue
        op.add_column(table, column)


def downgrade() -> None:
    for table, column in _ADDED:
        with op.batch_alter_table(table) as batch:
            batch.drop_column(column.name)
