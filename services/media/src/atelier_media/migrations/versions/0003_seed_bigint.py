"""media_items.seed as a 64-bit integer: providers' seeds go up to 2^32 - 2.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Batch mode: an ALTER on PostgreSQL; on SQLite (whose integers are 64-bit anyway) the table
    # is copied so the declared type matches the model.
    with op.batch_alter_table("media_items") as batch:
        batch.alter_column(
            "seed", existing_type=sa.Integer(), type_=sa.BigInteger(), existing_nullable=True
        )


def downgrade() -> None:
    with op.batch_alter_table("media_items") as batch:
        batch.alter_column(
            "seed", existing_type=sa.BigInteger(), type_=sa.Integer(), existing_nullable=True
        )
