"""The sweep of what nobody will land or store (issue 17): unlanded results under `generated/`
and abandoned uploads under the staging bucket's `uploads/`.

Unit tests on an in-memory store and rows, with the times the test gives; then the same sweep on
a real SeaweedFS and database (SQLite; PostgreSQL when ATELIER_TEST_DATABASE_URL is set), with
an image landed the way media lands it. tests/reliability/test_nothing_left_behind.py runs it on
the real stack.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from atelier_contracts.generation import GenerationCompleted, StagedImage
from atelier_media.repository import MediaRepository
from atelier_media.service import MediaService
from atelier_media.sweep import UnlandedSweeper, generated_job_of, unlanded_keys
from atelier_storage import ObjectStore, StoredObject

MEDIA, STAGING = "media", "staging"
NOW = datetime.now(UTC)
HOUR = timedelta(hours=1)
DAY_S = 24 * 3600.0
JOB = "8a5bd7a2-43a8-4b8f-9d7c-1f1e1f0b9c11"


def generated(job: str = JOB, task: str = "t1", name: str = "0-0123456789abcdef.png") -> str:
    return f"generated/{job}/{task}/{name}"


@dataclass
class MemoryStore:
    """Two buckets of objects with their last-written times; lists in pages of `page_size`."""

    buckets: dict[str, dict[str, datetime]] = field(
        default_factory=lambda: {MEDIA: {}, STAGING: {}}
    )
    page_size: int = 2

    def put(self, bucket: str, key: str, age: timedelta = timedelta(0)) -> None:
        self.buckets[bucket][key] = NOW - age

    def keys(self, bucket: str) -> list[str]:
        return sorted(self.buckets[bucket])

    async def list_pages(self, bucket: str, prefix: str) -> AsyncIterator[list[StoredObject]]:
        objects = self.buckets[bucket]
        listed = sorted(k for k in objects if k.startswith(prefix))
        for start in range(0, len(listed), self.page_size):
            yield [StoredObject(k, objects[k]) for k in listed[start : start + self.page_size]]

    async def remove_many(self, bucket: str, keys: Sequence[str]) -> int:
        for key in keys:
            self.buckets[bucket].pop(key, None)
        return len(keys)

    async def remove_prefix(
        self, bucket: str, prefix: str, *, older_than: datetime | None = None
    ) -> int:
        objects = self.buckets[bucket]
        doomed = [
            k
            for k, at in objects.items()
            if k.startswith(prefix) and (older_than is None or at < older_than)
        ]
        return await self.remove_many(bucket, doomed)


@dataclass
class Rows:
    """media_items' `original_key` by job; `queries` records each lookup's jobs."""

    keys: dict[str, set[str]] = field(default_factory=dict)
    queries: list[set[str]] = field(default_factory=list)

    def land(self, key: str) -> None:
        job = generated_job_of(key)
        assert job is not None
        self.keys.setdefault(job, set()).add(key)

    async def original_keys_of_jobs(self, job_ids: Collection[str]) -> set[str]:
        self.queries.append(set(job_ids))
        return {key for job in job_ids for key in self.keys.get(job, set())}


def test_generated_job_of_reads_only_a_workers_key_shape() -> None:
    assert generated_job_of(generated()) == JOB
    assert generated_job_of(f"generated/{JOB}/t1") is None  # no image name
    assert generated_job_of(f"generated/{JOB}/t1/x/y.png") is None
    assert generated_job_of("generated//t1/0-a.png") is None
    assert generated_job_of("originals/ab/abcdef.png") is None
    assert generated_job_of("thumbnails/ab/abcdef.webp") is None


def test_unlanded_keys_are_old_and_named_by_no_row() -> None:
    cutoff = NOW - 24 * HOUR
    landed, orphan, young = generated(task="a"), generated(task="b"), generated(task="c")
    page = [
        StoredObject(landed, NOW - 48 * HOUR),
        StoredObject(orphan, NOW - 48 * HOUR),
        StoredObject(young, NOW - HOUR),  # its gen.completed may still be on its way
        StoredObject(generated(task="d"), None),  # no time: never taken for old
        StoredObject("generated/odd", NOW - 48 * HOUR),  # not a worker's key: left alone
    ]
    assert unlanded_keys(page, cutoff, {landed}) == [orphan]


async def test_the_sweep_deletes_unlanded_results_and_keeps_everything_a_row_names() -> None:
    store, rows = MemoryStore(), Rows()
    other = "0f0e0d0c-0b0a-4908-8706-050403020100"
    landed = generated(task="t1", name="0-1111111111111111.png")
    rows.land(landed)
    # The task ran twice (the worker died after its PUT); the retry's image landed.
    died = generated(task="t1", name="0-2222222222222222.png")
    # The job was cancelled while the worker wrote, and media refused another's bytes.
    cancelled = generated(job=other, task="t9", name="0-3333333333333333.png")
    refused = generated(job=other, task="t8", name="1-4444444444444444.webp")
    for key in (landed, died, cancelled, refused):
        store.put(MEDIA, key, age=30 * HOUR)
    # Written minutes ago: its landing may be in flight, whatever the rows say now.
    in_flight = generated(task="t2", name="0-5555555555555555.png")
    store.put(MEDIA, in_flight, age=timedelta(minutes=5))
    # The library's own objects are never listed.
    for key in ("originals/ab/ab12.png", "thumbnails/ab/ab12.webp", "files/ab/ab12"):
        store.put(MEDIA, key, age=300 * HOUR)

    swept = await UnlandedSweeper(rows, store, MEDIA, STAGING).sweep(DAY_S)

    assert (swept.generated, swept.uploads) == (3, 0)
    assert store.keys(MEDIA) == sorted(
        [landed, in_flight, "originals/ab/ab12.png", "thumbnails/ab/ab12.webp", "files/ab/ab12"]
    )
    # Pages of two: [other's two], [JOB's two], [the young one]. One query a page with old
    # objects, for their jobs only; none for a page of young ones.
    assert rows.queries == [{other}, {JOB}]


async def test_abandoned_uploads_go_once_old_and_young_ones_stay() -> None:
    store = MemoryStore()
    store.put(STAGING, "uploads/proj/" + "a" * 32, age=25 * HOUR)  # the gateway died after its PUT
    store.put(STAGING, "uploads/proj/" + "b" * 32, age=timedelta(seconds=2))  # being stored now
    store.put(STAGING, "refs/job/0.png", age=48 * HOUR)  # context's: not media's to sweep

    swept = await UnlandedSweeper(Rows(), store, MEDIA, STAGING).sweep(DAY_S)

    assert (swept.generated, swept.uploads) == (0, 1)
    assert store.keys(STAGING) == ["refs/job/0.png", "uploads/proj/" + "b" * 32]


async def test_a_sweep_of_fresh_objects_asks_the_database_nothing() -> None:
    store, rows = MemoryStore(), Rows()
    for n in range(5):
        store.put(MEDIA, generated(task=f"t{n}"), age=HOUR)
    swept = await UnlandedSweeper(rows, store, MEDIA, STAGING).sweep(DAY_S)
    assert swept.generated == 0 and len(store.keys(MEDIA)) == 5
    assert rows.queries == []


# -- on a real SeaweedFS and database -------------------------------------------------------

StageImage = Callable[..., Awaitable[StagedImage]]
Completed = Callable[..., GenerationCompleted]


async def _keys(store: ObjectStore, bucket: str, prefix: str = "") -> list[str]:
    def keys() -> list[str]:
        objects = store.client.list_objects(bucket, prefix=prefix, recursive=True)
        return sorted(str(o.object_name) for o in objects)

    return await asyncio.to_thread(keys)


@pytest.mark.integration
async def test_an_unlanded_result_is_swept_and_a_landed_one_kept_on_seaweedfs(
    service: MediaService,
    repo: MediaRepository,
    store: ObjectStore,
    buckets: Any,  # conftest's Buckets: staging and media
    stage: StageImage,
    completed: Completed,
    image_bytes: Callable[..., bytes],
) -> None:
    landed = await stage(image_bytes(8, 8), job_id=JOB)
    task_id = landed.key.split("/")[2]
    await service.land_generated_images(completed([landed]))
    # The same task's first attempt, whose worker died after writing it: no event ever came.
    orphan = await stage(image_bytes(8, 8), job_id=JOB, task_id=task_id)
    assert orphan.key != landed.key
    await store.put_bytes(buckets.staging, "uploads/proj/" + "a" * 32, b"file", "text/plain")
    thumbnails = await _keys(store, buckets.media, "thumbnails/")
    sweeper = UnlandedSweeper(repo, store, buckets.media, buckets.staging)

    # Young: kept, whatever the rows say (a landing may be on its way).
    kept = await sweeper.sweep(3600)
    assert (kept.generated, kept.uploads) == (0, 0)
    assert orphan.key in await _keys(store, buckets.media, "generated/")

    # Everything is "older" than a cutoff in the future: only what no row names goes.
    swept = await sweeper.sweep(-5)
    assert (swept.generated, swept.uploads) == (1, 1)
    assert await _keys(store, buckets.media, "generated/") == [landed.key]
    assert await _keys(store, buckets.staging, "uploads/") == []
    assert await _keys(store, buckets.media, "thumbnails/") == thumbnails
    assert await repo.original_keys_of_jobs({JOB, "another-job"}) == {landed.key}
    # A page's jobs go in statements of a few hundred ids.
    many = {f"job-{n}" for n in range(1200)} | {JOB}
    assert await repo.original_keys_of_jobs(many) == {landed.key}
