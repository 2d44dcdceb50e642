"""Use this image: a project's cover and its elements' images.

A small domain of its own beside landing: one table (`media_assignments`), one event in
(`media.assigned`), one query out (`media.query.assignments`). `AssignmentRepository` holds all
of its SQL, `AssignmentService` its rules; no broker and no HTTP here, as in `service.py`.

Each slot (the cover of a project, or one element's image) holds one image, and the newest
choice wins: "newest" is the event's `occurred_at`, ties broken by event id, decided inside the
database in one conditional upsert. So a redelivered event (same id, same time) changes nothing,
an old event arriving after a newer one changes nothing, and two replicas recording two choices
at once end with the same winner whichever commits first.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Column, DateTime, and_, or_
from sqlmodel import Field, SQLModel, select

from atelier_contracts.clock import as_utc
from atelier_contracts.media import MediaAssigned, ProjectAssignmentsReply
from atelier_database import Database
from atelier_media.repository import MediaRepository, dialect_insert

log = logging.getLogger("atelier.media.assignments")

# The cover has no element; an empty string (not NULL) keeps it inside the primary key.
_NO_ELEMENT = ""


class AssignmentRow(SQLModel, table=True):
    """The image currently chosen for one slot of a project."""

    __tablename__ = "media_assignments"

    project: str = Field(primary_key=True)
    target: str = Field(primary_key=True)  # "cover" or "element"
    element_id: str = Field(primary_key=True, default=_NO_ELEMENT)
    media_id: str
    assigned_by: str
    assigned_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    event_id: str


ASSIGNMENT_TABLES = (AssignmentRow,)


@dataclass(frozen=True)
class Slot:
    target: str
    element_id: str
    media_id: str


class AssignmentRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def record(self, event: MediaAssigned) -> bool:
        """Store the choice unless the slot holds a newer one; True when the slot changed."""
        values: dict[str, Any] = {
            "project": event.project,
            "target": event.target,
            "element_id": event.element_id or _NO_ELEMENT,
            "media_id": event.media_id,
            "assigned_by": event.assigned_by,
            "assigned_at": as_utc(event.occurred_at),
            "event_id": str(event.event_id),
        }
        insert = dialect_insert(self.db, AssignmentRow).values(values)
        table: Any = AssignmentRow.__table__  # type: ignore[attr-defined]
        current, incoming = table.c, insert.excluded
        newer = or_(
            current.assigned_at < incoming.assigned_at,
            and_(
                current.assigned_at == incoming.assigned_at,
                current.event_id < incoming.event_id,
            ),
        )
        stmt = insert.on_conflict_do_update(
            index_elements=["project", "target", "element_id"],
            set_={
                "media_id": incoming.media_id,
                "assigned_by": incoming.assigned_by,
                "assigned_at": incoming.assigned_at,
                "event_id": incoming.event_id,
            },
            where=newer,
        ).returning(current.event_id)
        # RETURNING rather than rowcount: drivers disagree on the count of an upsert whose
        # update was skipped, while a row comes back only when one was written.
        async with self.db.engine.begin() as conn:
            result = await conn.execute(stmt)
            return result.first() is not None

    async def of_project(self, project: str) -> list[Slot]:
        """Every filled slot of the project."""
        async with self.db.session() as session:
            rows = await session.exec(select(AssignmentRow).where(AssignmentRow.project == project))
            return [Slot(row.target, row.element_id, row.media_id) for row in rows]


class AssignmentService:
    def __init__(self, assignments: AssignmentRepository, media: MediaRepository) -> None:
        self.assignments = assignments
        self.media = media

    async def record_assignment(self, event: MediaAssigned) -> bool:
        """Record a writer's choice; True when it is now the slot's image.

        The gateway publishes only for media it found in the project, so an unknown image (or
        one of another project) is a message that can never succeed: it is logged and dropped
        rather than retried until the redelivery limit.
        """
        item = await self.media.get(event.media_id)
        if item is None or item.project != event.project:
            log.warning(
                "ignored an assignment of media not in its project",
                extra={
                    "event_id": str(event.event_id),
                    "media_id": event.media_id,
                    "project": event.project,
                },
            )
            return False
        changed = await self.assignments.record(event)
        log.info(
            "recorded an assignment" if changed else "kept a newer assignment",
            extra={
                "event_id": str(event.event_id),
                "media_id": event.media_id,
                "project": event.project,
                "target": event.target,
                "element_id": event.element_id,
            },
        )
        return changed

    async def project_assignments(self, project: str) -> ProjectAssignmentsReply:
        slots = await self.assignments.of_project(project)
        media = await self.media.get_many([slot.media_id for slot in slots])
        reply = ProjectAssignmentsReply()
        for slot in sorted(slots, key=lambda s: s.element_id):
            item = media.get(slot.media_id)
            if item is None:  # cannot happen today (media is never deleted); skip, don't fail
                continue
            if slot.target == "cover":
                reply.cover = item
            else:
                reply.elements[slot.element_id] = item
        return reply
