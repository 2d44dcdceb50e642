"""All SQL of the profiles service.

Table models never leave this module: callers hand in `ProfileFields` / `GenerationSettings` and
get back the contract models (`Profile`, `GenerationSettings`), which are validated on the way
out. SQLModel table models skip validation, so they are only a storage shape here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast
from uuid import uuid4

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Index,
    Table,
    Text,
    delete,
    func,
    or_,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, SQLModel, col, select

from atelier_contracts.errors import Conflict
from atelier_contracts.profiles import GenerationSettings, Profile, ProfileFields
from atelier_database import Database

_SETTINGS_ROW_ID = 1


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _as_utc(value: datetime) -> datetime:
    # SQLite hands timestamps back without a zone (we store UTC); PostgreSQL in the session's
    # zone. Answers always use UTC.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


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
    base_url: str | None = Field(default=None, max_length=2000)
    provider_config: dict[str, Any] = Field(sa_column=_json_column())
    fallback_profile_id: str | None = Field(default=None, max_length=36)
    created_at: datetime = Field(sa_column=_timestamp_column())
    updated_at: datetime = Field(sa_column=_timestamp_column())


_PROFILE_TABLE: Table = ProfileRow.__table__  # type: ignore[attr-defined]

# Names are unique regardless of case ("Sketch" and "sketch" would be indistinguishable in a
# picker). The index is the guard against two admins racing; the service relies on it alone.
Index("profiles_profile_name_lower_key", func.lower(_PROFILE_TABLE.c.name), unique=True)


class GenerationSettingsRow(SQLModel, table=True):
    """The global switch: a single row (id 1); absent means "on", as on a fresh install."""

    __tablename__ = "profiles_generation_settings"

    id: int = Field(default=_SETTINGS_ROW_ID, primary_key=True)
    enabled: bool = True
    reason: str | None = None
    updated_at: datetime = Field(sa_column=_timestamp_column())


_TABLES: list[Table] = [
    _PROFILE_TABLE,
    GenerationSettingsRow.__table__,  # type: ignore[attr-defined]
]


def _row_values(fields: ProfileFields) -> dict[str, Any]:
    # mode="json" turns option defaults and provider_config into plain JSON values.
    return fields.model_dump(mode="json")


def _to_profile(row: ProfileRow) -> Profile:
    data = row.model_dump()
    data["created_at"] = _as_utc(row.created_at)
    data["updated_at"] = _as_utc(row.updated_at)
    return Profile.model_validate(data)


def _name_taken(name: str) -> Conflict:
    return Conflict(f"A profile named {name!r} already exists; choose another name.")


class ProfileRepository:
    def __init__(self, database: Database) -> None:
        self._db = database

    async def create_tables(self) -> None:
        """For tests: this service's tables only, even if other SQLModel tables are imported.

        The service itself runs its migrations (`atelier_profiles.migrations`), which a test
        holds to exactly these tables.
        """
        async with self._db.engine.begin() as conn:
            await conn.run_sync(SQLModel.metadata.create_all, tables=all_tables())

    async def drop_tables(self) -> None:
        """For tests on a shared database."""
        async with self._db.engine.begin() as conn:
            await conn.run_sync(SQLModel.metadata.drop_all, tables=all_tables())

    # Profiles.

    async def insert_profile(self, fields: ProfileFields) -> Profile:
        now = _utcnow()
        row = ProfileRow(**_row_values(fields), created_at=now, updated_at=now)
        async with self._db.session() as session:
            session.add(row)
            try:
                await session.commit()
            except IntegrityError as exc:
                raise _name_taken(fields.name) from exc
            return _to_profile(row)

    async def get_profile(self, profile_id: str) -> Profile | None:
        async with self._db.session() as session:
            row = await session.get(ProfileRow, profile_id)
            return _to_profile(row) if row is not None else None

    async def list_profiles(self, *, include_disabled: bool) -> list[Profile]:
        statement = select(ProfileRow).order_by(
            col(ProfileRow.sort_order), func.lower(ProfileRow.name), col(ProfileRow.id)
        )
        if not include_disabled:
            statement = statement.where(col(ProfileRow.enabled).is_(True))
        async with self._db.session() as session:
            rows = (await session.exec(statement)).all()
            return [_to_profile(row) for row in rows]

    async def update_profile(self, profile_id: str, fields: ProfileFields) -> Profile | None:
        """Replace every admin-set field; None when there is no such profile."""
        async with self._db.session() as session:
            row = await session.get(ProfileRow, profile_id)
            if row is None:
                return None
            for key, value in _row_values(fields).items():
                setattr(row, key, value)
            row.updated_at = _utcnow()
            session.add(row)
            try:
                await session.commit()
            except IntegrityError as exc:
                raise _name_taken(fields.name) from exc
            return _to_profile(row)

    async def fallback_links(self) -> dict[str, str | None]:
        """Every profile's id and the id it falls back to (the table is small)."""
        statement = select(ProfileRow.id, ProfileRow.fallback_profile_id)
        async with self._db.session() as session:
            return {row[0]: row[1] for row in (await session.exec(statement)).all()}

    async def names_falling_back_to(self, profile_id: str) -> list[str]:
        statement = select(ProfileRow.name).where(col(ProfileRow.fallback_profile_id) == profile_id)
        async with self._db.session() as session:
            return sorted((await session.exec(statement)).all())

    async def delete_profile(self, profile_id: str) -> bool:
        async with self._db.session() as session:
            result = await session.exec(delete(ProfileRow).where(col(ProfileRow.id) == profile_id))
            await session.commit()
            return bool(result.rowcount)

    # The global switch.

    async def get_settings(self) -> GenerationSettings:
        async with self._db.session() as session:
            row = await session.get(GenerationSettingsRow, _SETTINGS_ROW_ID)
        if row is None:
            return GenerationSettings(enabled=True)
        return GenerationSettings(enabled=row.enabled, reason=row.reason)

    async def save_settings(self, settings: GenerationSettings) -> GenerationSettings:
        now = _utcnow()
        # Update first, insert when the row does not exist yet; if another replica inserted it
        # in between, the insert fails on the primary key and the update then succeeds.
        for attempt in range(2):
            async with self._db.session() as session:
                result = await session.exec(
                    update(GenerationSettingsRow)
                    .where(col(GenerationSettingsRow.id) == _SETTINGS_ROW_ID)
                    .values(enabled=settings.enabled, reason=settings.reason, updated_at=now)
                )
                if result.rowcount:
                    await session.commit()
                    break
                session.add(
                    GenerationSettingsRow(
                        id=_SETTINGS_ROW_ID,
                        enabled=settings.enabled,
                        reason=settings.reason,
                        updated_at=now,
                    )
                )
                try:
                    await session.commit()
                    break
                except IntegrityError:
                    await session.rollback()
                    if attempt:
                        raise
        return GenerationSettings(enabled=settings.enabled, reason=settings.reason)


# --- Governance: provider credentials, quotas and reservations, the audit --------------------
#
# Credits are stored as integer milli-credits: sums and "does it still fit" comparisons must be
# exact, which floats are not (0.1 + 0.2 > 0.3).

MILLI = 1000


def to_milli(credits: float) -> int:
    return round(credits * MILLI)


def from_milli(milli: int) -> float:
    return milli / MILLI


def _big_int_column(*, nullable: bool = False) -> Any:
    return Column(BigInteger, nullable=nullable)


class CredentialRow(SQLModel, table=True):
    """A provider's API key, sealed (AES-GCM) with the at-rest key; never the plaintext."""

    __tablename__ = "profiles_provider_credential"

    provider: str = Field(primary_key=True, max_length=40)
    ciphertext: str = Field(sa_column=Column(Text, nullable=False))
    hint: str = Field(max_length=16, description="The masked form shown to admins")
    created_at: datetime = Field(sa_column=_timestamp_column())
    updated_at: datetime = Field(sa_column=_timestamp_column())


class QuotaPolicyRow(SQLModel, table=True):
    """The default quota and rate limit: a single row (id 1); absent means the built-in ones."""

    __tablename__ = "profiles_quota_policy"

    id: int = Field(default=_SETTINGS_ROW_ID, primary_key=True)
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
    settled: bool = False
    refunded_milli: int = Field(default=0, sa_column=_big_int_column())
    created_at: datetime = Field(sa_column=_timestamp_column())
    settled_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )


_RESERVATION_TABLE: Table = ReservationRow.__table__  # type: ignore[attr-defined]
# The rate limit counts a user's recent reservations.
Index(
    "profiles_quota_reservation_user_created",
    _RESERVATION_TABLE.c.user_id,
    _RESERVATION_TABLE.c.created_at,
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


_AUDIT_TABLE: Table = AuditRow.__table__  # type: ignore[attr-defined]
Index("profiles_audit_finished", _AUDIT_TABLE.c.finished_at)


def all_tables() -> list[Table]:
    return [
        *_TABLES,
        CredentialRow.__table__,  # type: ignore[attr-defined]
        QuotaPolicyRow.__table__,  # type: ignore[attr-defined]
        QuotaOverrideRow.__table__,  # type: ignore[attr-defined]
        QuotaUsageRow.__table__,  # type: ignore[attr-defined]
        _RESERVATION_TABLE,
        _AUDIT_TABLE,
    ]


@dataclass(frozen=True)
class QuotaPolicyValues:
    credits_milli: int | None
    period: str
    rate_limit_count: int | None
    rate_limit_window_s: float


@dataclass(frozen=True)
class ReserveOutcome:
    outcome: str  # "reserved" | "quota_exceeded" | "rate_limited"
    cost_milli: int
    used_milli: int  # the period's usage after this answer
    retry_after_s: float | None = None


@dataclass(frozen=True)
class Settlement:
    """What a finished job's reservation came to; None fields when it had none."""

    user_id: str
    charged_milli: int
    refunded_milli: int


@dataclass(frozen=True)
class AuditFilter:
    user_id: str | None = None
    profile_id: str | None = None
    status: str | None = None
    error_class: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    text: str | None = None

    def clauses(self) -> list[Any]:
        where: list[Any] = []
        if self.user_id is not None:
            where.append(col(AuditRow.user_id) == self.user_id)
        if self.profile_id is not None:
            where.append(col(AuditRow.profile_id) == self.profile_id)
        if self.status is not None:
            where.append(col(AuditRow.status) == self.status)
        if self.error_class is not None:
            where.append(col(AuditRow.error_class) == self.error_class)
        if self.since is not None:
            where.append(col(AuditRow.finished_at) >= self.since)
        if self.until is not None:
            where.append(col(AuditRow.finished_at) < self.until)
        if self.text:
            needle = self.text.lower()
            where.append(
                or_(
                    func.lower(AuditRow.prompt).contains(needle, autoescape=True),
                    func.lower(AuditRow.user_prompt).contains(needle, autoescape=True),
                )
            )
        return where


class GovernanceRepository:
    """SQL of credentials, quotas, reservations and the audit."""

    def __init__(self, database: Database) -> None:
        self._db = database

    # Credentials.

    async def list_credentials(self) -> list[CredentialRow]:
        async with self._db.session() as session:
            statement = select(CredentialRow).order_by(col(CredentialRow.provider))
            return list((await session.exec(statement)).all())

    async def get_credential(self, provider: str) -> CredentialRow | None:
        async with self._db.session() as session:
            return await session.get(CredentialRow, provider)

    async def put_credential(self, provider: str, ciphertext: str, hint: str) -> CredentialRow:
        now = _utcnow()
        for attempt in range(2):
            async with self._db.session() as session:
                result = await session.exec(
                    update(CredentialRow)
                    .where(col(CredentialRow.provider) == provider)
                    .values(ciphertext=ciphertext, hint=hint, updated_at=now)
                )
                if result.rowcount:
                    await session.commit()
                    break
                session.add(
                    CredentialRow(
                        provider=provider,
                        ciphertext=ciphertext,
                        hint=hint,
                        created_at=now,
                        updated_at=now,
                    )
                )
                try:
                    await session.commit()
                    break
                except IntegrityError:
                    await session.rollback()
                    if attempt:
                        raise
        stored = await self.get_credential(provider)
        assert stored is not None
        return stored

    async def delete_credential(self, provider: str) -> bool:
        async with self._db.session() as session:
            result = await session.exec(
                delete(CredentialRow).where(col(CredentialRow.provider) == provider)
            )
            await session.commit()
            return bool(result.rowcount)

    async def providers_in_profiles(self) -> dict[str, int]:
        statement = select(ProfileRow.provider, func.count()).group_by(col(ProfileRow.provider))
        async with self._db.session() as session:
            return {row[0]: int(row[1]) for row in (await session.exec(statement)).all()}

    # Quota policy and overrides.

    async def get_policy(self) -> QuotaPolicyRow | None:
        async with self._db.session() as session:
            return await session.get(QuotaPolicyRow, _SETTINGS_ROW_ID)

    async def save_policy(self, values: QuotaPolicyValues) -> None:
        now = _utcnow()
        fields: dict[str, Any] = {
            "credits_milli": values.credits_milli,
            "period": values.period,
            "rate_limit_count": values.rate_limit_count,
            "rate_limit_window_s": values.rate_limit_window_s,
            "updated_at": now,
        }
        for attempt in range(2):
            async with self._db.session() as session:
                result = await session.exec(
                    update(QuotaPolicyRow)
                    .where(col(QuotaPolicyRow.id) == _SETTINGS_ROW_ID)
                    .values(**fields)
                )
                if result.rowcount:
                    await session.commit()
                    return
                session.add(QuotaPolicyRow(id=_SETTINGS_ROW_ID, **fields))
                try:
                    await session.commit()
                    return
                except IntegrityError:
                    await session.rollback()
                    if attempt:
                        raise

    async def list_overrides(self) -> list[QuotaOverrideRow]:
        async with self._db.session() as session:
            statement = select(QuotaOverrideRow).order_by(col(QuotaOverrideRow.user_id))
            return list((await session.exec(statement)).all())

    async def get_override(self, user_id: str) -> QuotaOverrideRow | None:
        async with self._db.session() as session:
            return await session.get(QuotaOverrideRow, user_id)

    async def put_override(
        self, user_id: str, credits_milli: int | None, note: str | None
    ) -> QuotaOverrideRow:
        now = _utcnow()
        for attempt in range(2):
            async with self._db.session() as session:
                result = await session.exec(
                    update(QuotaOverrideRow)
                    .where(col(QuotaOverrideRow.user_id) == user_id)
                    .values(credits_milli=credits_milli, note=note, updated_at=now)
                )
                if result.rowcount:
                    await session.commit()
                    break
                session.add(
                    QuotaOverrideRow(
                        user_id=user_id, credits_milli=credits_milli, note=note, updated_at=now
                    )
                )
                try:
                    await session.commit()
                    break
                except IntegrityError:
                    await session.rollback()
                    if attempt:
                        raise
        stored = await self.get_override(user_id)
        assert stored is not None
        return stored

    async def delete_override(self, user_id: str) -> bool:
        async with self._db.session() as session:
            result = await session.exec(
                delete(QuotaOverrideRow).where(col(QuotaOverrideRow.user_id) == user_id)
            )
            await session.commit()
            return bool(result.rowcount)

    async def used_milli(self, user_id: str, period_key: str) -> int:
        async with self._db.session() as session:
            row = await session.get(QuotaUsageRow, (user_id, period_key))
            return row.used_milli if row is not None else 0

    # Reservations.

    async def _ensure_usage_row(self, user_id: str, period_key: str) -> None:
        async with self._db.session() as session:
            if await session.get(QuotaUsageRow, (user_id, period_key)) is not None:
                return
            session.add(
                QuotaUsageRow(
                    user_id=user_id, period_key=period_key, used_milli=0, updated_at=_utcnow()
                )
            )
            try:
                await session.commit()
            except IntegrityError:
                await session.rollback()  # another submission made it first: fine

    async def reserve(
        self,
        *,
        job_id: str,
        user_id: str,
        project: str,
        profile_id: str,
        count: int,
        credits_per_image_milli: int,
        limit_milli: int | None,
        period_key: str,
        rate_limit_count: int | None,
        rate_limit_window_s: float,
        now: datetime,
    ) -> ReserveOutcome:
        """Hold credits for a job, atomically: never more than `limit_milli` in the period.

        The first statement writes the user's usage row, which serializes this user's
        reservations until the commit: a row lock on PostgreSQL, the single write lock on SQLite.
        Everything after it (the idempotency check, the rate limit count, the conditional
        UPDATE) therefore sees every reservation committed before. The spend itself is a
        conditional UPDATE as well, so even without that lock it could not overspend.
        """
        await self._ensure_usage_row(user_id, period_key)
        usage = (col(QuotaUsageRow.user_id) == user_id) & (
            col(QuotaUsageRow.period_key) == period_key
        )
        async with self._db.session() as session:
            await session.exec(update(QuotaUsageRow).where(usage).values(updated_at=now))

            async def used_now() -> int:
                statement = select(QuotaUsageRow.used_milli).where(usage)
                return int((await session.exec(statement)).one())

            existing = await session.get(ReservationRow, job_id)
            if existing is not None:
                # The same job asked again (an Idempotency-Key retry): it already holds credits.
                used = await used_now()
                await session.commit()
                return ReserveOutcome("reserved", existing.reserved_milli, used)

            if rate_limit_count is not None:
                window_start = now - timedelta(seconds=rate_limit_window_s)
                recent = (
                    await session.exec(
                        select(ReservationRow.created_at)
                        .where(
                            col(ReservationRow.user_id) == user_id,
                            col(ReservationRow.created_at) > window_start,
                        )
                        .order_by(col(ReservationRow.created_at).desc())
                        .limit(rate_limit_count)
                    )
                ).all()
                if len(recent) >= rate_limit_count:
                    oldest = _as_utc(recent[-1])
                    wait = (oldest + timedelta(seconds=rate_limit_window_s) - now).total_seconds()
                    used = await used_now()
                    await session.rollback()
                    return ReserveOutcome("rate_limited", 0, used, retry_after_s=max(wait, 0.001))

            cost = credits_per_image_milli * count
            spend = (
                update(QuotaUsageRow)
                .where(usage)
                .values(used_milli=col(QuotaUsageRow.used_milli) + cost, updated_at=now)
            )
            if limit_milli is not None:
                spend = spend.where(col(QuotaUsageRow.used_milli) + cost <= limit_milli)
            if not (await session.exec(spend)).rowcount:
                used = await used_now()
                await session.rollback()
                return ReserveOutcome("quota_exceeded", cost, used)
            session.add(
                ReservationRow(
                    job_id=job_id,
                    user_id=user_id,
                    project=project,
                    profile_id=profile_id,
                    period_key=period_key,
                    count=count,
                    credits_per_image_milli=credits_per_image_milli,
                    reserved_milli=cost,
                    created_at=now,
                )
            )
            await session.flush()
            used = await used_now()
            await session.commit()
            return ReserveOutcome("reserved", cost, used)

    async def release(self, job_id: str) -> bool:
        """Forget a reservation whose job was never queued, giving its credits back."""
        async with self._db.session() as session:
            row = await session.get(ReservationRow, job_id)
            if row is None or row.settled:
                return False
            user_id, period_key, reserved = row.user_id, row.period_key, row.reserved_milli
            session.expunge(row)
            result = await session.exec(
                delete(ReservationRow).where(
                    col(ReservationRow.job_id) == job_id, col(ReservationRow.settled).is_(False)
                )
            )
            if not result.rowcount:
                await session.rollback()
                return False
            await session.exec(
                update(QuotaUsageRow)
                .where(
                    col(QuotaUsageRow.user_id) == user_id,
                    col(QuotaUsageRow.period_key) == period_key,
                )
                .values(used_milli=col(QuotaUsageRow.used_milli) - reserved, updated_at=_utcnow())
            )
            await session.commit()
            return True

    async def get_reservation(self, job_id: str) -> ReservationRow | None:
        async with self._db.session() as session:
            return await session.get(ReservationRow, job_id)

    # Job outcomes: settle the reservation and write the audit, in one transaction.

    async def record_outcome(self, audit: AuditRow, landed: int) -> bool:
        """Settle the job's reservation (refunding images that did not land) and record it.

        False when the outcome was recorded before (a redelivered status event): nothing changes.
        The reservation is flipped to settled by a conditional UPDATE, so two deliveries racing
        cannot both refund.
        """
        async with self._db.session() as session:
            row = await session.get(ReservationRow, audit.job_id)
            reservation = None
            if row is not None:
                reservation = (
                    row.user_id,
                    row.period_key,
                    row.reserved_milli,
                    row.credits_per_image_milli * max(0, min(landed, row.count)),
                    row.settled,
                )
                session.expunge(row)
            if reservation is not None and not reservation[4]:
                user_id, period_key, reserved, charged, _ = reservation
                refund = max(0, reserved - charged)
                flipped = await session.exec(
                    update(ReservationRow)
                    .where(
                        col(ReservationRow.job_id) == audit.job_id,
                        col(ReservationRow.settled).is_(False),
                    )
                    .values(settled=True, settled_at=_utcnow(), refunded_milli=refund)
                )
                if flipped.rowcount and refund:
                    await session.exec(
                        update(QuotaUsageRow)
                        .where(
                            col(QuotaUsageRow.user_id) == user_id,
                            col(QuotaUsageRow.period_key) == period_key,
                        )
                        .values(
                            used_milli=col(QuotaUsageRow.used_milli) - refund, updated_at=_utcnow()
                        )
                    )
            session.add(audit)
            try:
                await session.commit()
            except IntegrityError:
                # Recorded before: that transaction settled the reservation too.
                await session.rollback()
                return False
            return True

    # The audit.

    async def list_audits(
        self, where: AuditFilter, *, limit: int, offset: int
    ) -> tuple[list[AuditRow], int]:
        clauses = where.clauses()
        statement = (
            select(AuditRow)
            .where(*clauses)
            .order_by(col(AuditRow.finished_at).desc(), col(AuditRow.job_id))
            .limit(limit)
            .offset(offset)
        )
        counting = select(func.count()).select_from(AuditRow).where(*clauses)
        async with self._db.session() as session:
            rows = list((await session.exec(statement)).all())
            total = int((await session.exec(counting)).one())
        return rows, total

    async def audit_summary(self, where: AuditFilter) -> dict[str, list[tuple[Any, ...]]]:
        clauses = where.clauses()
        totals = [
            func.count(),
            func.coalesce(func.sum(AuditRow.landed), 0),
            func.coalesce(func.sum(AuditRow.cost_milli), 0),
        ]
        queries = {
            "status": select(AuditRow.status, *totals).group_by(col(AuditRow.status)),
            "error_class": select(AuditRow.error_class, *totals)
            .where(col(AuditRow.error_class).is_not(None))
            .group_by(col(AuditRow.error_class)),
            "user": select(AuditRow.user_id, *totals).group_by(col(AuditRow.user_id)),
            "profile": select(
                AuditRow.profile_id, func.max(AuditRow.profile_name), *totals
            ).group_by(col(AuditRow.profile_id)),
            "all": select(*totals),
        }
        answers: dict[str, list[tuple[Any, ...]]] = {}
        async with self._db.session() as session:
            for name, query in queries.items():
                result = await session.exec(query.where(*clauses))
                answers[name] = [tuple(cast(Any, row)) for row in result.all()]
        return answers
