"""The dispatch service's tables as they were when migrations began.

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
    if "dispatch_jobs" not in present:
        op.create_table(
            "dispatch_jobs",
            sa.Column("id", sa.String(), nullable=False),
            sa.Column("project", sa.String(), nullable=False),
            sa.Column("user_id", sa.String(), nullable=False),
            sa.Column("status", sa.String(), nullable=False),
            sa.Column("request", sa.JSON(), nullable=False),
            sa.Column("assembled", sa.JSON(), nullable=True),
            sa.Column("error", sa.JSON(), nullable=True),
            sa.Column("landed", sa.Integer(), nullable=False),
            sa.Column("failed", sa.Integer(), nullable=False),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("deadline_at", sa.DateTime(timezone=True), nullable=True),
            sa.PrimaryKeyConstraint("id"),
        )
        op.create_index(
            op.f("ix_dispatch_jobs_deadline_at"), "dispatch_jobs", ["deadline_at"], unique=False
        )
        op.create_index(
            op.f("ix_dispatch_jobs_project"), "dispatch_jobs", ["project"], unique=False
        )
        op.create_index(op.f("ix_dispatch_jobs_status"), "dispatch_jobs", ["status"], unique=False)
        op.create_index(
            op.f("ix_dispatch_jobs_user_id"), "dispatch_jobs", ["user_id"], unique=False
        )

    if "dispatch_job_images" not in present:
        op.create_table(
            "dispatch_job_images",
            sa.Column("media_id", sa.String(), nullable=False),
            sa.Column("job_id", sa.String(), nullable=False),
            sa.Column("task_id", sa.String(), nullable=False),
            sa.Column("index", sa.Integer(), nullable=False),
            sa.Column("width", sa.Integer(), nullable=False),
            sa.Column("height", sa.Integer(), nullable=False),
            sa.Column("content_type", sa.String(), nullable=False),
            sa.ForeignKeyConstraint(["job_id"], ["dispatch_jobs.id"]),
            sa.PrimaryKeyConstraint("media_id"),
        )
        op.create_index(
            op.f("ix_dispatch_job_images_job_id"), "dispatch_job_images", ["job_id"], unique=False
        )

    if "dispatch_tasks" not in present:
        op.create_table(
            "dispatch_tasks",
            sa.Column("id", sa.String(), nullable=False),
            sa.Column("job_id", sa.String(), nullable=False),
            sa.Column("first_index", sa.Integer(), nullable=False),
            sa.Column("n", sa.Integer(), nullable=False),
            sa.Column("status", sa.String(), nullable=False),
            sa.Column("attempt", sa.Integer(), nullable=False),
            sa.Column("error", sa.JSON(), nullable=True),
            sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
            sa.ForeignKeyConstraint(["job_id"], ["dispatch_jobs.id"]),
            sa.PrimaryKeyConstraint("id"),
        )
        op.create_index(
            op.f("ix_dispatch_tasks_job_id"), "dispatch_tasks", ["job_id"], unique=False
        )
        op.create_index(
            op.f("ix_dispatch_tasks_next_attempt_at"),
            "dispatch_tasks",
            ["next_attempt_at"],
            unique=False,
        )


def downgrade() -> None:
    op.drop_index(op.f("ix_dispatch_tasks_next_attempt_at"), table_name="dispatch_tasks")
    op.drop_index(op.f("ix_dispatch_tasks_job_id"), table_name="dispatch_tasks")
    op.drop_table("dispatch_tasks")
    op.drop_index(op.f("ix_dispatch_job_images_job_id"), table_name="dispatch_job_images")
    op.drop_table("dispatch_job_images")
    op.drop_index(op.f("ix_dispatch_jobs_user_id"), table_name="dispatch_jobs")
    op.drop_index(op.f("ix_dispatch_jobs_status"), table_name="dispatch_jobs")
    op.drop_index(op.f("ix_dispatch_jobs_project"), table_name="dispatch_jobs")
    op.drop_index(op.f("ix_dispatch_jobs_deadline_at"), table_name="dispatch_jobs")
    op.drop_table("dispatch_jobs")


def _present_tables() -> set[str]:
    # `upgrade --sql` has no database to look at: it writes the DDL for an empty one.
    if op.get_context().as_sql:
        return set()
    return set(sa.inspect(op.get_bind()).get_table_names())
