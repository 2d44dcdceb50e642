"""All SQL of the profiles service.

Table models never leave this module: callers hand in `ProfileFields` / `GenerationSettings` and
get back the contract models (`Profile`, `GenerationSettings`), which are validated on the way
out. SQLModel table models skip validation, so they are only a storage shape here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast
from uuid import uuid4

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Executable,
    Index,
    Integer,
    Select,
    Table,
    Text,
    bindparam,
    case,
    delete,
    func,
    literal,
    or_,
    update,
)
from sqlalchemy import select as core_select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import Insert as PostgresInsert
from sqlalchemy.dialects.sqlite import Insert as SqliteInsert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm.exc import StaleDataError
from sqlmodel import Field, Session, SQLModel, col, select

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
            except StaleDataError:
                # Deleted between the read and the write (an admin's DELETE racing this change):
                # the profile is gone, as for a read that found nothing.
                return None
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
    # The request's size while the job runs: the user's bytes in flight are the unsettled rows'.
    payload_bytes: int = Field(default=0, sa_column=_big_int_column())
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
# A user's jobs in flight: only the unsettled rows, so the index stays as small as the backlog.
Index(
    "profiles_quota_reservation_user_unsettled",
    _RESERVATION_TABLE.c.user_id,
    postgresql_where=_RESERVATION_TABLE.c.settled.is_(False),
    sqlite_where=_RESERVATION_TABLE.c.settled.is_(False),
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


# Core handles of the tables the reservation and settlement statements use.
_POLICY_TABLE: Table = QuotaPolicyRow.__table__  # type: ignore[attr-defined]
_OVERRIDE_TABLE: Table = QuotaOverrideRow.__table__  # type: ignore[attr-defined]
_USAGE_TABLE: Table = QuotaUsageRow.__table__  # type: ignore[attr-defined]


def all_tables() -> list[Table]:
    return [
        *_TABLES,
        CredentialRow.__table__,  # type: ignore[attr-defined]
        _POLICY_TABLE,
        _OVERRIDE_TABLE,
        _USAGE_TABLE,
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
class InFlightLimits:
    """What one user may have queued or running at once (None: no limit)."""

    max_jobs: int | None = None
    max_bytes: int | None = None


@dataclass(frozen=True)
class ReserveOutcome:
    outcome: str  # "reserved" | "quota_exceeded" | "rate_limited" | "too_much_in_flight"
    cost_milli: int
    used_milli: int  # the period's usage after this answer
    # The terms it was held to, as read in the reservation's own transaction.
    policy: QuotaPolicyValues
    limit_milli: int | None  # the user's override, else the policy's; None: no limit
    priced: bool  # False: the profile no longer exists (reserved at 0)
    retry_after_s: float | None = None
    in_flight_jobs: int = 0  # for "too_much_in_flight": what the user already has in flight
    in_flight_bytes: int = 0


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


# --- The hot statements, built once ---------------------------------------------------------
#
# A reservation runs for every submitted job and a settlement for every finished one. Each runs
# as one transaction on one connection, in Core statements (no ORM session: every statement is
# a thread hop on aiosqlite and a round trip on PostgreSQL, and a session adds its own work).
# The statements are built here once, with bind parameters: building one and computing its
# cache key on every call costs about as much CPU as SQLite takes to run it.

_RES = _RESERVATION_TABLE.c
_USAGE = _USAGE_TABLE.c
_AUDIT = _AUDIT_TABLE.c


def _read_terms() -> Select[Any]:
    """Policy, the user's override and the profile's price: three primary-key lookups LEFT
    JOINed to one row, so that absent rows read as NULLs."""
    policy, override, profile = _POLICY_TABLE.c, _OVERRIDE_TABLE.c, _PROFILE_TABLE.c
    anchor = core_select(literal(1).label("one")).subquery("anchor")
    return core_select(
        policy.id.label("policy_id"),
        policy.credits_milli.label("policy_credits_milli"),
        policy.period,
        policy.rate_limit_count,
        policy.rate_limit_window_s,
        override.user_id.label("override_user_id"),
        override.credits_milli.label("override_credits_milli"),
        profile.credit_cost,
    ).select_from(
        anchor.outerjoin(_POLICY_TABLE, policy.id == _SETTINGS_ROW_ID)
        .outerjoin(_OVERRIDE_TABLE, override.user_id == bindparam("user"))
        .outerjoin(_PROFILE_TABLE, profile.id == bindparam("profile"))
    )


_READ_TERMS = _read_terms()


def _lock_usage_row(insert: Callable[[Table], PostgresInsert | SqliteInsert]) -> Executable:
    """Create the user's usage row of the period, or touch it; either way it is then locked
    (`ON CONFLICT DO UPDATE` locks the row on PostgreSQL; on SQLite any write takes the lock).
    Parameters: the row's columns."""
    upsert = insert(_USAGE_TABLE)
    return upsert.on_conflict_do_update(
        index_elements=[_USAGE.user_id, _USAGE.period_key],
        set_={"updated_at": upsert.excluded.updated_at},
    ).returning(_USAGE.used_milli)


def _record_audit(insert: Callable[[Table], PostgresInsert | SqliteInsert]) -> Executable:
    """Parameters: the audit row's columns; returns nothing when it was recorded before."""
    return (insert(_AUDIT_TABLE).on_conflict_do_nothing(index_elements=[_AUDIT.job_id])).returning(
        _AUDIT.job_id
    )


# INSERT … ON CONFLICT differs per dialect (same API); keyed by `engine.dialect.name`.
_LOCK_USAGE_ROW = {
    "sqlite": _lock_usage_row(sqlite.insert),
    "postgresql": _lock_usage_row(postgresql.insert),
}
_RECORD_AUDIT = {
    "sqlite": _record_audit(sqlite.insert),
    "postgresql": _record_audit(postgresql.insert),
}

_HELD = core_select(_RES.reserved_milli).where(_RES.job_id == bindparam("job")).scalar_subquery()
# The oldest of the user's last `rate_limit_count` reservations in the window (OFFSET count-1):
# present only when that many were made, and then the next one may start once it leaves the
# window.
_LIMITING = (
    core_select(_RES.created_at)
    .where(_RES.user_id == bindparam("user"), _RES.created_at > bindparam("window_start"))
    .order_by(_RES.created_at.desc())
    .limit(1)
    .offset(bindparam("skip", type_=Integer))
    .scalar_subquery()
)
_IN_FLIGHT = core_select(
    func.count().label("jobs"), func.coalesce(func.sum(_RES.payload_bytes), 0).label("bytes")
).where(_RES.user_id == bindparam("user"), _RES.settled.is_(False))
_CHECK_HELD = core_select(_HELD.label("held"))
_CHECK_HELD_AND_RATE = core_select(_HELD.label("held"), _LIMITING.label("limiting"))


def _spend(*, within: bool) -> Executable:
    statement = (
        update(_USAGE_TABLE)
        .where(_USAGE.user_id == bindparam("user"), _USAGE.period_key == bindparam("period"))
        .values(used_milli=_USAGE.used_milli + bindparam("cost"), updated_at=bindparam("now"))
        .returning(_USAGE.used_milli)
    )
    if within:
        statement = statement.where(_USAGE.used_milli + bindparam("cost") <= bindparam("limit"))
    return statement


_SPEND = _spend(within=False)
_SPEND_WITHIN_LIMIT = _spend(within=True)
_GIVE_BACK = (
    update(_USAGE_TABLE)
    .where(_USAGE.user_id == bindparam("user"), _USAGE.period_key == bindparam("period"))
    .values(used_milli=_USAGE.used_milli - bindparam("amount"), updated_at=bindparam("now"))
)
_INSERT_RESERVATION = _RESERVATION_TABLE.insert()  # parameters: the row's columns


def _settle() -> Executable:
    """Flip an unsettled reservation to settled, refunding the images that did not land."""
    landed = bindparam("landed", type_=BigInteger)
    charged = _RES.credits_per_image_milli * case((_RES.count < landed, _RES.count), else_=landed)
    refund = case((_RES.reserved_milli > charged, _RES.reserved_milli - charged), else_=0)
    return (
        update(_RESERVATION_TABLE)
        .where(_RES.job_id == bindparam("job"), _RES.settled.is_(False))
        .values(settled=True, settled_at=bindparam("now"), refunded_milli=refund)
        .returning(_RES.user_id, _RES.period_key, _RES.refunded_milli, _RES.credits_per_image_milli)
    )


_SETTLE = _settle()
# When no reservation was settled: was the outcome recorded before (a redelivery)? If not, the
# price per image: the reservation's, else the profile's current one.
_UNSETTLED_OUTCOME = core_select(
    core_select(_AUDIT.job_id)
    .where(_AUDIT.job_id == bindparam("job"))
    .scalar_subquery()
    .label("recorded"),
    core_select(_RES.credits_per_image_milli)
    .where(_RES.job_id == bindparam("job"))
    .scalar_subquery()
    .label("per_image"),
    core_select(_PROFILE_TABLE.c.credit_cost)
    .where(_PROFILE_TABLE.c.id == bindparam("profile"))
    .scalar_subquery()
    .label("credit_cost"),
)
_FORGET = (
    delete(_RESERVATION_TABLE)
    .where(_RES.job_id == bindparam("job"), _RES.settled.is_(False))
    .returning(_RES.user_id, _RES.period_key, _RES.reserved_milli)
)


class GovernanceRepository:
    """SQL of credentials, quotas, reservations and the audit."""

    def __init__(self, database: Database) -> None:
        self._db = database
        self._dialect = database.engine.dialect.name  # "sqlite" or "postgresql"

    # Credentials.

    async def list_credentials(self) -> list[CredentialRow]:
        async with self._db.session() as session:
            statement = select(CredentialRow).order_by(col(CredentialRow.provider))
            return list((await session.exec(statement)).all())

    async def get_credential(self, provider: str) -> CredentialRow | None:
        async with self._db.session() as session:
            return await session.get(CredentialRow, provider)

    async def put_credential(
        self, provider: str, ciphertext: str, hint: str, allowed_origins: list[str]
    ) -> CredentialRow:
        now = _utcnow()
        for attempt in range(2):
            async with self._db.session() as session:
                result = await session.exec(
                    update(CredentialRow)
                    .where(col(CredentialRow.provider) == provider)
                    .values(
                        ciphertext=ciphertext,
                        hint=hint,
                        allowed_origins=allowed_origins,
                        updated_at=now,
                    )
                )
                if result.rowcount:
                    await session.commit()
                    break
                session.add(
                    CredentialRow(
                        provider=provider,
                        ciphertext=ciphertext,
                        hint=hint,
                        allowed_origins=allowed_origins,
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

    # Reservations (the statements are built once, above `GovernanceRepository`).

    async def reserve(
        self,
        *,
        job_id: str,
        user_id: str,
        project: str,
        profile_id: str,
        count: int,
        now: datetime,
        default_policy: QuotaPolicyValues,
        period_key: Callable[[str], str],
        payload_bytes: int = 0,
        in_flight: InFlightLimits = InFlightLimits(),
    ) -> ReserveOutcome:
        """Hold credits for a job, atomically: never more than the user's limit in the period.

        One transaction. Its first statement reads the terms (policy, the user's override, the
        profile's price); `period_key(period)` names the usage row of the period holding `now`.
        The second upserts that row, which serializes this user's reservations until the
        commit: a row lock on PostgreSQL, the single write lock on SQLite. Every statement after
        it (the idempotency and rate limit check, the spend) therefore sees every reservation
        committed before; on PostgreSQL each READ COMMITTED statement takes a fresh snapshot,
        which is why that check is a statement of its own after the lock. The spend itself is a
        conditional UPDATE as well, so even without that lock it could not overspend.
        """

        def work(session: Session) -> ReserveOutcome:
            conn = session.connection()
            terms = conn.execute(_READ_TERMS, {"user": user_id, "profile": profile_id}).one()
            policy = default_policy
            if terms.policy_id is not None:
                policy = QuotaPolicyValues(
                    credits_milli=terms.policy_credits_milli,
                    period=terms.period,
                    rate_limit_count=terms.rate_limit_count,
                    rate_limit_window_s=terms.rate_limit_window_s,
                )
            overridden = terms.override_user_id is not None
            limit = terms.override_credits_milli if overridden else policy.credits_milli
            priced = terms.credit_cost is not None
            per_image = to_milli(terms.credit_cost) if priced else 0
            cost = per_image * count

            def answer(
                outcome: str,
                cost_milli: int,
                used: int,
                retry_after_s: float | None = None,
                jobs: int = 0,
                held_bytes: int = 0,
            ) -> ReserveOutcome:
                return ReserveOutcome(
                    outcome,
                    cost_milli,
                    used,
                    policy=policy,
                    limit_milli=limit,
                    priced=priced,
                    retry_after_s=retry_after_s,
                    in_flight_jobs=jobs,
                    in_flight_bytes=held_bytes,
                )

            period = period_key(policy.period)
            lock = _LOCK_USAGE_ROW[self._dialect]
            row = {"user_id": user_id, "period_key": period, "used_milli": 0, "updated_at": now}
            # Locked from here on: nobody else changes it before this transaction ends.
            used = int(conn.execute(lock, row).scalar_one())

            if policy.rate_limit_count is None:
                found = conn.execute(_CHECK_HELD, {"job": job_id}).one()
            else:
                window_start = now - timedelta(seconds=policy.rate_limit_window_s)
                found = (
                    conn.execute(
                        _CHECK_HELD_AND_RATE,
                        {
                            "job": job_id,
                            "user": user_id,
                            "window_start": window_start,
                            "skip": policy.rate_limit_count - 1,
                        },
                    )
                ).one()
            if found.held is not None:
                # The same job asked again (an Idempotency-Key retry): it already holds credits.
                session.rollback()
                return answer("reserved", int(found.held), used)
            if policy.rate_limit_count is not None and found.limiting is not None:
                session.rollback()
                leaves = _as_utc(found.limiting) + timedelta(seconds=policy.rate_limit_window_s)
                return answer("rate_limited", 0, used, max((leaves - now).total_seconds(), 0.001))
            if in_flight.max_jobs is not None or in_flight.max_bytes is not None:
                # Still under this user's lock: concurrent submissions see each other's rows.
                busy = conn.execute(_IN_FLIGHT, {"user": user_id}).one()
                jobs, held_bytes = int(busy.jobs), int(busy.bytes)
                if (in_flight.max_jobs is not None and jobs >= in_flight.max_jobs) or (
                    in_flight.max_bytes is not None
                    and held_bytes + payload_bytes > in_flight.max_bytes
                ):
                    session.rollback()
                    return answer("too_much_in_flight", 0, used, None, jobs, held_bytes)
            if limit is not None and used + cost > limit:
                session.rollback()
                return answer("quota_exceeded", cost, used)

            where = {"user": user_id, "period": period, "cost": cost, "now": now}
            if limit is None:
                spent = conn.execute(_SPEND, where).scalar_one_or_none()
            else:
                where["limit"] = limit
                spent = conn.execute(_SPEND_WITHIN_LIMIT, where).scalar_one_or_none()
            if spent is None:
                session.rollback()
                return answer("quota_exceeded", cost, used)
            conn.execute(
                _INSERT_RESERVATION,
                {
                    "job_id": job_id,
                    "user_id": user_id,
                    "project": project,
                    "profile_id": profile_id,
                    "period_key": period,
                    "count": count,
                    "credits_per_image_milli": per_image,
                    "reserved_milli": cost,
                    "payload_bytes": payload_bytes,
                    "settled": False,
                    "refunded_milli": 0,
                    "created_at": now,
                    "settled_at": None,
                },
            )
            return answer("reserved", cost, int(spent))

        return await self._db.run_sync(work, in_thread=True)

    async def release(self, job_id: str) -> bool:
        """Forget a reservation whose job was never queued, giving its credits back."""

        def work(session: Session) -> bool:
            conn = session.connection()
            forgotten = conn.execute(_FORGET, {"job": job_id}).one_or_none()
            if forgotten is None:  # unknown, released before, or settled: nothing to give back
                session.rollback()
                return False
            conn.execute(
                _GIVE_BACK,
                {
                    "user": forgotten.user_id,
                    "period": forgotten.period_key,
                    "amount": forgotten.reserved_milli,
                    "now": _utcnow(),
                },
            )
            return True

        return await self._db.run_sync(work, in_thread=True)

    async def get_reservation(self, job_id: str) -> ReservationRow | None:
        async with self._db.session() as session:
            return await session.get(ReservationRow, job_id)

    # Job outcomes: settle the reservation and write the audit, in one transaction.

    async def record_outcome(self, audit: AuditRow, landed: int) -> bool:
        """Settle the job's reservation (refunding images that did not land) and record it.

        `audit.cost_milli` is not used: the entry is charged `landed` images at the price the
        reservation was made at (the profile's current price for a job that reserved nothing).
        False when the outcome was recorded before (a redelivered status event): nothing changes.
        The reservation is flipped to settled by a conditional UPDATE, so two deliveries racing
        cannot both refund; the audit's primary key makes the entry happen once.
        """
        landed = max(0, landed)
        now = _utcnow()

        def work(session: Session) -> bool:
            conn = session.connection()
            settled = (
                conn.execute(_SETTLE, {"job": audit.job_id, "landed": landed, "now": now})
            ).one_or_none()
            if settled is not None:
                per_image = int(settled.credits_per_image_milli)
                if settled.refunded_milli:
                    conn.execute(
                        _GIVE_BACK,
                        {
                            "user": settled.user_id,
                            "period": settled.period_key,
                            "amount": settled.refunded_milli,
                            "now": now,
                        },
                    )
            else:
                # Settled before (then the audit is there: a redelivery), or never reserved (a
                # job accepted before quotas existed, or by a gateway that did not reserve).
                known = (
                    conn.execute(
                        _UNSETTLED_OUTCOME, {"job": audit.job_id, "profile": audit.profile_id}
                    )
                ).one()
                if known.recorded is not None:
                    session.rollback()
                    return False
                if known.per_image is not None:
                    per_image = int(known.per_image)
                elif known.credit_cost is not None:
                    per_image = to_milli(known.credit_cost)
                else:
                    per_image = 0
            row = {column.name: getattr(audit, column.name) for column in _AUDIT_TABLE.columns}
            row["cost_milli"] = per_image * landed
            recorded = conn.execute(_RECORD_AUDIT[self._dialect], row).one_or_none()
            if recorded is None:
                # Recorded in the meantime: that transaction settled the reservation too.
                session.rollback()
                return False
            return True

        return await self._db.run_sync(work, in_thread=True)

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
