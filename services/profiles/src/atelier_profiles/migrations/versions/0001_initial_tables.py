"""The profiles service's tables as they were when migrations began.

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
    if "profiles_audit" not in present:
        op.create_table(
            "profiles_audit",
            sa.Column("job_id", sa.String(length=100), nullable=False),
            sa.Column("user_id", sa.String(length=200), nullable=False),
            sa.Column("project", sa.String(length=100), nullable=False),
            sa.Column("profile_id", sa.String(length=200), nullable=False),
            sa.Column("profile_name", sa.String(length=120), nullable=False),
            sa.Column("provider", sa.String(length=40), nullable=False),
            sa.Column("model", sa.String(length=200), nullable=False),
            sa.Column("status", sa.String(length=16), nullable=False),
            sa.Column("error_class", sa.String(length=40), nullable=True),
            sa.Column("error_stage", sa.String(length=16), nullable=True),
            sa.Column("error_message", sa.Text(), nullable=True),
            sa.Column("error_detail", sa.Text(), nullable=True),
            sa.Column("prompt", sa.Text(), nullable=False),
            sa.Column("user_prompt", sa.Text(), nullable=False),
            sa.Column("requested", sa.Integer(), nullable=False),
            sa.Column("landed", sa.Integer(), nullable=False),
            sa.Column("failed", sa.Integer(), nullable=False),
            sa.Column("cost_milli", sa.BigInteger(), nullable=False),
            sa.Column("job_created_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint("job_id"),
        )
        op.create_index(
            op.f("ix_profiles_audit_error_class"), "profiles_audit", ["error_class"], unique=False
        )
        op.create_index(
            op.f("ix_profiles_audit_profile_id"), "profiles_audit", ["profile_id"], unique=False
        )
        op.create_index(
            op.f("ix_profiles_audit_status"), "profiles_audit", ["status"], unique=False
        )
        op.create_index(
            op.f("ix_profiles_audit_user_id"), "profiles_audit", ["user_id"], unique=False
        )
        op.create_index("profiles_audit_finished", "profiles_audit", ["finished_at"], unique=False)

    if "profiles_generation_settings" not in present:
        op.create_table(
            "profiles_generation_settings",
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("enabled", sa.Boolean(), nullable=False),
            sa.Column("reason", sa.String(), nullable=True),
            sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint("id"),
        )

    if "profiles_profile" not in present:
        op.create_table(
            "profiles_profile",
            sa.Column("id", sa.String(length=36), nullable=False),
            sa.Column("name", sa.String(length=120), nullable=False),
            sa.Column("provider", sa.String(length=40), nullable=False),
            sa.Column("model", sa.String(length=200), nullable=False),
            sa.Column("enabled", sa.Boolean(), nullable=False),
            sa.Column("sizes", sa.JSON(), nullable=False),
            sa.Column("default_size", sa.String(length=16), nullable=False),
            sa.Column("counts", sa.JSON(), nullable=False),
            sa.Column("options", sa.JSON(), nullable=False),
            sa.Column("max_reference_images", sa.Integer(), nullable=False),
            sa.Column("prompt_max_length", sa.Integer(), nullable=False),
            sa.Column("timeout_s", sa.Float(), nullable=False),
            sa.Column("sort_order", sa.Integer(), nullable=False),
            sa.Column("credit_cost", sa.Float(), nullable=False),
            sa.Column("base_url", sa.String(length=2000), nullable=True),
            sa.Column("provider_config", sa.JSON(), nullable=False),
            sa.Column("fallback_profile_id", sa.String(length=36), nullable=True),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint("id"),
        )
        op.create_index(
            "profiles_profile_name_lower_key",
            "profiles_profile",
            [sa.literal_column("lower(name)")],
            unique=True,
        )
    else:
        # The one column added to an existing table before migrations (start-up used to add it).
        columns = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("profiles_profile")}
        if "fallback_profile_id" not in columns:
            op.add_column(
                "profiles_profile",
                sa.Column("fallback_profile_id", sa.String(length=36), nullable=True),
            )

    if "profiles_provider_credential" not in present:
        op.create_table(
            "profiles_provider_credential",
            sa.Column("provider", sa.String(length=40), nullable=False),
            sa.Column("ciphertext", sa.Text(), nullable=False),
            sa.Column("hint", sa.String(length=16), nullable=False),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint("provider"),
        )

    if "profiles_quota_override" not in present:
        op.create_table(
            "profiles_quota_override",
            sa.Column("user_id", sa.String(length=200), nullable=False),
            sa.Column("credits_milli", sa.BigInteger(), nullable=True),
            sa.Column("note", sa.String(length=500), nullable=True),
            sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint("user_id"),
        )

    if "profiles_quota_policy" not in present:
        op.create_table(
            "profiles_quota_policy",
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("credits_milli", sa.BigInteger(), nullable=True),
            sa.Column("period", sa.String(length=8), nullable=False),
            sa.Column("rate_limit_count", sa.Integer(), nullable=True),
            sa.Column("rate_limit_window_s", sa.Float(), nullable=False),
            sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint("id"),
        )

    if "profiles_quota_reservation" not in present:
        op.create_table(
            "profiles_quota_reservation",
            sa.Column("job_id", sa.String(length=100), nullable=False),
            sa.Column("user_id", sa.String(length=200), nullable=False),
            sa.Column("project", sa.String(length=100), nullable=False),
            sa.Column("profile_id", sa.String(length=200), nullable=False),
            sa.Column("period_key", sa.String(length=10), nullable=False),
            sa.Column("count", sa.Integer(), nullable=False),
            sa.Column("credits_per_image_milli", sa.BigInteger(), nullable=False),
            sa.Column("reserved_milli", sa.BigInteger(), nullable=False),
            sa.Column("settled", sa.Boolean(), nullable=False),
            sa.Column("refunded_milli", sa.BigInteger(), nullable=False),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("settled_at", sa.DateTime(timezone=True), nullable=True),
            sa.PrimaryKeyConstraint("job_id"),
        )
        op.create_index(
            "profiles_quota_reservation_user_created",
            "profiles_quota_reservation",
            ["user_id", "created_at"],
            unique=False,
        )

    if "profiles_quota_usage" not in present:
        op.create_table(
            "profiles_quota_usage",
            sa.Column("user_id", sa.String(length=200), nullable=False),
            sa.Column("period_key", sa.String(length=10), nullable=False),
            sa.Column("used_milli", sa.BigInteger(), nullable=False),
            sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint("user_id", "period_key"),
        )


def downgrade() -> None:
    op.drop_table("profiles_quota_usage")
    op.drop_index(
        "profiles_quota_reservation_user_created", table_name="profiles_quota_reservation"
    )
    op.drop_table("profiles_quota_reservation")
    op.drop_table("profiles_quota_policy")
    op.drop_table("profiles_quota_override")
    op.drop_table("profiles_provider_credential")
    op.drop_index("profiles_profile_name_lower_key", table_name="profiles_profile")
    op.drop_table("profiles_profile")
    op.drop_table("profiles_generation_settings")
    op.drop_index("profiles_audit_finished", table_name="profiles_audit")
    op.drop_index(op.f("ix_profiles_audit_user_id"), table_name="profiles_audit")
    op.drop_index(op.f("ix_profiles_audit_status"), table_name="profiles_audit")
    op.drop_index(op.f("ix_profiles_audit_profile_id"), table_name="profiles_audit")
    op.drop_index(op.f("ix_profiles_audit_error_class"), table_name="profiles_audit")
    op.drop_table("profiles_audit")


def _present_tables() -> set[str]:
    # `upgrade --sql` has no database to look at: it writes the DDL for an empty one.
    if op.get_context().as_sql:
        return set()
    return set(sa.inspect(op.get_bind()).get_table_names())
