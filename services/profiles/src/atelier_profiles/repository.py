"""All SQL of the profiles service.

Table models never leave this module: callers hand in `ProfileFields` / `GenerationSettings` and
get back the contract models (`Profile`, `GenerationSettings`), which are validated on the way
out. SQLModel table models skip validation, so they are only a storage shape here.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

from sqlalchemy import JSON, Column, DateTime, Index, Table, delete, func, update
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
        """Create this service's tables only, even if other SQLModel tables are imported."""
        async with self._db.engine.begin() as conn:
            await conn.run_sync(SQLModel.metadata.create_all, tables=_TABLES)

    async def drop_tables(self) -> None:
        """For tests on a shared database."""
        async with self._db.engine.begin() as conn:
            await conn.run_sync(SQLModel.metadata.drop_all, tables=_TABLES)

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
