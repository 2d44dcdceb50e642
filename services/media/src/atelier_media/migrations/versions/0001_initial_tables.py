"""The media service's tables as they were when migrations began.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A database made before migrations existed (tables created at start-up) already has some or
    # all of these tables, with data: create only the missing ones, so adopting it keeps the data.
    present = _present_tables()
    if "media_items" not in present:
        op.create_table(
            "media_items",
            sa.Column("id", sa.String(), nullable=False),
            sa.Column("project", sa.String(), nullable=False),
            sa.Column("job_id", sa.String(), nullable=False),
            sa.Column("task_id", sa.String(), nullable=False),
            sa.Column("index", sa.Integer(), nullable=False),
            sa.Column("content_type", sa.String(), nullable=False),
            sa.Column("width", sa.Integer(), nullable=False),
            sa.Column("height", sa.Integer(), nullable=False),
            sa.Column("size_bytes", sa.Integer(), nullable=False),
            sa.Column("sha256", sa.String(), nullable=False),
            sa.Column("original_key", sa.String(), nullable=False),
            sa.Column("thumbnail_key", sa.String(), nullable=False),
            sa.Column("profile_id", sa.String(), nullable=False),
            sa.Column("provider", sa.String(), nullable=False),
            sa.Column("model", sa.String(), nullable=False),
            sa.Column("prompt", sa.Text(), nullable=False),
            sa.Column("size", sa.String(), nullable=False),
            sa.Column("seed", sa.Integer(), nullable=True),
            sa.Column("revised_prompt", sa.Text(), nullable=True),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint("id"),
        )
        op.create_index(op.f("ix_media_items_job_id"), "media_items", ["job_id"], unique=False)
        op.create_index(
            "ix_media_items_project_created_at",
            "media_items",
            ["project", "created_at"],
            unique=False,
        )


def downgrade() -> None:
    op.drop_index("ix_media_items_project_created_at", table_name="media_items")
    op.drop_index(op.f("ix_media_items_job_id"), table_name="media_items")
    op.drop_table("media_items")


def _present_tables() -> set[str]:
    # `upgrade --sql` has no database to look at: it writes the DDL for an empty one.
    if op.get_context().as_sql:
        return set()
    return set(sa.inspect(op.get_bind()).get_table_names())
