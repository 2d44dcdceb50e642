"""Fixtures: a repository on a fresh SQLite file (and on PostgreSQL when
`ATELIER_TEST_DATABASE_URL` is set), and the whole app on FastStream's in-memory broker."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from faststream.nats import JStream, NatsBroker, TestNatsBroker

from atelier_contracts.profiles import ProfileFields, ProfilesChanged
from atelier_contracts.subjects import PROFILES_STREAM, Subject
from atelier_database import Database
from atelier_profiles.main import create_app
from atelier_profiles.repository import ProfileRepository
from atelier_profiles.service import ProfileService
from atelier_profiles.settings import Settings

# The shared test doubles live next to the tests (profiles_testkit).
sys.path.insert(0, str(Path(__file__).parent))

ADMIN_TOKEN = "test-admin-token"
PG_URL_ENV = "ATELIER_TEST_DATABASE_URL"


def profile_fields(**overrides: Any) -> ProfileFields:
    data: dict[str, Any] = {
        "name": "Sketch (offline)",
        "provider": "offline",
        "model": "offline-sketch",
        "sizes": ["1024x1024", "512x512"],
        "default_size": "1024x1024",
        "counts": [1, 2, 4],
        "options": [
            {"name": "quality", "kind": "enum", "values": ["low", "high"], "default": "low"},
            {"name": "steps", "kind": "integer", "minimum": 1, "maximum": 50, "default": 20},
        ],
        "base_url": "https://api.example.com/v1",
        "provider_config": {"style": "pencil"},
    }
    data.update(overrides)
    return ProfileFields.model_validate(data)


@pytest.fixture(params=["sqlite", "postgresql"])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    """A real database per test: a new SQLite file, or this service's tables recreated on PG."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'profiles.db'}"
    else:
        url = os.environ.get(PG_URL_ENV, "")
        if not url:
            pytest.skip(f"set {PG_URL_ENV} to run the PostgreSQL variant")
    db = Database(url)
    repo = ProfileRepository(db)
    await repo.drop_tables()
    await repo.create_tables()
    try:
        yield db
    finally:
        await repo.drop_tables()
        await db.dispose()


@pytest.fixture
def repository(database: Database) -> ProfileRepository:
    return ProfileRepository(database)


@dataclass
class Published:
    """Records events and what the database held when each was published."""

    repo: ProfileRepository
    events: list[ProfilesChanged] = field(default_factory=list)
    visible_at_publish: list[bool] = field(default_factory=list)
    fail: bool = False

    async def __call__(self, event: ProfilesChanged) -> None:
        if self.fail:
            raise ConnectionError("nats down")
        if event.profile_id is not None:
            stored = await self.repo.get_profile(event.profile_id)
            self.visible_at_publish.append(
                stored is not None if event.action != "deleted" else stored is None
            )
        self.events.append(event)


@pytest.fixture
def published(repository: ProfileRepository) -> Published:
    return Published(repository)


@pytest.fixture
def service(repository: ProfileRepository, published: Published) -> ProfileService:
    return ProfileService(repository, published)


@dataclass
class RunningApp:
    client: httpx.AsyncClient
    broker: NatsBroker
    service: ProfileService
    changes: list[ProfilesChanged]
    # For each change: could a reader see the profile when the event arrived?
    visible_at_publish: list[bool]


@pytest.fixture
async def running_app(tmp_path: Path) -> AsyncIterator[RunningApp]:
    """The real app on TestNatsBroker.

    `declare_streams=False` leaves out the one start-up hook that needs a real server; the
    lifespan's `broker.start()` is then the in-memory broker's patched start. The app is driven in
    this event loop (ASGITransport + the lifespan context), so the database and the broker's
    handlers share one loop.
    """
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'profiles.db'}",
        admin_token=ADMIN_TOKEN,
        declare_streams=False,
        nats_url="nats://127.0.0.1:1",  # never contacted: the test broker replaces the connection
    )
    app = create_app(settings)
    broker: NatsBroker = app.state.broker
    service: ProfileService = app.state.service
    changes: list[ProfilesChanged] = []
    visible: list[bool] = []

    @broker.subscriber(
        Subject.PROFILES_CHANGED, stream=JStream(PROFILES_STREAM.name, declare=False)
    )
    async def record_change(event: ProfilesChanged) -> None:
        if event.profile_id is not None and event.action != "deleted":
            visible.append(await service.find_profile(event.profile_id) is not None)
        changes.append(event)

    async with TestNatsBroker(broker), app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport,
            base_url="http://profiles.test",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        ) as client:
            yield RunningApp(client, broker, service, changes, visible)
