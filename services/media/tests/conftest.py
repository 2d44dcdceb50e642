"""Fixtures for media's tests: a real SeaweedFS, a real database, and the service wired to both.

SeaweedFS starts once per session (1-2 s); every test gets its own buckets and its own database
(the workspace's `database_url` fixture: a SQLite file, and a throwaway PostgreSQL database when
ATELIER_TEST_DATABASE_URL names a server), so tests never see each other's objects or rows.
"""

from __future__ import annotations

import hashlib
import io
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field

import pytest
from PIL import Image, UnidentifiedImageError

from atelier_contracts.generation import (
    GenerationCompleted,
    StagedImage,
    generated_image_key,
)
from atelier_contracts.media import MediaLanded
from atelier_contracts.testing import generation_task, profile_snapshot
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
    return MediaService(repo, store, buckets.media, published)


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
def media_bucket(buckets: Buckets) -> str:
    """Where `stage` writes, as a worker does (test_app.py points it at the app's bucket)."""
    return buckets.media


@dataclass
class CurrentTask:
    """The task the next `stage` calls write for, until `completed` builds its event: tests read
    `completed([await stage(a), await stage(b)])` and each such event is a task of its own."""

    job_id: str = "job-1"
    task_id: str = field(default_factory=lambda: f"task-{uuid.uuid4()}")

    def take(self) -> tuple[str, str]:
        taken = (self.job_id, self.task_id)
        self.job_id, self.task_id = "job-1", f"task-{uuid.uuid4()}"
        return taken


@pytest.fixture
def current_task() -> CurrentTask:
    return CurrentTask()


@pytest.fixture
def stage(store: ObjectStore, media_bucket: str, current_task: CurrentTask) -> StageImage:
    """Do what a worker does: write bytes to the media bucket under their generated key,
    describe them. `job_id` / `task_id` pick the task (default: the current one); `key`,
    `sha256` and `write=False` make a worker that errs or lies."""

    async def stage_image(
        data: bytes,
        *,
        index: int = 0,
        seed: int | None = 42,
        job_id: str | None = None,
        task_id: str | None = None,
        key: str | None = None,
        sha256: str | None = None,
        write: bool = True,
    ) -> StagedImage:
        current_task.job_id = job_id or current_task.job_id
        current_task.task_id = task_id or current_task.task_id
        task = _completed([], task_id=current_task.task_id, job_id=current_task.job_id).task
        sha256 = sha256 or hashlib.sha256(data).hexdigest()
        key = key or generated_image_key(task, index, sha256, "image/png")
        if write:
            await store.put_bytes(media_bucket, key, data, "image/png")
        try:
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
        except UnidentifiedImageError:  # a worker can be fooled too: media must check
            width, height = 1, 1
        return StagedImage(
            index=index,
            key=key,
            sha256=sha256,
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
    task = generation_task(
        task_id=task_id or f"task-{uuid.uuid4()}",
        job_id=job_id,
        project=project,
        # test_service checks that an image's provenance is the task's.
        profile=profile_snapshot(id="profile-1", provider="offline", model="offline-sketch"),
        prompt="A lighthouse on a cliff at dusk. Style: ink sketch.",
        size="1024x1024",
        n=max(1, len(images)),
        seed=7,
    )
    return GenerationCompleted(task=task, images=images)


@pytest.fixture
def completed(current_task: CurrentTask) -> Callable[..., GenerationCompleted]:
    """The `gen.completed` of the task the images were staged for (`task_id` / `job_id` name
    another one, as a forged or misrouted event would)."""

    def build(
        images: list[StagedImage],
        *,
        task_id: str | None = None,
        job_id: str | None = None,
        project: str = "proj-1",
    ) -> GenerationCompleted:
        staged_job, staged_task = current_task.take()
        return _completed(
            images, task_id=task_id or staged_task, job_id=job_id or staged_job, project=project
        )

    return build
