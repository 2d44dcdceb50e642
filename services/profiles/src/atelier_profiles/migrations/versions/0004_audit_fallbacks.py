"""profiles_audit.fallbacks: the images fallback profiles made, each with its profile and why.

Issue 16: a task whose provider is unavailable moves along its profile's fallback chain; the
audit records which profile made each such image and the reason. Entries recorded before have
none (NULL), as have jobs whose own profile made every image.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLE = "profiles_audit"


def upgrade() -> None:
    # A database whose tables were made at start-up from the newest models already has it.
    if not op.get_context().as_sql:
        columns = sa.inspect(op.get_bind()).get_columns(_TABLE)
        if any(column["name"] == "fallbacks" for column in columns):
            return
    op.add_column(_TABLE, sa.Column("fallbacks", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table(_TABLE) as batch:
        batch.drop_column("fallbacks")
