"""media_assignments: a project's cover and its elements' images (atelier_media.assignments).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Development databases made while this table was created at start-up already have it.
    if not op.get_context().as_sql and sa.inspect(op.get_bind()).has_table("media_assignments"):
        return
    op.create_table(
        "media_assignments",
        sa.Column("project", sa.String(), nullable=False),
        sa.Column("target", sa.String(), nullable=False),
        sa.Column("element_id", sa.String(), nullable=False),
        sa.Column("media_id", sa.String(), nullable=False),
        sa.Column("assigned_by", sa.String(), nullable=False),
        sa.Column("assigned_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("event_id", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("project", "target", "element_id"),
    )


def downgrade() -> None:
    op.drop_table("media_assignments")
