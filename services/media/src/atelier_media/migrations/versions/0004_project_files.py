"""Project files (atelier_media.files); media items' source and delivered mark.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A database whose tables were created from the models at start-up (before migrations) may
    # already have any of this: add only what is missing, so adopting it keeps its data.
    columns, indexes, tables = _present()
    if "source" not in columns:
        # Every row before this revision is a generated image.
        op.add_column(
            "media_items",
            sa.Column("source", sa.String(), nullable=False, server_default="generated"),
        )
    if "delivered_at" not in columns:
        op.add_column(
            "media_items", sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True)
        )
    if "ix_media_items_project_sha256" not in indexes:
        op.create_index(
            "ix_media_items_project_sha256", "media_items", ["project", "sha256"], unique=False
        )
    if "project_files" not in tables:
        op.create_table(
            "project_files",
            sa.Column("project", sa.String(), nullable=False),
            sa.Column("filename", sa.String(), nullable=False),
            sa.Column("content_type", sa.String(), nullable=False),
            sa.Column("size_bytes", sa.BigInteger(), nullable=False),
            sa.Column("sha256", sa.String(), nullable=False),
            sa.Column("uploaded_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("uploaded_by", sa.String(), nullable=False),
            sa.Column("media_id", sa.String(), nullable=True),
            sa.Column("object_key", sa.String(), nullable=False),
            sa.PrimaryKeyConstraint("project", "filename"),
        )


def downgrade() -> None:
    op.drop_table("project_files")
    op.drop_index("ix_media_items_project_sha256", table_name="media_items")
    with op.batch_alter_table("media_items") as batch:
        batch.drop_column("delivered_at")
        batch.drop_column("source")


def _present() -> tuple[set[str], set[str], set[str]]:
    # `upgrade --sql` has no database to look at: it writes the DDL for the previous revision.
    if op.get_context().as_sql:
        return set(), set(), set()
    inspector = sa.inspect(op.get_bind())
    columns = {column["name"] for column in inspector.get_columns("media_items")}
    indexes = {index["name"] or "" for index in inspector.get_indexes("media_items")}
    return columns, indexes, set(inspector.get_table_names())
