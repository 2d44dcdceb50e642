"""SQL of the profiles and the global switch, and the upsert the other repositories share.

The table models (`tables.py`) never leave the repositories: callers hand in `ProfileFields` /
`GenerationSettings` and get back the contract models (`Profile`, `GenerationSettings`), which are
validated on the way out. SQLModel table models skip validation, so they are only a storage
shape here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Update, delete, func, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm.exc import StaleDataError
from sqlmodel import SQLModel, col, select

from atelier_contracts.clock import as_utc, utcnow
from atelier_contracts.errors import Conflict
from atelier_contracts.profiles import GenerationSettings, Profile, ProfileFields
from atelier_database import Database
from atelier_profiles.tables import (
    SETTINGS_ROW_ID,
    GenerationSettingsRow,
    ProfileRow,
    all_tables,
)


async def update_or_insert(
    database: Database, change: Update, new_row: Callable[[], SQLModel]
) -> None:
    """Update a row, or insert it when it does not exist yet; if another replica inserted it
    in between, the insert fails on the primary key and the update then succeeds."""
    for attempt in range(2):
        async with database.session() as session:
            result = await session.exec(change)
            if result.rowcount:
                await session.commit()
                return
            session.add(new_row())
            try:
                await session.commit()
                return
            except IntegrityError:
                await session.rollback()
                if attempt:
                    raise


def _row_values(fields: ProfileFields) -> dict[str, Any]:
    # mode="json" turns option defaults and provider_config into plain JSON values.
    return fields.model_dump(mode="json")


def _to_profile(row: ProfileRow) -> Profile:
    data = row.model_dump()
    data["created_at"] = as_utc(row.created_at)
    data["updated_at"] = as_utc(row.updated_at)
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
        now = utcnow()
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
            row.updated_at = utcnow()
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
            row = await session.get(GenerationSettingsRow, SETTINGS_ROW_ID)
        if row is None:
            return GenerationSettings(enabled=True)
        return GenerationSettings(enabled=row.enabled, reason=row.reason)

    async def save_settings(self, settings: GenerationSettings) -> GenerationSettings:
        values: dict[str, Any] = {
            "enabled": settings.enabled,
            "reason": settings.reason,
            "updated_at": utcnow(),
        }
        await update_or_insert(
            self._db,
            update(GenerationSettingsRow)
            .where(col(GenerationSettingsRow.id) == SETTINGS_ROW_ID)
            .values(**values),
            lambda: GenerationSettingsRow(id=SETTINGS_ROW_ID, **values),
        )
        return GenerationSettings(enabled=settings.enabled, reason=settings.reason)
