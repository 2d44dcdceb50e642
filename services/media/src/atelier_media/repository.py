"""All of media's SQL: the `media_items` table and the few queries the service needs.

The service only ever sees `MediaItem` (the contract), never a row: the table can change without
touching the logic, and no ORM object leaks into a message.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import UTC, datetime
from typing import Literal

from sqlalchemy import BigInteger, Column, DateTime, Index, String, Text, func, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Field, SQLModel, col, select

from atelier_contracts.media import MediaItem
from atelier_database import Database


class MediaRow(SQLModel, MediaItem, table=True):
    """One landed image and its provenance: `MediaItem`'s fields, each a column. Re-declared
    below are those a plain column does not fit (key, index, TEXT, BIGINT, time zone, server
    default); a re-declared field keeps its place. A field added to `MediaItem` is a new column:
    `test_head_is_exactly_the_models` fails until a migration adds it."""

    __tablename__ = "media_items"
    # The library lists a project's media newest first: one index serves filter and order. An
    # uploaded file is matched to the project's image with the same bytes: the second index.
    __table_args__ = (
        Index("ix_media_items_project_created_at", "project", "created_at"),
        Index("ix_media_items_project_sha256", "project", "sha256"),
    )

    id: str = Field(primary_key=True)
    job_id: str = Field(index=True)
    # Prompts can be long; TEXT avoids a length limit PostgreSQL would enforce on VARCHAR(n).
    prompt: str = Field(sa_column=Column(Text, nullable=False))
    # Providers' seeds go up to 2^32 - 2 (Stability): past a 32-bit INTEGER on PostgreSQL.
    seed: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    revised_prompt: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    # Rows from before revision 0004 are generated ones.
    source: Literal["generated", "uploaded"] = Field(
        default="generated",
        sa_column=Column(String, nullable=False, server_default="generated"),
    )
    delivered_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )


# What `Database.create_tables` creates for media: its own table and nothing else.
TABLES = (MediaRow,)


def dialect_insert(db: Database, table: type[SQLModel]) -> postgresql.Insert | sqlite.Insert:
    """An INSERT that can take `ON CONFLICT` clauses: the two dialects spell them alike, in
    classes of their own."""
    dialect = db.engine.dialect.name
    if dialect == "postgresql":
        return postgresql.insert(table)
    if dialect != "sqlite":  # pragma: no cover - we deploy on SQLite and PostgreSQL only
        raise RuntimeError(f"INSERT ... ON CONFLICT is not implemented for {dialect}")
    return sqlite.insert(table)


def _to_item(row: MediaRow) -> MediaItem:
    item = MediaItem.model_validate(row.model_dump())
    # SQLite stores no time zone; every timestamp we write is UTC.
    if item.created_at.tzinfo is None:
        item.created_at = item.created_at.replace(tzinfo=UTC)
    if item.delivered_at is not None and item.delivered_at.tzinfo is None:
        item.delivered_at = item.delivered_at.replace(tzinfo=UTC)
    return item


class MediaRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def ping(self) -> bool:
        return await self.db.ping()

    async def get(self, media_id: str) -> MediaItem | None:
        async with self.db.session() as session:
            row = await session.get(MediaRow, media_id)
            return _to_item(row) if row is not None else None

    async def get_many(self, media_ids: Sequence[str]) -> dict[str, MediaItem]:
        if not media_ids:
            return {}
        async with self.db.session() as session:
            rows = await session.exec(select(MediaRow).where(col(MediaRow.id).in_(media_ids)))
            return {row.id: _to_item(row) for row in rows}

    async def original_keys_of_jobs(self, job_ids: Collection[str]) -> set[str]:
        """The objects the rows of these jobs name (`job_id` is indexed): what a sweep of
        `generated/` must keep."""
        ids = sorted(job_ids)
        keys: set[str] = set()
        async with self.db.session() as session:
            # A few hundred ids a statement keeps far inside any database's parameter limit.
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                rows = await session.exec(
                    select(MediaRow.original_key).where(col(MediaRow.job_id).in_(chunk))
                )
                keys.update(rows)
        return keys

    async def insert_if_absent(self, items: Sequence[MediaItem]) -> list[MediaItem]:
        """Insert the items whose id is new, in one transaction; return what is stored.

        `ON CONFLICT DO NOTHING` rather than read-then-insert: two consumers landing the same
        redelivered event at once both succeed, and both return the rows that won. `RETURNING`
        names the rows this call inserted, so the usual case (all new) is one statement; only
        rows another landing inserted first are read back.
        """
        items = list({item.id: item for item in items}.values())
        if not items:
            return []
        values = [item.model_dump() for item in items]
        # The rows go as parameters, not `.values(rows)`: a statement with literal rows cannot be
        # cached, and compiling it anew was ~10% of media's CPU per image (bench/README.md).
        # SQLAlchemy still sends them as one multi-row INSERT ("insertmanyvalues").
        stmt = (
            dialect_insert(self.db, MediaRow)
            .on_conflict_do_nothing(index_elements=["id"])
            .returning(col(MediaRow.id))
        )
        # A Core statement: a connection in a transaction is all it needs, no ORM session.
        async with self.db.engine.begin() as conn:
            inserted = set((await conn.execute(stmt, values)).scalars())
        won_elsewhere = [item.id for item in items if item.id not in inserted]
        stored = await self.get_many(won_elsewhere) if won_elsewhere else {}
        return [item if item.id in inserted else stored[item.id] for item in items]

    async def list_by_project(
        self, project: str, *, limit: int, offset: int
    ) -> tuple[list[MediaItem], int]:
        """A page of the project's media, newest first, and how many it has in all."""
        async with self.db.session() as session:
            rows = await session.exec(
                select(MediaRow)
                .where(MediaRow.project == project)
                # Images of one task share a landing time: keep them in their generation order.
                .order_by(
                    col(MediaRow.created_at).desc(), col(MediaRow.task_id), col(MediaRow.index)
                )
                .offset(offset)
                .limit(limit)
            )
            items = [_to_item(row) for row in rows]
            total = await session.exec(
                select(func.count()).select_from(MediaRow).where(MediaRow.project == project)
            )
            return items, int(total.one())

    async def find_by_sha256(self, project: str, sha256: str) -> MediaItem | None:
        """The project's oldest item with these bytes: the one an uploaded copy belongs to."""
        async with self.db.session() as session:
            rows = await session.exec(
                select(MediaRow)
                .where(MediaRow.project == project, MediaRow.sha256 == sha256)
                .order_by(col(MediaRow.created_at), col(MediaRow.id))
                .limit(1)
            )
            row = rows.first()
            return _to_item(row) if row is not None else None

    async def mark_delivered(self, project: str, media_ids: Sequence[str], at: datetime) -> int:
        """Set `delivered_at` on those of the project's items that have none; how many changed."""
        if not media_ids:
            return 0
        stmt = (
            update(MediaRow)
            .where(
                col(MediaRow.project) == project,
                col(MediaRow.id).in_(list(media_ids)),
                col(MediaRow.delivered_at).is_(None),
            )
            .values(delivered_at=at)
        )
        async with self.db.engine.begin() as conn:
            result = await conn.execute(stmt)
            return int(result.rowcount)
