"""Use this image: recording `media.assigned` and answering a project's assignments.

On a real database (SQLite, and PostgreSQL when `ATELIER_TEST_DATABASE_URL` names a server); the
handler test runs the app's wiring on FastStream's in-memory broker. No object storage is needed:
the media rows are inserted directly, as landing would have left them.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from faststream.nats import TestNatsBroker
from pydantic import ValidationError

from atelier_contracts.media import (
    MediaAssigned,
    ProjectAssignmentsQuery,
    ProjectAssignmentsReply,
)
from atelier_contracts.subjects import Subject
from atelier_contracts.testing import QUERY_TIMEOUT_S, media_item
from atelier_database import Database
from atelier_media.assignments import (
    ASSIGNMENT_TABLES,
    AssignmentRepository,
    AssignmentService,
)
from atelier_media.main import create_app
from atelier_media.repository import TABLES, MediaRepository
from atelier_media.settings import Settings
from atelier_messaging import publish_event, query

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def assigned(media_id: str, at: datetime = T0, **fields: Any) -> MediaAssigned:
    values: dict[str, Any] = {
        "media_id": media_id,
        "project": "proj-1",
        "target": "cover",
        "assigned_by": "user-1",
        "occurred_at": at,
    }
    values.update(fields)
    return MediaAssigned(**values)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    db = Database(database_url)
    await db.create_tables((*TABLES, *ASSIGNMENT_TABLES))
    try:
        yield db
    finally:
        await db.dispose()


@pytest.fixture
async def assignments(db: Database) -> AssignmentService:
    media = MediaRepository(db)
    items = [media_item(id=media_id, project="proj-1") for media_id in ("m1", "m2", "m3")]
    await media.insert_if_absent([*items, media_item(id="other", project="proj-2")])
    return AssignmentService(AssignmentRepository(db), media)


async def test_nothing_assigned_is_an_empty_answer(assignments: AssignmentService) -> None:
    reply = await assignments.project_assignments("proj-1")
    assert reply == ProjectAssignmentsReply(cover=None, elements={})


async def test_cover_and_element_images_are_recorded_per_slot(
    assignments: AssignmentService,
) -> None:
    assert await assignments.record_assignment(assigned("m1"))
    assert await assignments.record_assignment(assigned("m2", target="element", element_id="mara"))
    assert await assignments.record_assignment(
        assigned("m3", target="element", element_id="harbour")
    )

    reply = await assignments.project_assignments("proj-1")
    assert reply.cover is not None and reply.cover.id == "m1"
    assert {k: v.id for k, v in reply.elements.items()} == {"harbour": "m3", "mara": "m2"}
    # Another project sees none of it.
    assert await assignments.project_assignments("proj-2") == ProjectAssignmentsReply()


async def test_the_newest_choice_wins_whatever_the_arrival_order(
    assignments: AssignmentService,
) -> None:
    newer = assigned("m2", T0 + timedelta(seconds=5))
    older = assigned("m1", T0)
    assert await assignments.record_assignment(newer)
    # The older choice arrives late (a redelivery after a failure): it must not win.
    assert not await assignments.record_assignment(older)
    reply = await assignments.project_assignments("proj-1")
    assert reply.cover is not None and reply.cover.id == "m2"

    newest = assigned("m3", T0 + timedelta(seconds=9))
    assert await assignments.record_assignment(newest)
    reply = await assignments.project_assignments("proj-1")
    assert reply.cover is not None and reply.cover.id == "m3"


async def test_same_time_is_decided_by_event_id_the_same_way_every_time(
    assignments: AssignmentService,
) -> None:
    low = assigned("m1", event_id=uuid.UUID(int=1))
    high = assigned("m2", event_id=uuid.UUID(int=2))
    assert await assignments.record_assignment(high)
    assert not await assignments.record_assignment(low)
    reply = await assignments.project_assignments("proj-1")
    assert reply.cover is not None and reply.cover.id == "m2"


async def test_a_redelivered_event_changes_nothing(assignments: AssignmentService) -> None:
    event = assigned("m1", target="element", element_id="mara")
    assert await assignments.record_assignment(event)
    assert not await assignments.record_assignment(event)
    assert not await assignments.record_assignment(event.model_copy())
    reply = await assignments.project_assignments("proj-1")
    assert {k: v.id for k, v in reply.elements.items()} == {"mara": "m1"}


async def test_concurrent_choices_end_with_the_newest(assignments: AssignmentService) -> None:
    events = [assigned(f"m{i % 3 + 1}", T0 + timedelta(seconds=i)) for i in range(12)]
    await asyncio.gather(*(assignments.record_assignment(e) for e in reversed(events)))
    reply = await assignments.project_assignments("proj-1")
    assert reply.cover is not None and reply.cover.id == events[-1].media_id


async def test_media_unknown_or_of_another_project_is_dropped(
    assignments: AssignmentService,
) -> None:
    assert not await assignments.record_assignment(assigned("no-such-media"))
    assert not await assignments.record_assignment(assigned("other"))  # lives in proj-2
    assert await assignments.project_assignments("proj-1") == ProjectAssignmentsReply()


def test_the_event_needs_an_element_id_exactly_for_element_targets() -> None:
    with pytest.raises(ValidationError):
        assigned("m1", target="element")
    with pytest.raises(ValidationError):
        assigned("m1", target="cover", element_id="mara")
    with pytest.raises(ValidationError):
        assigned("m1", target="poster")


async def test_handlers_record_the_event_and_answer_the_query(database_url: str) -> None:
    app = create_app(
        Settings(environment="test", run_startup_hooks=False, database_url=database_url)
    )
    db: Database = app.state.db
    await db.create_tables((*TABLES, *ASSIGNMENT_TABLES))
    await MediaRepository(db).insert_if_absent(
        [media_item(id=media_id, project="proj-1") for media_id in ("m1", "m2")]
    )
    try:
        async with TestNatsBroker(app.state.broker) as broker:
            await publish_event(broker, assigned("m1"), Subject.MEDIA_ASSIGNED)
            await publish_event(
                broker,
                assigned("m2", target="element", element_id="mara"),
                Subject.MEDIA_ASSIGNED,
            )
            reply = await query(
                broker,
                Subject.MEDIA_ASSIGNMENTS,
                ProjectAssignmentsQuery(project="proj-1"),
                ProjectAssignmentsReply,
                timeout=QUERY_TIMEOUT_S,
            )
    finally:
        await db.dispose()
    assert reply.cover is not None and reply.cover.id == "m1"
    assert {k: v.id for k, v in reply.elements.items()} == {"mara": "m2"}
