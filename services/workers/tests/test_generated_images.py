"""Where a worker writes what a provider returned: once, to its final place in the media bucket
(a real SeaweedFS), under a key unique to the task's bytes that media checks."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from atelier_contracts.generation import GenerationCompleted, GenerationTask, generated_image_key
from atelier_contracts.testing import generation_task
from atelier_devstack import S3Info, Supervisor, start_seaweed
from atelier_storage import ObjectStore
from atelier_workers.adapters import get_adapter
from atelier_workers.service import WorkerService

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Info]:
    root: Path = tmp_path_factory.mktemp("workers-seaweed")
    with Supervisor(root / "logs") as sup:
        yield start_seaweed(sup, root / "data", "workers-tests", "workers-secret", ["ready"])


def _task(task_id: str, n: int) -> GenerationTask:
    return generation_task(
        task_id=task_id, job_id="job-1", size="64x48", n=n, first_index=2, seed=7
    )


async def _keys(store: ObjectStore, bucket: str) -> list[str]:
    def keys() -> list[str]:
        objects = store.client.list_objects(bucket, recursive=True)
        return sorted(str(o.object_name) for o in objects)

    return await asyncio.to_thread(keys)


async def test_each_image_is_written_once_to_the_media_bucket_under_its_task_and_hash(
    seaweed: S3Info,
) -> None:
    store = ObjectStore(seaweed.endpoint, seaweed.access_key, seaweed.secret_key)
    await store.ensure_bucket("staging")
    await store.ensure_bucket("media")
    async with httpx.AsyncClient() as client:
        service = WorkerService(
            get_adapter("offline"), store, "staging", client, media_bucket="media"
        )
        task = _task("task-1", n=2)
        result = await service.run_task(task)

    assert isinstance(result, GenerationCompleted)
    assert [image.index for image in result.images] == [2, 3]
    # The offline provider draws from the seed it is given: each image reports its own.
    assert [image.seed for image in result.images] == [7, 8]
    for image in result.images:
        data = await store.get_bytes("media", image.key)
        assert hashlib.sha256(data).hexdigest() == image.sha256
        assert image.key == generated_image_key(task, image.index, image.sha256, "image/png")
        assert image.key.startswith(f"generated/job-1/task-1/{image.index}-{image.sha256[:16]}")
        assert (image.content_type, image.size_bytes) == ("image/png", len(data))
    # Nothing is staged: media lands the objects where they are.
    assert await _keys(store, "media") == sorted(image.key for image in result.images)
    assert await _keys(store, "staging") == []
