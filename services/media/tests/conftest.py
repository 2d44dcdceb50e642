"""Fixtures for media's tests: a real SeaweedFS, a real database, and the service wired to both.

SeaweedFS starts once per session (1-2 s); every test gets its own buckets and its own database
(the workspace's `database_url` fixture: a SQLite file, and a throwaway PostgreSQL database when
ATELIER_TEST_DATABASE_URL names a server), so tests never see each other's objects or rows.
"""

from __future__ import annotations

import io
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from PIL import Image, UnidentifiedImageError

from atelier_contracts.generation import GenerationCompleted, GenerationTask, StagedImage
from atelier_contracts.media import MediaLanded
from atelier_contracts.profiles import ProfileSnapshot
from atelier_database import Database
from atelier_devstack import S3Info, Supervisor, start_seaweed
from atelier_media.repository import TABLES, MediaRepository
from atelier_media.service import MediaService
from atelier_storage import ObjectStore

S3_ACCESS_KEY = "media-tests"
S3_SECRET_KEY = "media-tests-secret"


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Info]:
    root = tmp_path_factory.mktemp("media-seaweed")
    with Supervisor(root / "logs") as sup:
        # One bucket up front: start_seaweed proves readiness by writing into it.
        yield start_seaweed(sup, root / "data", S3_ACCESS_KEY, S3_SECRET_KEY, ["media-tests"])


@pytest.fixture
def store(seaweed: S3Info) -> ObjectStore:
    return ObjectStore(
        seaweed.endpoint, seaweed.access_key, seaweed.secret_key, region=seaweed.region
    )


@dataclass(frozen=True)
class Buckets:
    staging: str
    media: str


@pytest.fixture
async def buckets(store: ObjectStore) -> Buckets:
    suffix = uuid.uuid4().hex[:12]
    made = Buckets(staging=f"staging-{suffix}", media=f"media-{suffix}")
    await store.ensure_bucket(made.staging)
    await store.ensure_bucket(made.media)
    return made


@pytest.fixture
async def repo(database_url: str) -> AsyncIterator[MediaRepository]:
    """On a fresh database from the workspace's `database_url` fixture (SQLite, PostgreSQL)."""
    db = Database(database_url)
    await db.create_tables(TABLES)
    try:
        yield MediaRepository(db)
    finally:
        await db.dispose()


class Published(list[MediaLanded]):
    """Stands in for the broker: records what the service publishes."""

    async def __call__(self, event: MediaLanded) -> None:
        self.append(event)


@pytest.fixture
def published() -> Published:
    return Published()


@pytest.fixture
def service(
    repo: MediaRepository, store: ObjectStore, buckets: Buckets, published: Published
) -> MediaService:
    return MediaService(repo, store, buckets.staging, buckets.media, published)


# Builders, as fixtures: with --import-mode=importlib test modules cannot import conftest.


def _image_bytes(width: int, height: int, fmt: str = "PNG", mode: str = "RGB") -> bytes:
    """Random pixels, so every call yields different bytes (and a different sha256)."""
    image = Image.frombytes(mode, (width, height), os.urandom(width * height * len(mode)))
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


@pytest.fixture
def image_bytes() -> Callable[..., bytes]:
    return _image_bytes


StageImage = Callable[..., Awaitable[StagedImage]]


@pytest.fixture
def stage(store: ObjectStore, buckets: Buckets) -> StageImage:
    """Do what a worker does: write bytes to the staging bucket, describe them."""

    async def stage_image(
        data: bytes, *, index: int = 0, key: str | None = None, seed: int | None = 42
    ) -> StagedImage:
        key = key or f"staging/{uuid.uuid4()}/{index}.png"
        await store.put_bytes(buckets.staging, key, data, "image/png")
        try:
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
        except UnidentifiedImageError:  # a worker can be fooled too: media must check
            width, height = 1, 1
        return StagedImage(
            index=index,
            staging_key=key,
            content_type="image/png",
            width=width,
            height=height,
            size_bytes=len(data),
            seed=seed,
            revised_prompt=f"revised prompt {index}",
        )

    return stage_image


def _completed(
    images: list[StagedImage],
    *,
    task_id: str | None = None,
    job_id: str = "job-1",
    project: str = "proj-1",
) -> GenerationCompleted:
    task = GenerationTask(
        task_id=task_id or f"task-{uuid.uuid4()}",
        job_id=job_id,
        user_id="user-1",
        project=project,
        profile=ProfileSnapshot(
            id="profile-1",
            name="Sketch (offline)",
            provider="offline",
            model="offline-sketch",
            timeout_s=60,
            prompt_max_length=4000,
            max_reference_images=0,
            credit_cost=1.0,
        ),
        prompt="A lighthouse on a cliff at dusk. Style: ink sketch.",
        size="1024x1024",
        n=max(1, len(images)),
        first_index=0,
        seed=7,
        deadline_at=datetime.now(UTC) + timedelta(minutes=5),
    )
    return GenerationCompleted(task=task, images=images)


@pytest.fixture
def completed() -> Callable[..., GenerationCompleted]:
    return _completed
