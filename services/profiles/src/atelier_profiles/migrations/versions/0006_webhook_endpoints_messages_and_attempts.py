"""Webhooks (issue 21, ADR 0025): endpoints operators registered, one row per event and
endpoint (its delivery state, so a redelivered event is not sent twice), and every attempt.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _exists(table: str) -> bool:
    # A database whose tables were made at start-up from the newest models already has them.
    return not op.get_context().as_sql and sa.inspect(op.get_bind()).has_table(table)


def upgrade() -> None:
    if _exists("profiles_webhook_endpoint"):  # the three come and go together
        return
    op.create_table(
        "profiles_webhook_attempt",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("endpoint_id", sa.String(length=40), nullable=False),
        sa.Column("webhook_id", sa.String(length=80), nullable=False),
        sa.Column("event_type", sa.String(length=40), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("error", sa.String(length=500), nullable=True),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("profiles_webhook_attempt", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_profiles_webhook_attempt_endpoint_id"), ["endpoint_id"], unique=False
        )

    op.create_table(
        "profiles_webhook_endpoint",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("project", sa.String(length=100), nullable=True),
        sa.Column("events", sa.JSON(), nullable=False),
        sa.Column("sealed_secret", sa.Text(), nullable=False),
        sa.Column("allow_private", sa.Boolean(), nullable=False),
        sa.Column("description", sa.String(length=300), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("profiles_webhook_endpoint", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_profiles_webhook_endpoint_project"), ["project"], unique=False
        )

    op.create_table(
        "profiles_webhook_message",
        sa.Column("endpoint_id", sa.String(length=40), nullable=False),
        sa.Column("webhook_id", sa.String(length=80), nullable=False),
        sa.Column("event_type", sa.String(length=40), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("endpoint_id", "webhook_id"),
    )


def downgrade() -> None:
    op.drop_table("profiles_webhook_message")
    with op.batch_alter_table("profiles_webhook_endpoint", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_profiles_webhook_endpoint_project"))

    op.drop_table("profiles_webhook_endpoint")
    with op.batch_alter_table("profiles_webhook_attempt", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_profiles_webhook_attempt_endpoint_id"))

    op.drop_table("profiles_webhook_attempt")
