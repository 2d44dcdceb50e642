"""Landing against a real SeaweedFS and a real database (SQLite; PostgreSQL when configured)."""

from __future__ import annotations

import asyncio
import hashlib
import io
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import urllib3
from minio import Minio
from PIL import Image
from sqlalchemy import event as sa_event

from atelier_contracts.generation import GenerationCompleted, StagedImage
from atelier_contracts.media import MediaListQuery
from atelier_devstack import S3Info
from atelier_media.repository import MediaRepository
from atelier_media.service import MediaService, StagedImageMissing, UnusableImage, media_id_for
from atelier_storage import ObjectStore

pytestmark = pytest.mark.integration

StageImage = Callable[..., Awaitable[StagedImage]]
Completed = Callable[..., GenerationCompleted]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class CountingPool(urllib3.PoolManager):
    """The S3 client's HTTP pool, tallying each request by method and bucket: what the server
    sees, including any request the SDK makes on its own (a stat before a copy, say)."""

    def __init__(self) -> None:
        super().__init__(
            timeout=urllib3.Timeout(connect=5, read=30),
            retries=urllib3.Retry(total=3, backoff_factor=0.2, status_forcelist=[500, 502, 503]),
        )
        self.requests: Counter[tuple[str, str]] = Counter()

    def urlopen(  # type: ignore[override]
        self, method: str, url: str, *args: Any, **kwargs: Any
    ) -> urllib3.BaseHTTPResponse:
        self.requests[(method, urlsplit(url).path.split("/")[1])] += 1
        return super().urlopen(method, url, *args, **kwargs)


def count_s3_requests(store: ObjectStore, seaweed: S3Info) -> Counter[tuple[str, str]]:
    """From now on, every request `store` (and so the service) sends, by (method, bucket)."""
    pool = CountingPool()
    store.client = Minio(
        seaweed.endpoint,
        access_key=seaweed.access_key,
        secret_key=seaweed.secret_key,
        secure=False,
        region=seaweed.region,
        http_client=pool,
    )
    return pool.requests


def record_sql(repo: MediaRepository) -> list[str]:
    """The verb of every SQL statement the repository runs from now on, and "BEGIN" per
    transaction (SQLAlchemy's begin event: also the implicit one of a read)."""
    statements: list[str] = []
    engine = repo.db.engine.sync_engine

    def on_execute(*args: Any) -> None:
        statements.append(str(args[2]).split()[0].upper())

    def on_begin(conn: Any) -> None:
        statements.append("BEGIN")

    sa_event.listen(engine, "before_cursor_execute", on_execute)
    sa_event.listen(engine, "begin", on_begin)
    return statements


async def object_keys(store: ObjectStore, bucket: str, prefix: str = "") -> list[str]:
    def keys() -> list[str]:
        objects = store.client.list_objects(bucket, prefix=prefix, recursive=True)
        return sorted(str(o.object_name) for o in objects)

    return await asyncio.to_thread(keys)


async def test_landing_stores_original_thumbnail_and_provenance(
    service: MediaService,
    repo: MediaRepository,
    store: ObjectStore,
    buckets: Any,
    published: list[Any],
    stage: StageImage,
    completed: Completed,
    image_bytes: Callable[..., bytes],
) -> None:
    originals = [image_bytes(640, 400), image_bytes(300, 600)]
    staged = [
        await stage(data, index=i, seed=100 + i, job_id="job-9") for i, data in enumerate(originals)
    ]
    event = completed(staged, project="proj-9")

    landed = await service.land_generated_images(event)

    assert published == [landed]
    assert (landed.job_id, landed.project) == ("job-9", "proj-9")
    assert landed.task_id == event.task.task_id
    assert [item.index for item in landed.media] == [0, 1]
    for data, item, (width, height) in zip(
        originals, landed.media, [(640, 400), (300, 600)], strict=True
    ):
        digest = sha256(data)
        # The original is byte-exact, where the worker wrote it: the task's own key.
        prefix = f"generated/job-9/{event.task.task_id}/{item.index}"
        assert item.original_key == f"{prefix}-{digest[:16]}.png"
        stored = await store.get_bytes(buckets.media, item.original_key)
        assert sha256(stored) == digest == item.sha256
        assert (item.content_type, item.size_bytes) == ("image/png", len(data))
        assert (item.width, item.height) == (width, height)
        # The thumbnail is a real WebP within 256 px.
        assert item.thumbnail_key == f"thumbnails/{digest[:2]}/{digest}.webp"
        with Image.open(io.BytesIO(await store.get_bytes(buckets.media, item.thumbnail_key))) as t:
            assert t.format == "WEBP"
            assert max(t.size) == 256
        # Provenance comes from the task as sent.
        assert (item.profile_id, item.provider, item.model) == (
            "profile-1",
            "offline",
            "offline-sketch",
        )
        assert item.prompt == event.task.prompt
        assert item.size == "1024x1024"
        assert item.seed == 100 + item.index
        assert item.revised_prompt == f"revised prompt {item.index}"
        assert item.created_at.tzinfo is not None
        # The row matches what was announced.
        assert await repo.get(item.id) == item
    # Landing copies nothing: the worker's objects and one thumbnail each, staging untouched.
    assert await object_keys(store, buckets.media, "generated/") == sorted(
        image.key for image in staged
    )
    assert len(await object_keys(store, buckets.media, "thumbnails/")) == 2
    assert await object_keys(store, buckets.staging) == []


async def test_only_a_seed_the_worker_reports_is_recorded(
    service: MediaService,
    stage: StageImage,
    completed: Completed,
    image_bytes: Callable[..., bytes],
) -> None:
    # The task carries dispatch's seed (7) to every provider; OpenAI and Gemini never see it, so
    # their worker reports none and none is recorded: a seed on record must reproduce the image.
    unseeded = await stage(image_bytes(64, 48), index=0, seed=None)
    seeded = await stage(image_bytes(48, 64), index=1, seed=7)
    event = completed([unseeded, seeded])
    assert event.task.seed == 7

    landed = await service.land_generated_images(event)

    assert [(item.index, item.seed) for item in landed.media] == [(0, None), (1, 7)]


async def test_landing_the_same_event_twice_yields_one_row_per_image(
    service: MediaService,
    repo: MediaRepository,
    store: ObjectStore,
    buckets: Any,
    published: list[Any],
    stage: StageImage,
    completed: Completed,
    image_bytes: Callable[..., bytes],
) -> None:
    data = image_bytes(200, 200)
    event = completed([await stage(data)])

    first = await service.land_generated_images(event)
    # Redelivery after landing: the object is read and verified again, the row is there.
    second = await service.land_generated_images(event)
    # Redelivery once the object is gone (never, for a landed image's own key): the row answers.
    await store.remove(buckets.media, event.images[0].key)
    third = await service.land_generated_images(event)

    assert first.media == second.media == third.media
    assert first.event_id == second.event_id == third.event_id  # JetStream drops the repeats
    assert len(published) == 3
    items, total = await repo.list_by_project("proj-1", limit=10, offset=0)
    assert total == 1
    assert items == first.media


async def test_identical_bytes_from_another_task_share_the_thumbnail_only(
    service: MediaService,
    repo: MediaRepository,
    store: ObjectStore,
    buckets: Any,
    stage: StageImage,
    completed: Completed,
    image_bytes: Callable[..., bytes],
) -> None:
    data = image_bytes(320, 240)

    a = await service.land_generated_images(completed([await stage(data)]))
    b = await service.land_generated_images(completed([await stage(data)]))

    item_a, item_b = a.media[0], b.media[0]
    assert item_a.id != item_b.id
    assert item_a.task_id != item_b.task_id
    assert item_a.sha256 == item_b.sha256
    # Each worker wrote its task's own original (so either can be removed with its task);
    # the thumbnail media makes is content-addressed.
    assert item_a.original_key != item_b.original_key
    assert item_a.thumbnail_key == item_b.thumbnail_key
    assert await object_keys(store, buckets.media, "generated/") == sorted(
        [item_a.original_key, item_b.original_key]
    )
    assert await object_keys(store, buckets.media, "thumbnails/") == [item_a.thumbnail_key]
    assert (await repo.list_by_project("proj-1", limit=10, offset=0))[1] == 2


async def test_missing_generated_image_that_was_never_landed_is_an_error(
    service: MediaService,
    repo: MediaRepository,
    published: list[Any],
    stage: StageImage,
    completed: Completed,
    image_bytes: Callable[..., bytes],
) -> None:
    ghost = await stage(image_bytes(10, 10), write=False)

    with pytest.raises(StagedImageMissing, match="never landed"):
        await service.land_generated_images(completed([ghost]))

    assert published == []
    assert (await repo.list_by_project("proj-1", limit=10, offset=0))[1] == 0


async def test_bytes_that_are_not_an_image_are_refused_and_nothing_is_stored(
    service: MediaService,
    store: ObjectStore,
    buckets: Any,
    published: list[Any],
    stage: StageImage,
    completed: Completed,
) -> None:
    staged = await stage(b"<html>oops</html>")
    with pytest.raises(UnusableImage):
        await service.land_generated_images(completed([staged]))

    assert published == []
    # Nothing but what the worker wrote (left for the redeliveries to refuse alike).
    assert await object_keys(store, buckets.media) == [staged.key]


async def test_get_media_gives_presigned_urls_that_download(
    service: MediaService,
    stage: StageImage,
    completed: Completed,
    image_bytes: Callable[..., bytes],
) -> None:
    data = image_bytes(500, 250)
    landed = await service.land_generated_images(completed([await stage(data)]))

    reply = await service.get_media(landed.media[0].id)

    assert reply.media == landed.media[0]
    assert reply.content_url is not None and reply.thumbnail_url is not None
    async with httpx.AsyncClient(timeout=10) as client:
        original = await client.get(reply.content_url)
        thumbnail = await client.get(reply.thumbnail_url)
        unsigned = await client.get(reply.content_url.split("?", 1)[0])
    assert original.status_code == 200
    assert sha256(original.content) == sha256(data)
    assert original.headers["content-type"] == "image/png"
    assert thumbnail.status_code == 200
    with Image.open(io.BytesIO(thumbnail.content)) as t:
        assert (t.format, t.size) == ("WEBP", (256, 128))
    assert unsigned.status_code == 403  # the bucket is private: only the signature opens it


async def test_get_unknown_media_answers_none(service: MediaService) -> None:
    reply = await service.get_media("no-such-id")

    assert reply.media is None
    assert reply.content_url is None


async def test_list_media_is_newest_first_paged_and_per_project(
    service: MediaService,
    stage: StageImage,
    completed: Completed,
    image_bytes: Callable[..., bytes],
) -> None:
    older = await service.land_generated_images(
        completed([await stage(image_bytes(64, 64), index=i) for i in range(2)])
    )
    newer = await service.land_generated_images(completed([await stage(image_bytes(64, 64))]))
    await service.land_generated_images(
        completed([await stage(image_bytes(64, 64))], project="other")
    )

    page = await service.list_media(MediaListQuery(project="proj-1", limit=2))
    rest = await service.list_media(MediaListQuery(project="proj-1", limit=2, offset=2))

    assert page.total == rest.total == 3
    assert [i.id for i in page.items + rest.items] == [m.id for m in newer.media + older.media]


async def test_two_consumers_landing_the_same_event_at_once_both_succeed_with_one_row(
    service: MediaService,
    repo: MediaRepository,
    stage: StageImage,
    completed: Completed,
    image_bytes: Callable[..., bytes],
) -> None:
    # What happens when a slow landing outlives ack_wait and JetStream redelivers meanwhile.
    event = completed([await stage(image_bytes(128, 128), index=i) for i in range(2)])

    first, second = await asyncio.gather(
        service.land_generated_images(event), service.land_generated_images(event)
    )

    assert first.media == second.media
    assert (await repo.list_by_project("proj-1", limit=10, offset=0))[1] == 2


@pytest.mark.parametrize("n", [1, 3])
async def test_a_landing_costs_per_image_one_get_one_put_and_one_insert_in_all(
    n: int,
    service: MediaService,
    repo: MediaRepository,
    store: ObjectStore,
    seaweed: S3Info,
    buckets: Any,
    stage: StageImage,
    completed: Completed,
    image_bytes: Callable[..., bytes],
) -> None:
    # Every S3 round trip and every statement costs CPU here and in the server: the worker
    # wrote the original where it stays (its one PUT), so landing reads it once to verify and
    # thumbnail it and writes the thumbnail: no copy, no stat, no clean-up, no read before the
    # insert. 3 S3 requests per image in all, where staging, copying and cleaning up cost 5.
    event = completed([await stage(image_bytes(64, 64), index=i) for i in range(n)])
    requests = count_s3_requests(store, seaweed)
    statements = record_sql(repo)

    first = await service.land_generated_images(event)

    assert requests == {
        ("GET", buckets.media): n,  # the original the worker wrote
        ("PUT", buckets.media): n,  # its thumbnail
    }
    assert statements == ["BEGIN", "INSERT"]  # one transaction, one multi-row INSERT

    # A redelivery after the landing is the same work again; the INSERT finds the rows (and
    # reads back those it did not insert).
    requests.clear()
    statements.clear()
    second = await service.land_generated_images(event)

    assert second.media == first.media
    assert requests == {("GET", buckets.media): n, ("PUT", buckets.media): n}
    assert statements == ["BEGIN", "INSERT", "BEGIN", "SELECT"]


@pytest.mark.parametrize("failing_step", ["get_original", "put_thumbnail", "insert", "publish"])
async def test_a_failure_at_any_step_loses_nothing_and_the_redelivery_lands_the_same_media(
    failing_step: str,
    service: MediaService,
    repo: MediaRepository,
    store: ObjectStore,
    buckets: Any,
    published: list[Any],
    stage: StageImage,
    completed: Completed,
    image_bytes: Callable[..., bytes],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A crash between two steps leaves what a failure there leaves; JetStream then redelivers.
    originals = [image_bytes(64, 64), image_bytes(80, 40)]
    event = completed([await stage(data, index=i) for i, data in enumerate(originals)])
    ids = [media_id_for(event.task.task_id, i) for i in range(2)]

    class Crash(Exception):
        pass

    def fail_once(target: Any, name: str, after: int = 0) -> None:
        real = getattr(target, name)
        calls = 0

        async def failing(*args: Any, **kwargs: Any) -> Any:
            nonlocal calls
            calls += 1
            if calls == after + 1:
                raise Crash(name)
            return await real(*args, **kwargs)

        monkeypatch.setattr(target, name, failing)

    match failing_step:
        case "get_original":
            fail_once(store, "get_bytes_if_exists", after=1)  # the second image's original
        case "put_thumbnail":
            fail_once(store, "put_bytes", after=1)  # the second image's thumbnail
        case "insert":
            fail_once(repo, "insert_if_absent")
        case "publish":
            fail_once(service, "publish")

    with pytest.raises(Crash):
        await service.land_generated_images(event)
    # The worker's objects are untouched by a failed landing.
    assert await object_keys(store, buckets.media, "generated/") == sorted(
        image.key for image in event.images
    )

    landed = await service.land_generated_images(event)

    assert [item.id for item in landed.media] == ids
    assert [item.sha256 for item in landed.media] == [sha256(data) for data in originals]
    assert published[-1] == landed
    items, total = await repo.list_by_project("proj-1", limit=10, offset=0)
    assert total == 2
    assert sorted(items, key=lambda item: item.index) == landed.media
    for item in landed.media:
        assert sha256(await store.get_bytes(buckets.media, item.original_key)) == item.sha256
        assert await store.exists(buckets.media, item.thumbnail_key)
    assert [item.original_key for item in landed.media] == [image.key for image in event.images]


async def test_an_event_with_one_image_missing_records_nothing_and_keeps_the_others(
    service: MediaService,
    repo: MediaRepository,
    store: ObjectStore,
    buckets: Any,
    published: list[Any],
    stage: StageImage,
    completed: Completed,
    image_bytes: Callable[..., bytes],
) -> None:
    present = await stage(image_bytes(64, 64), index=0)
    ghost = await stage(image_bytes(64, 64), index=1, write=False)

    with pytest.raises(StagedImageMissing, match=ghost.key):
        await service.land_generated_images(completed([present, ghost]))

    assert published == []
    assert (await repo.list_by_project("proj-1", limit=10, offset=0))[1] == 0
    # The present image's thumbnail may be stored (content-addressed: a retry rewrites it); its
    # original stays where the worker wrote it until its event lands.
    assert await object_keys(store, buckets.media, "generated/") == [present.key]


async def test_insert_if_absent_returns_the_stored_row_for_an_id_already_there(
    service: MediaService,
    repo: MediaRepository,
    stage: StageImage,
    completed: Completed,
    image_bytes: Callable[..., bytes],
) -> None:
    landed = await service.land_generated_images(completed([await stage(image_bytes(64, 64))]))
    stored = landed.media[0]
    retry = stored.model_copy(update={"created_at": stored.created_at.replace(year=2001)})
    new = stored.model_copy(update={"id": "another-id", "index": 1})

    returned = await repo.insert_if_absent([retry, new])

    assert returned == [stored, new]  # the row that won, not the one offered again
    assert await repo.get_many([stored.id, new.id]) == {stored.id: stored, new.id: new}


@pytest.mark.parametrize("where", ["another task", "another job", "a content address", "a hash"])
async def test_a_key_outside_the_task_is_refused_and_nothing_is_read_recorded_or_removed(
    where: str,
    service: MediaService,
    repo: MediaRepository,
    store: ObjectStore,
    seaweed: S3Info,
    buckets: Any,
    published: list[Any],
    stage: StageImage,
    completed: Completed,
    image_bytes: Callable[..., bytes],
) -> None:
    # An event naming another task's image (or any other object of the media bucket) would
    # record it as this task's, and a clean-up would remove it.
    data = image_bytes(64, 64)
    digest = sha256(data)
    match where:
        case "another task":
            event = completed([await stage(data, task_id="task-a")], task_id="task-b")
        case "another job":
            event = completed([await stage(data, job_id="job-a")], job_id="job-b")
        case "a content address":
            event = completed([await stage(data, key=f"originals/{digest[:2]}/{digest}.png")])
        case "a hash":
            staged = await stage(data)
            other = await stage(image_bytes(64, 64), index=0)
            event = completed([staged.model_copy(update={"key": other.key})])
    requests = count_s3_requests(store, seaweed)

    with pytest.raises(UnusableImage, match="is not its own"):
        await service.land_generated_images(event)
    await service.discard_cancelled_result(event)

    assert requests == {}  # nothing read, written or removed
    assert published == []
    assert (await repo.list_by_project("proj-1", limit=10, offset=0))[1] == 0


async def test_bytes_that_differ_from_their_reported_hash_are_refused(
    service: MediaService,
    repo: MediaRepository,
    store: ObjectStore,
    buckets: Any,
    published: list[Any],
    stage: StageImage,
    completed: Completed,
    image_bytes: Callable[..., bytes],
) -> None:
    # The key names the hash the worker reported; the object holds other bytes (a worker bug,
    # or the object replaced since): never recorded under that name.
    data, claimed = image_bytes(64, 64), sha256(image_bytes(64, 64))
    event = completed([await stage(data, sha256=claimed)])

    with pytest.raises(UnusableImage, match="sha256"):
        await service.land_generated_images(event)

    assert published == []
    assert (await repo.list_by_project("proj-1", limit=10, offset=0))[1] == 0
    assert await object_keys(store, buckets.media, "thumbnails/") == []


async def test_a_second_completion_with_other_bytes_lands_the_first_and_removes_its_object(
    service: MediaService,
    repo: MediaRepository,
    store: ObjectStore,
    buckets: Any,
    published: list[Any],
    stage: StageImage,
    completed: Completed,
    image_bytes: Callable[..., bytes],
) -> None:
    # A redelivered task run twice: the provider's second answer is other bytes, so its worker
    # wrote another object of the same task and index. The first landing stands.
    first = completed([await stage(image_bytes(64, 64))])
    task_id = first.task.task_id
    landed = await service.land_generated_images(first)
    second = completed([await stage(image_bytes(64, 64), task_id=task_id)], task_id=task_id)
    assert second.images[0].key != first.images[0].key

    again = await service.land_generated_images(second)

    assert again.media == landed.media
    assert again.event_id == landed.event_id  # JetStream drops the repeat
    assert await object_keys(store, buckets.media, "generated/") == [first.images[0].key]
    assert (await repo.list_by_project("proj-1", limit=10, offset=0))[1] == 1
    # Its redelivery finds its object gone and the row there.
    assert (await service.land_generated_images(second)).media == landed.media


async def test_a_cancelled_result_has_its_objects_removed_but_never_a_landed_one(
    service: MediaService,
    store: ObjectStore,
    buckets: Any,
    published: list[Any],
    stage: StageImage,
    completed: Completed,
    image_bytes: Callable[..., bytes],
) -> None:
    late = completed([await stage(image_bytes(64, 64), index=i) for i in range(2)])
    # A task that landed before its job was cancelled, its completion redelivered after.
    landed_before = completed([await stage(image_bytes(64, 64))])
    landed = await service.land_generated_images(landed_before)

    await service.discard_cancelled_result(late)
    await service.discard_cancelled_result(landed_before)

    assert await object_keys(store, buckets.media, "generated/") == [landed.media[0].original_key]
    assert len(published) == 1
    # Removing what is already gone is no error (a redelivered cancelled result).
    await service.discard_cancelled_result(late)
