"""profiles_provider_credential.allowed_origins: where an operator allowed the key to be sent.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-07
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
    # Keys stored before keep going only to their provider's own endpoint (an empty list) until
    # an operator stores them again with the origins they may go to. A database whose tables
    # were made at start-up from the newest models already has the column.
    if not op.get_context().as_sql:
        columns = sa.inspect(op.get_bind()).get_columns("profiles_provider_credential")
        if any(column["name"] == "allowed_origins" for column in columns):
            return
    op.add_column(
        "profiles_provider_credential",
        sa.Column("allowed_origins", sa.JSON(), nullable=False, server_default="[]"),
    )


def downgrade() -> None:
    with op.batch_alter_table("profiles_provider_credential") as batch:
        batch.drop_column("allowed_origins")
