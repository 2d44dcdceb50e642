"""The profiles service's tables: storage shapes only.

SQLModel table models skip validation, so nothing outside the repositories sees them except as
rows read back (`CredentialRow`, `QuotaOverrideRow`, `AuditRow`). The migrations
(`atelier_profiles.migrations`) are held to exactly `all_tables()` by a test.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import uuid4

from sqlalchemy import JSON, BigInteger, Column, DateTime, Index, Table, Text, func
from sqlmodel import Field, SQLModel

from atelier_profiles.webhooks_repository import WEBHOOK_TABLES

# The single-row tables (the global switch, the quota policy) keep their row under this id.
SETTINGS_ROW_ID = 1


def _timestamp_column() -> Any:
    return Column(DateTime(timezone=True), nullable=False)


def _json_column() -> Any:
    return Column(JSON, nullable=False)


class ProfileRow(SQLModel, table=True):
    __tablename__ = "profiles_profile"

    id: str = Field(default_factory=lambda: str(uuid4()), primary_key=True, max_length=36)
    name: str = Field(max_length=120)
    provider: str = Field(max_length=40)
    model: str = Field(max_length=200)
    enabled: bool = True
    sizes: list[str] = Field(sa_column=_json_column())
    default_size: str = Field(max_length=16)
    counts: list[int] = Field(sa_column=_json_column())
    options: list[dict[str, Any]] = Field(sa_column=_json_column())
    max_reference_images: int
    prompt_max_length: int
    timeout_s: float
    sort_order: int = 0
    credit_cost: float
    price_per_image_usd: float | None = None
    base_url: str | None = Field(default=None, max_length=2000)
    provider_config: dict[str, Any] = Field(sa_column=_json_column())
    fallback_profile_id: str | None = Field(default=None, max_length=36)
    created_at: datetime = Field(sa_column=_timestamp_column())
    updated_at: datetime = Field(sa_column=_timestamp_column())


PROFILE_TABLE: Table = ProfileRow.__table__  # type: ignore[attr-defined]

# Names are unique regardless of case ("Sketch" and "sketch" would be indistinguishable in a
# picker). The index is the guard against two admins racing; the service relies on it alone.
Index("profiles_profile_name_lower_key", func.lower(PROFILE_TABLE.c.name), unique=True)


class GenerationSettingsRow(SQLModel, table=True):
    """The global switch: a single row (id 1); absent means "on", as on a fresh install."""

    __tablename__ = "profiles_generation_settings"

    id: int = Field(default=SETTINGS_ROW_ID, primary_key=True)
    enabled: bool = True
    reason: str | None = None
    updated_at: datetime = Field(sa_column=_timestamp_column())


def _big_int_column(*, nullable: bool = False) -> Any:
    return Column(BigInteger, nullable=nullable)


class CredentialRow(SQLModel, table=True):
    """A provider's API key, sealed (AES-GCM) with the at-rest key; never the plaintext."""

    __tablename__ = "profiles_provider_credential"

    provider: str = Field(primary_key=True, max_length=40)
    ciphertext: str = Field(sa_column=Column(Text, nullable=False))
    hint: str = Field(max_length=16, description="The masked form shown to admins")
    # Origins besides the provider's own endpoint that the operator allowed this key to be sent
    # to, normalized (`scheme://host[:port]`); bound to the key, set and replaced with it.
    allowed_origins: list[str] = Field(
        default_factory=list, sa_column=Column(JSON, nullable=False, server_default="[]")
    )
    created_at: datetime = Field(sa_column=_timestamp_column())
    updated_at: datetime = Field(sa_column=_timestamp_column())


class QuotaPolicyRow(SQLModel, table=True):
    """The default quota and rate limit: a single row (id 1); absent means the built-in ones."""

    __tablename__ = "profiles_quota_policy"

    id: int = Field(default=SETTINGS_ROW_ID, primary_key=True)
    credits_milli: int | None = Field(default=None, sa_column=_big_int_column(nullable=True))
    period: str = Field(max_length=8)
    rate_limit_count: int | None = None
    rate_limit_window_s: float
    updated_at: datetime = Field(sa_column=_timestamp_column())


class QuotaOverrideRow(SQLModel, table=True):
    __tablename__ = "profiles_quota_override"

    user_id: str = Field(primary_key=True, max_length=200)
    # None: no limit for this user, whatever the default.
    credits_milli: int | None = Field(default=None, sa_column=_big_int_column(nullable=True))
    note: str | None = Field(default=None, max_length=500)
    updated_at: datetime = Field(sa_column=_timestamp_column())


class QuotaUsageRow(SQLModel, table=True):
    """Credits a user has reserved or spent in one period (`period_key`: the day it began)."""

    __tablename__ = "profiles_quota_usage"

    user_id: str = Field(primary_key=True, max_length=200)
    period_key: str = Field(primary_key=True, max_length=10)
    used_milli: int = Field(default=0, sa_column=_big_int_column())
    updated_at: datetime = Field(sa_column=_timestamp_column())


class ReservationRow(SQLModel, table=True):
    """Credits held for one job, settled (and partly refunded) when it ends."""

    __tablename__ = "profiles_quota_reservation"

    job_id: str = Field(primary_key=True, max_length=100)
    user_id: str = Field(max_length=200)
    project: str = Field(max_length=100)
    profile_id: str = Field(max_length=200)
    period_key: str = Field(max_length=10)
    count: int
    credits_per_image_milli: int = Field(sa_column=_big_int_column())
    reserved_milli: int = Field(sa_column=_big_int_column())
    # The request's size while the job runs: the user's bytes in flight are the unsettled rows'.
    payload_bytes: int = Field(default=0, sa_column=_big_int_column())
    settled: bool = False
    refunded_milli: int = Field(default=0, sa_column=_big_int_column())
    created_at: datetime = Field(sa_column=_timestamp_column())
    settled_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )


RESERVATION_TABLE: Table = ReservationRow.__table__  # type: ignore[attr-defined]
# The rate limit counts a user's recent reservations.
Index(
    "profiles_quota_reservation_user_created",
    RESERVATION_TABLE.c.user_id,
    RESERVATION_TABLE.c.created_at,
)
# A user's jobs in flight: only the unsettled rows, so the index stays as small as the backlog.
Index(
    "profiles_quota_reservation_user_unsettled",
    RESERVATION_TABLE.c.user_id,
    postgresql_where=RESERVATION_TABLE.c.settled.is_(False),
    sqlite_where=RESERVATION_TABLE.c.settled.is_(False),
)


class AuditRow(SQLModel, table=True):
    """One finished job: who, what was sent, what it cost, how it ended."""

    __tablename__ = "profiles_audit"

    job_id: str = Field(primary_key=True, max_length=100)
    user_id: str = Field(max_length=200, index=True)
    project: str = Field(max_length=100)
    profile_id: str = Field(max_length=200, index=True)
    profile_name: str = Field(max_length=120)
    provider: str = Field(max_length=40)
    model: str = Field(max_length=200)
    status: str = Field(max_length=16, index=True)
    error_class: str | None = Field(default=None, max_length=40, index=True)
    error_stage: str | None = Field(default=None, max_length=16)
    error_message: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    error_detail: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    prompt: str = Field(sa_column=Column(Text, nullable=False))
    user_prompt: str = Field(sa_column=Column(Text, nullable=False))
    requested: int
    landed: int
    failed: int
    cost_milli: int = Field(sa_column=_big_int_column())
    job_created_at: datetime = Field(sa_column=_timestamp_column())
    finished_at: datetime = Field(sa_column=_timestamp_column())
    recorded_at: datetime = Field(sa_column=_timestamp_column())
    # The images fallback profiles made (`AuditFallback` as JSON), each with its profile and
    # why; None when the job's own profile made them all.
    fallbacks: list[dict[str, Any]] | None = Field(
        default=None, sa_column=Column(JSON(none_as_null=True), nullable=True)
    )
    # The job's receipt (`JobReceipt` as JSON, ADR 0024); None for jobs recorded before.
    receipt: dict[str, Any] | None = Field(
        default=None, sa_column=Column(JSON(none_as_null=True), nullable=True)
    )


AUDIT_TABLE: Table = AuditRow.__table__  # type: ignore[attr-defined]
Index("profiles_audit_finished", AUDIT_TABLE.c.finished_at)


# Core handles of the tables the quota ledger's statements use.
POLICY_TABLE: Table = QuotaPolicyRow.__table__  # type: ignore[attr-defined]
OVERRIDE_TABLE: Table = QuotaOverrideRow.__table__  # type: ignore[attr-defined]
USAGE_TABLE: Table = QuotaUsageRow.__table__  # type: ignore[attr-defined]


def all_tables() -> list[Table]:
    return [
        PROFILE_TABLE,
        GenerationSettingsRow.__table__,  # type: ignore[attr-defined]
        CredentialRow.__table__,  # type: ignore[attr-defined]
        POLICY_TABLE,
        OVERRIDE_TABLE,
        USAGE_TABLE,
        RESERVATION_TABLE,
        AUDIT_TABLE,
        *WEBHOOK_TABLES,
    ]
