"""What dispatch needs of a request, in columns of its own instead of the whole request as JSON
(ADR 0018): views, listings and transitions read columns; nothing parses the request again.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-07
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Added nullable, filled from each row's request, then made NOT NULL where the model says so.
_COLUMNS: tuple[tuple[str, sa.types.TypeEngine[Any], bool], ...] = (
    ("profile_id", sa.String(), False),
    ("profile_name", sa.String(), False),
    ("provider", sa.String(), False),
    ("model", sa.String(), False),
    ("credit_cost", sa.Float(), False),
    ("profile", sa.JSON(), False),
    ("prompt", sa.Text(), False),
    ("size", sa.String(), False),
    ("count", sa.Integer(), False),
    ("options", sa.JSON(), False),
    ("target_kind", sa.String(), False),
    ("target_element_id", sa.String(), True),
    ("request_digest", sa.String(), True),
)


def _columns_of(request: dict[str, Any]) -> dict[str, Any]:
    profile = request.get("profile") or {}
    target = request.get("target") or {}
    return {
        "profile_id": profile.get("id", ""),
        "profile_name": profile.get("name", ""),
        "provider": profile.get("provider", ""),
        "model": profile.get("model", ""),
        "credit_cost": float(profile.get("credit_cost", 0)),
        "profile": profile,
        "prompt": request.get("prompt", ""),
        "size": request.get("size", ""),
        "count": int(request.get("count", 1)),
        "options": request.get("options") or {},
        "target_kind": target.get("kind", "media"),
        "target_element_id": target.get("element_id"),
        "request_digest": request.get("request_digest"),
    }


def upgrade() -> None:
    with op.batch_alter_table("dispatch_jobs") as batch:
        for name, kind, _ in _COLUMNS:
            batch.add_column(sa.Column(name, kind, nullable=True))

    if not op.get_context().as_sql:
        jobs = sa.table(
            "dispatch_jobs",
            sa.column("id", sa.String()),
            sa.column("request", sa.JSON()),
            *(sa.column(name, kind) for name, kind, _ in _COLUMNS),
        )
        bind = op.get_bind()
        rows = bind.execute(sa.select(jobs.c.id, jobs.c.request)).all()
        for job_id, request in rows:
            stored = json.loads(request) if isinstance(request, str) else (request or {})
            bind.execute(jobs.update().where(jobs.c.id == job_id).values(**_columns_of(stored)))

    with op.batch_alter_table("dispatch_jobs") as batch:
        for name, kind, nullable in _COLUMNS:
            if not nullable:
                batch.alter_column(name, existing_type=kind, nullable=False)
        batch.drop_column("request")


def downgrade() -> None:
    with op.batch_alter_table("dispatch_jobs") as batch:
        batch.add_column(sa.Column("request", sa.JSON(), nullable=True))
    if not op.get_context().as_sql:
        jobs = sa.table(
            "dispatch_jobs",
            sa.column("id", sa.String()),
            sa.column("user_id", sa.String()),
            sa.column("project", sa.String()),
            sa.column("request", sa.JSON()),
            *(sa.column(name, kind) for name, kind, _ in _COLUMNS),
        )
        bind = op.get_bind()
        for row in bind.execute(sa.select(jobs)).mappings().all():
            request = {
                "job_id": row["id"],
                "user_id": row["user_id"],
                "project": row["project"],
                "profile": row["profile"],
                "prompt": row["prompt"],
                "size": row["size"],
                "count": row["count"],
                "options": row["options"],
                "target": {"kind": row["target_kind"], "element_id": row["target_element_id"]},
                "request_digest": row["request_digest"],
            }
            bind.execute(jobs.update().where(jobs.c.id == row["id"]).values(request=request))
    with op.batch_alter_table("dispatch_jobs") as batch:
        batch.alter_column("request", existing_type=sa.JSON(), nullable=False)
        for name, _, _ in reversed(_COLUMNS):
            batch.drop_column(name)
