"""Project files: upload slots, storing staged uploads, listing, serving, delivered marks.

On a real SeaweedFS and a real database (SQLite, and PostgreSQL when `ATELIER_TEST_DATABASE_URL`
names a server). Bytes go up the way the gateway sends them: an HTTP PUT to the presigned URL.
"""

from __future__ import annotations

import hashlib
import io
import re
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from faststream.nats import TestNatsBroker
from PIL import Image

from atelier_contracts.generation import GenerationCompleted, StagedImage
from atelier_contracts.media import (
    MarkDeliveredCommand,
    MarkDeliveredReply,
    ProjectFileQuery,
    ProjectFileReply,
    ProjectFilesQuery,
    ProjectFilesReply,
    StoreFileCommand,
    StoreFileReply,
    UploadSlotReply,
    UploadSlotRequest,
)
from atelier_contracts.subjects import Subject
from atelier_contracts.testing import QUERY_TIMEOUT_S
from atelier_database import Database
from atelier_devstack import S3Info
from atelier_media.files import (
    FILE_TABLES,
    FilesRepository,
    FilesService,
    check_filename,
    file_content_type,
    file_key,
    uploaded_media_id,
)
from atelier_media.main import create_app
from atelier_media.repository import TABLES, MediaRepository
from atelier_media.service import MediaService, original_key
from atelier_media.settings import Settings
from atelier_messaging import query
from atelier_storage import ObjectStore

pytestmark = pytest.mark.integration

PROJECT = "proj-1"
PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def solid_image(width: int, height: int, fmt: str = "PNG", **save: Any) -> bytes:
    """A gradient (compresses well, unlike random pixels): large images stay cheap to make."""
    image = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    out = io.BytesIO()
    image.save(out, format=fmt, **save)
    return out.getvalue()


@dataclass(frozen=True)
class Buckets:
    staging: str
    media: str


@pytest.fixture(scope="module")
def shared_buckets(seaweed: S3Info) -> Buckets:
    """One bucket pair for the module: every bucket takes volumes of SeaweedFS's few, and keys
    here are content addresses and fresh upload slots, so tests cannot see each other's."""
    suffix = uuid.uuid4().hex[:12]
    made = Buckets(staging=f"staging-files-{suffix}", media=f"media-files-{suffix}")
    client = ObjectStore(
        seaweed.endpoint, seaweed.access_key, seaweed.secret_key, region=seaweed.region
    ).client
    client.make_bucket(made.staging)
    client.make_bucket(made.media)
    return made


@pytest.fixture
def buckets(shared_buckets: Buckets) -> Buckets:
    """Overrides conftest's per-test buckets (the `stage` builder writes into these)."""
    return shared_buckets


class Harness:
    def __init__(self, files: FilesService, media: MediaService, store: ObjectStore) -> None:
        self.files = files
        self.media = media
        self.store = store

    async def upload(self, data: bytes, project: str = PROJECT) -> str:
        """What the gateway does: ask for a slot, PUT the bytes to it."""
        slot = await self.files.upload_slot(project)
        assert slot.put_url is not None and slot.staging_key is not None
        async with httpx.AsyncClient(timeout=10) as client:
            response = await client.put(slot.put_url, content=data)
        assert response.status_code == 200, response.text
        return slot.staging_key

    async def store_file(
        self, data: bytes, filename: str | None = "file.bin", **fields: Any
    ) -> StoreFileReply:
        project = fields.pop("project", PROJECT)
        key = await self.upload(data, project)
        values: dict[str, Any] = {
            "project": project,
            "filename": filename,
            "staging_key": key,
            "size_bytes": len(data),
            "sha256": sha256(data),
            "uploaded_by": "user-1",
        }
        values.update(fields)
        return await self.files.store_file(StoreFileCommand(**values))

    async def staged_left(self, reply_key: str) -> bool:
        return await self.store.exists(self.files.staging_bucket, reply_key)


@pytest.fixture
async def harness(database_url: str, store: ObjectStore, buckets: Any) -> AsyncIterator[Harness]:
    db = Database(database_url)
    await db.create_tables((*TABLES, *FILE_TABLES))
    media_repo = MediaRepository(db)

    async def publish(_: Any) -> None:
        return None

    files = FilesService(
        FilesRepository(db),
        media_repo,
        store,
        buckets.staging,
        buckets.media,
        project_max_files=5,
        project_max_bytes=2_000_000,
    )
    media = MediaService(media_repo, store, buckets.media, publish)
    try:
        yield Harness(files, media, store)
    finally:
        await db.dispose()


async def fetch(url: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.get(url)


# --- upload slots ---------------------------------------------------------------------------


async def test_an_upload_slot_takes_a_put_without_credentials(harness: Harness) -> None:
    slot = await harness.files.upload_slot(PROJECT)
    assert slot.staging_key is not None and slot.put_url is not None
    assert re.fullmatch(rf"uploads/{PROJECT}/[0-9a-f]{{32}}", slot.staging_key)
    assert slot.expires_s == 300 and slot.error is None
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.put(
            slot.put_url, content=b"hello", headers={"Content-Type": "text/plain"}
        )
    assert response.status_code == 200
    staged = await harness.store.get_bytes(harness.files.staging_bucket, slot.staging_key)
    assert staged == b"hello"
    other = await harness.files.upload_slot(PROJECT)
    assert other.staging_key != slot.staging_key


# --- storing --------------------------------------------------------------------------------


async def test_a_png_is_stored_byte_exact_listed_and_served(
    harness: Harness, image_bytes: Callable[..., bytes]
) -> None:
    data = image_bytes(40, 30)
    reply = await harness.store_file(data, "sketch.png", content_type="text/plain")

    assert reply.error is None and reply.file is not None and reply.media is not None
    file = reply.file
    assert (file.filename, file.size_bytes, file.sha256) == ("sketch.png", len(data), sha256(data))
    # An image's type comes from its bytes, not from what the uploader claimed.
    assert file.content_type == "image/png"
    assert file.uploaded_by == "user-1" and file.media_id == reply.media.id

    listing = await harness.files.list_files(ProjectFilesQuery(project=PROJECT))
    assert listing.total == 1 and listing.files == [file]

    served = await harness.files.get_file(PROJECT, "sketch.png")
    assert served.file == file and served.content_url is not None
    response = await fetch(served.content_url)
    assert response.status_code == 200
    assert response.content == data
    assert response.headers["content-type"] == "image/png"

    absent = await harness.files.get_file(PROJECT, "nope.png")
    assert absent.file is None and absent.content_url is None


async def test_a_copy_of_a_generated_image_is_linked_to_it(
    harness: Harness,
    stage: Callable[..., Any],
    completed: Callable[..., GenerationCompleted],
    image_bytes: Callable[..., bytes],
) -> None:
    data = image_bytes(64, 48)
    staged: StagedImage = await stage(data)
    landed = await harness.media.land_generated_images(completed([staged], project=PROJECT))
    generated = landed.media[0]

    reply = await harness.store_file(data, "generated-1754550000000-0.png")

    assert reply.error is None and reply.file is not None
    assert reply.file.media_id == generated.id
    assert reply.media == generated
    items, total = await harness.media.repo.list_by_project(PROJECT, limit=10, offset=0)
    assert total == 1 and items[0].source == "generated"
    # The file and the library item share one object.
    stored = await harness.files.files.get(PROJECT, "generated-1754550000000-0.png")
    assert stored is not None and stored.object_key == generated.original_key


async def test_a_copy_in_another_project_is_not_linked_across(
    harness: Harness,
    stage: Callable[..., Any],
    completed: Callable[..., GenerationCompleted],
    image_bytes: Callable[..., bytes],
) -> None:
    data = image_bytes(32, 32)
    await harness.media.land_generated_images(completed([await stage(data)], project="other"))
    reply = await harness.store_file(data, "copy.png")
    assert reply.media is not None and reply.media.project == PROJECT
    assert reply.media.source == "uploaded"


async def test_an_unknown_image_becomes_an_uploaded_library_item(
    harness: Harness, image_bytes: Callable[..., bytes]
) -> None:
    data = image_bytes(50, 20, "JPEG")
    reply = await harness.store_file(data, "photo.jpeg")

    item = reply.media
    assert item is not None and reply.file is not None
    assert item.id == uploaded_media_id(PROJECT, sha256(data)) == reply.file.media_id
    assert item.source == "uploaded" and item.provider == "upload"
    assert (item.job_id, item.task_id, item.profile_id, item.model, item.prompt) == ("",) * 5
    assert (item.index, item.size, item.width, item.height) == (0, "50x20", 50, 20)
    assert item.content_type == "image/jpeg" and item.original_key == original_key(
        sha256(data), "jpg"
    )
    assert await harness.media.repo.get(item.id) == item
    thumbnail = await harness.store.get_bytes(harness.files.media_bucket, item.thumbnail_key)
    with Image.open(io.BytesIO(thumbnail)) as thumb:
        assert thumb.format == "WEBP"

    # The same image again, under another name: the same library item.
    again = await harness.store_file(data, "photo-copy.jpeg")
    assert again.media == item
    _, total = await harness.media.repo.list_by_project(PROJECT, limit=10, offset=0)
    assert total == 1


async def test_a_pdf_is_a_file_without_a_library_item(harness: Harness) -> None:
    reply = await harness.store_file(PDF, "outline.pdf")

    assert reply.error is None and reply.media is None and reply.file is not None
    assert reply.file.media_id is None
    assert reply.file.content_type == "application/pdf"
    stored = await harness.files.files.get(PROJECT, "outline.pdf")
    assert stored is not None and stored.object_key == file_key(sha256(PDF))
    _, total = await harness.media.repo.list_by_project(PROJECT, limit=10, offset=0)
    assert total == 0
    served = await harness.files.get_file(PROJECT, "outline.pdf")
    assert served.content_url is not None
    response = await fetch(served.content_url)
    assert response.content == PDF and response.headers["content-type"] == "application/pdf"


async def test_bytes_that_only_look_like_an_image_are_kept_as_a_plain_file(
    harness: Harness,
) -> None:
    # A PNG signature and then garbage: refusing it would stop the app's media sync for good.
    broken = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\x0dIHDR" + b"not really"
    reply = await harness.store_file(broken, "half-written.png")

    assert reply.error is None and reply.file is not None and reply.media is None
    assert reply.file.size_bytes == len(broken)
    _, total = await harness.media.repo.list_by_project(PROJECT, limit=10, offset=0)
    assert total == 0


async def test_the_same_name_again_replaces_the_file(
    harness: Harness, image_bytes: Callable[..., bytes]
) -> None:
    await harness.store_file(b"# Chapter one\n", "notes.md")
    second = await harness.store_file(b"# Chapter one, revised\n", "notes.md")

    listing = await harness.files.list_files(ProjectFilesQuery(project=PROJECT))
    assert listing.total == 1
    assert listing.files == [second.file]
    assert listing.files[0].sha256 == sha256(b"# Chapter one, revised\n")
    assert listing.files[0].content_type == "text/markdown"


async def test_files_are_listed_by_name_in_pages(harness: Harness) -> None:
    for name in ("c.txt", "a.txt", "b.txt"):
        await harness.store_file(name.encode(), name)
    page = await harness.files.list_files(ProjectFilesQuery(project=PROJECT, limit=2))
    assert [f.filename for f in page.files] == ["a.txt", "b.txt"] and page.total == 3
    rest = await harness.files.list_files(ProjectFilesQuery(project=PROJECT, limit=2, offset=2))
    assert [f.filename for f in rest.files] == ["c.txt"] and rest.total == 3
    other = await harness.files.list_files(ProjectFilesQuery(project="other"))
    assert other.files == [] and other.total == 0


# --- covers ---------------------------------------------------------------------------------


async def test_a_cover_is_re_encoded_and_replaces_the_previous_cover(harness: Harness) -> None:
    first = await harness.store_file(solid_image(3200, 1000), None, as_cover=True)
    assert first.error is None and first.file is not None and first.media is not None
    await harness.store_file(b"kept", "cover-notes.jpg")  # a file that only looks like one

    big = solid_image(2000, 4000)
    reply = await harness.store_file(big, "ignored.png", as_cover=True)

    assert reply.error is None and reply.file is not None and reply.media is not None
    file = reply.file
    assert re.fullmatch(r"cover-\d{13}\.jpg", file.filename)
    assert file.content_type == "image/jpeg" and file.media_id == reply.media.id
    served = await harness.files.get_file(PROJECT, file.filename)
    assert served.content_url is not None
    jpeg = (await fetch(served.content_url)).content
    assert (len(jpeg), sha256(jpeg)) == (file.size_bytes, file.sha256)
    with Image.open(io.BytesIO(jpeg)) as image:
        assert image.format == "JPEG" and image.mode == "RGB"
        assert image.size == (1280, 2560)  # fit inside 1600x2560, aspect kept
    assert reply.media.source == "uploaded" and reply.media.size == "1280x2560"

    names = [
        f.filename
        for f in (await harness.files.list_files(ProjectFilesQuery(project=PROJECT))).files
    ]
    assert first.file.filename not in names
    assert sorted(names) == sorted([file.filename, "cover-notes.jpg"])
    # The previous cover's library item stays.
    assert await harness.media.repo.get(first.media.id) == first.media


async def test_a_small_cover_is_never_upscaled_and_is_shown_upright(harness: Harness) -> None:
    image = Image.linear_gradient("L").resize((40, 20)).convert("RGBA")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° when shown
    out = io.BytesIO()
    image.convert("RGB").save(out, format="JPEG", exif=exif)
    reply = await harness.store_file(out.getvalue(), None, as_cover=True)
    assert reply.media is not None and (reply.media.width, reply.media.height) == (20, 40)

    transparent = io.BytesIO()
    Image.new("RGBA", (30, 30), (0, 0, 0, 0)).save(transparent, format="PNG")
    flat = await harness.store_file(transparent.getvalue(), None, as_cover=True)
    assert flat.file is not None and flat.media is not None
    jpeg = await harness.store.get_bytes(harness.files.media_bucket, flat.media.original_key)
    with Image.open(io.BytesIO(jpeg)) as cover:
        assert cover.size == (30, 30)
        assert cover.getpixel((15, 15)) == pytest.approx((255, 255, 255), abs=2)


async def test_a_cover_must_be_an_image(harness: Harness) -> None:
    reply = await harness.store_file(PDF, None, as_cover=True)
    assert reply.error is not None
    assert (reply.error.status, reply.error.code) == (400, "not_an_image")


# --- refusals -------------------------------------------------------------------------------


async def refused(harness: Harness, reply_of: Callable[[str], Any]) -> StoreFileReply:
    """Run a store whose command `reply_of(staging_key)` builds; the staged object must go."""
    key = await harness.upload(b"some bytes")
    reply: StoreFileReply = await reply_of(key)
    assert reply.error is not None and reply.file is None
    assert not await harness.staged_left(key)
    return reply


def command(key: str, data: bytes = b"some bytes", **fields: Any) -> StoreFileCommand:
    values: dict[str, Any] = {
        "project": PROJECT,
        "filename": "a.txt",
        "staging_key": key,
        "size_bytes": len(data),
        "sha256": sha256(data),
        "uploaded_by": "user-1",
    }
    values.update(fields)
    return StoreFileCommand(**values)


async def test_a_size_or_hash_mismatch_is_refused_and_the_upload_dropped(
    harness: Harness,
) -> None:
    reply = await refused(harness, lambda key: harness.files.store_file(command(key, b"other")))
    assert (reply.error and reply.error.status, reply.error and reply.error.code) == (
        400,
        "upload_mismatch",
    )
    same_size = b"some bytez"
    reply = await refused(
        harness,
        lambda key: harness.files.store_file(command(key, sha256=sha256(same_size))),
    )
    assert reply.error is not None and reply.error.code == "upload_mismatch"
    assert "sha256" in reply.error.message
    assert (await harness.files.list_files(ProjectFilesQuery(project=PROJECT))).total == 0


async def test_a_missing_upload_is_404(harness: Harness) -> None:
    slot = await harness.files.upload_slot(PROJECT)
    assert slot.staging_key is not None
    reply = await harness.files.store_file(command(slot.staging_key))
    assert reply.error is not None
    assert (reply.error.status, reply.error.code) == (404, "upload_missing")


@pytest.mark.parametrize("filename", [None, ".", ".."])
async def test_a_bad_filename_is_refused(harness: Harness, filename: str | None) -> None:
    reply = await refused(
        harness, lambda key: harness.files.store_file(command(key, filename=filename))
    )
    assert reply.error is not None
    assert (reply.error.status, reply.error.code) == (400, "invalid_filename")


async def test_a_staging_key_of_another_project_is_neither_read_nor_removed(
    harness: Harness,
) -> None:
    key = await harness.upload(b"some bytes", project="other")
    reply = await harness.files.store_file(command(key))
    assert reply.error is not None and reply.error.code == "invalid_staging_key"
    assert await harness.staged_left(key)


async def test_project_limits(harness: Harness) -> None:
    # The harness allows 5 files and 2,000,000 bytes.
    for index in range(5):
        await harness.store_file(b"x", f"f{index}.txt")
    reply = await refused(
        harness, lambda key: harness.files.store_file(command(key, filename="f5.txt"))
    )
    assert reply.error is not None
    assert (reply.error.status, reply.error.code) == (413, "project_files_limit")
    assert "ATELIER_MEDIA_PROJECT_MAX_FILES" in reply.error.message
    # Replacing a file does not count it twice.
    replaced = await harness.store_file(b"y", "f4.txt")
    assert replaced.error is None

    big = b"z" * 1_999_999
    too_much = await harness.store_file(big, "f4.txt")
    assert too_much.error is not None
    assert (too_much.error.status, too_much.error.code) == (413, "project_bytes_limit")
    assert "ATELIER_MEDIA_PROJECT_MAX_BYTES" in too_much.error.message
    # The same bytes fit once the file they replace is not counted with them.
    fits = await harness.store_file(b"z" * 1_999_996, "f4.txt")
    assert fits.error is None


async def test_an_upload_above_the_file_bound_is_refused_unread(harness: Harness) -> None:
    harness.files.upload_max_bytes = 5
    reply = await refused(harness, lambda key: harness.files.store_file(command(key)))
    assert reply.error is not None
    assert (reply.error.status, reply.error.code) == (413, "file_too_large")


# --- delivered marks ------------------------------------------------------------------------


async def test_mark_delivered_sets_the_moment_once_and_only_in_the_project(
    harness: Harness,
    stage: Callable[..., Any],
    completed: Callable[..., GenerationCompleted],
    image_bytes: Callable[..., bytes],
) -> None:
    ours = await harness.media.land_generated_images(
        completed([await stage(image_bytes(8, 8), index=i) for i in range(2)], project=PROJECT)
    )
    theirs = await harness.media.land_generated_images(
        completed([await stage(image_bytes(8, 8))], project="other")
    )
    assert all(item.delivered_at is None for item in ours.media)
    ids = [ours.media[0].id, theirs.media[0].id, "no-such-id"]

    reply = await harness.files.mark_delivered(MarkDeliveredCommand(project=PROJECT, media_ids=ids))

    assert reply.marked == 1
    marked = await harness.media.repo.get(ours.media[0].id)
    assert marked is not None and marked.delivered_at is not None
    assert marked.delivered_at.tzinfo is not None
    untouched = await harness.media.repo.get_many([ours.media[1].id, theirs.media[0].id])
    assert all(item.delivered_at is None for item in untouched.values())
    again = await harness.files.mark_delivered(MarkDeliveredCommand(project=PROJECT, media_ids=ids))
    assert again.marked == 0
    assert await harness.media.repo.get(ours.media[0].id) == marked


# --- rules without storage ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("filename", "declared", "expected"),
    [
        ("notes.md", None, "text/markdown"),
        ("book.epub", None, "application/epub+zip"),
        ("a.webp", None, "image/webp"),
        ("a.pdf", "application/octet-stream", "application/pdf"),
        ("a.bin", None, "application/octet-stream"),
        ("noext", None, "application/octet-stream"),
        ("a.txt", "Text/Plain; charset=utf-8", "text/plain"),
        ("a.txt", "not a type", "text/plain"),
        ("a.txt", "text/<script>", "text/plain"),
    ],
)
def test_content_type(filename: str, declared: str | None, expected: str) -> None:
    assert file_content_type(filename, declared) == expected


@pytest.mark.parametrize("name", ["a.png", "Chapter 1 \u2013 draft.md", "x" * 255, "..a", "a.."])
def test_usable_filenames(name: str) -> None:
    assert check_filename(name) == name


@pytest.mark.parametrize("name", [None, "", ".", "..", "a/b", "a\\b", "a\nb", "x" * 256])
def test_unusable_filenames(name: str | None) -> None:
    with pytest.raises(Exception, match="not a usable file name"):
        check_filename(name)


# --- handlers on the in-memory broker -------------------------------------------------------


@pytest.fixture
async def app(seaweed: S3Info, buckets: Buckets, database_url: str) -> AsyncIterator[FastAPI]:
    app = create_app(
        Settings(
            environment="test",
            run_startup_hooks=False,
            s3_endpoint=seaweed.endpoint,
            s3_access_key=seaweed.access_key,
            s3_secret_key=seaweed.secret_key,
            staging_bucket=buckets.staging,
            media_bucket=buckets.media,
            database_url=database_url,
        )
    )
    await app.state.db.create_tables((*TABLES, *FILE_TABLES))
    yield app
    await app.state.db.dispose()


async def test_the_file_subjects_answer_with_replies_and_refusals(
    app: FastAPI, image_bytes: Callable[..., bytes]
) -> None:
    data = image_bytes(20, 10)
    async with TestNatsBroker(app.state.broker) as broker:
        slot = await query(
            broker,
            Subject.MEDIA_UPLOAD_SLOT,
            UploadSlotRequest(project=PROJECT),
            UploadSlotReply,
            timeout=QUERY_TIMEOUT_S,
        )
        assert slot.staging_key is not None and slot.put_url is not None
        async with httpx.AsyncClient(timeout=10) as client:
            assert (await client.put(slot.put_url, content=data)).status_code == 200
        cmd = command(slot.staging_key, data, filename="a.png")
        stored = await query(
            broker, Subject.MEDIA_STORE_FILE, cmd, StoreFileReply, timeout=QUERY_TIMEOUT_S
        )
        assert stored.error is None and stored.file is not None and stored.media is not None

        # A refusal is an answer, not silence: the gateway must not take media for down.
        again = await query(
            broker, Subject.MEDIA_STORE_FILE, cmd, StoreFileReply, timeout=QUERY_TIMEOUT_S
        )
        assert again.error is not None and again.error.code == "upload_missing"

        listing = await query(
            broker,
            Subject.MEDIA_FILES,
            ProjectFilesQuery(project=PROJECT),
            ProjectFilesReply,
            timeout=QUERY_TIMEOUT_S,
        )
        assert listing.files == [stored.file] and listing.total == 1
        one = await query(
            broker,
            Subject.MEDIA_FILE,
            ProjectFileQuery(project=PROJECT, filename="a.png"),
            ProjectFileReply,
            timeout=QUERY_TIMEOUT_S,
        )
        assert one.file == stored.file and one.content_url is not None
        none = await query(
            broker,
            Subject.MEDIA_FILE,
            ProjectFileQuery(project=PROJECT, filename="b.png"),
            ProjectFileReply,
            timeout=QUERY_TIMEOUT_S,
        )
        assert none.file is None and none.content_url is None
        marked = await query(
            broker,
            Subject.MEDIA_MARK_DELIVERED,
            MarkDeliveredCommand(project=PROJECT, media_ids=[stored.media.id]),
            MarkDeliveredReply,
            timeout=QUERY_TIMEOUT_S,
        )
        assert marked.marked == 1
