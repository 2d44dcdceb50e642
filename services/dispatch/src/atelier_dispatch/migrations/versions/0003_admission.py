"""Admission of tasks to their provider (ADR 0020), fallbacks, and stored progress.

Tasks get the provider they run on, whose turn they are (`user_id`), when they started waiting
(`queued_at`) and, for a task that fell back, the profile it runs on and why. Two small tables:
`dispatch_providers` (the row admission locks) and `dispatch_provider_turns` (when each user was
last served). Jobs get the provider's progress of their running tasks and their fallback chain.

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


def upgrade() -> None:
    with op.batch_alter_table("dispatch_jobs") as batch:
        batch.add_column(sa.Column("progress_fraction", sa.Float(), nullable=True))
        batch.add_column(sa.Column("progress_detail", sa.String(), nullable=True))
        batch.add_column(sa.Column("fallbacks", sa.JSON(), nullable=True))

    with op.batch_alter_table("dispatch_tasks") as batch:
        batch.add_column(sa.Column("provider", sa.String(), nullable=True))
        batch.add_column(sa.Column("user_id", sa.String(), nullable=True))
        batch.add_column(sa.Column("queued_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("profile", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("fallback_reason", sa.Text(), nullable=True))

    if not op.get_context().as_sql:
        # Existing tasks run on their job's provider, for their job's user, since it was made.
        op.execute(
            """
            UPDATE dispatch_tasks SET
              provider = (SELECT provider FROM dispatch_jobs WHERE dispatch_jobs.id = job_id),
              user_id = (SELECT user_id FROM dispatch_jobs WHERE dispatch_jobs.id = job_id),
              queued_at = (SELECT created_at FROM dispatch_jobs WHERE dispatch_jobs.id = job_id)
            """
        )

    with op.batch_alter_table("dispatch_tasks") as batch:
        batch.alter_column("provider", existing_type=sa.String(), nullable=False)
        batch.alter_column("user_id", existing_type=sa.String(), nullable=False)
        batch.alter_column("queued_at", existing_type=sa.DateTime(timezone=True), nullable=False)
        batch.create_index(
            "ix_dispatch_tasks_admission", ["provider", "status", "user_id", "queued_at"]
        )

    op.create_table(
        "dispatch_providers",
        sa.Column("provider", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("provider"),
    )
    op.create_table(
        "dispatch_provider_turns",
        sa.Column("provider", sa.String(), nullable=False),
        sa.Column("user_id", sa.String(), nullable=False),
        sa.Column("last_admitted_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("provider", "user_id"),
    )


def downgrade() -> None:
    op.drop_table("dispatch_provider_turns")
    op.drop_table("dispatch_providers")
    with op.batch_alter_table("dispatch_tasks") as batch:
        batch.drop_index("ix_dispatch_tasks_admission")
        for name in ("fallback_reason", "profile", "queued_at", "user_id", "provider"):
            batch.drop_column(name)
    with op.batch_alter_table("dispatch_jobs") as batch:
        batch.drop_column("fallbacks")
        batch.drop_column("progress_detail")
        batch.drop_column("progress_fraction")
