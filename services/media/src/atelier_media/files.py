"""Project files: what the app's media sync and cover upload store, under the app's own names.

A domain of its own beside landing and assignments: one table (`project_files`), commands to hand
out an upload slot and to store what was put there, queries for a project's files, and the
"delivered" mark on generated images. `FilesRepository` holds all of its SQL, `FilesService` its
rules; no broker and no HTTP here, as in `service.py`.

The gateway holds no storage credentials (ADR 0004): it asks for a slot (a presigned PUT into the
staging bucket), PUTs the bytes there itself, then asks media to store them. Files are kept byte
for byte under a content address (covers excepted: they are re-encoded as the app's backend does),
and every image among them is also a library item: the generated image it is a copy of (same
bytes, same project), or a new item with `source="uploaded"`.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import mimetypes
import re
import uuid
from collections.abc import Sequence
from dataclasses import KW_ONLY, dataclass
from datetime import UTC, datetime
from typing import Any

from PIL import Image, ImageOps
from sqlalchemy import BigInteger, Column, DateTime, delete, func
from sqlmodel import Field, SQLModel, col, select

from atelier_contracts.clock import utcnow
from atelier_contracts.errors import AtelierError, NotFound
from atelier_contracts.media import (
    FILENAME_PATTERN,
    MarkDeliveredCommand,
    MarkDeliveredReply,
    MediaItem,
    ProjectFile,
    ProjectFileReply,
    ProjectFilesQuery,
    ProjectFilesReply,
    StoreFileCommand,
    StoreFileReply,
    UploadSlotReply,
)
from atelier_contracts.profiles import RemoteError
from atelier_database import Database
from atelier_media.repository import MediaRepository, dialect_insert
from atelier_media.service import (
    MEDIA_NAMESPACE,
    PIXEL_DATA_ERRORS,
    ImageInfo,
    UnusableImage,
    make_thumbnail,
    open_image,
    original_key,
    probe_image,
    thumbnail_key,
)
from atelier_storage import ObjectStore

log = logging.getLogger("atelier.media.files")

# The app's backend stores a cover as a JPEG inside 1600x2560 at quality 90: so does media, so a
# cover looks the same whichever backend the app talks to.
COVER_MAX_SIZE = (1600, 2560)
COVER_JPEG_QUALITY = 90
# Only names of this shape are a cover: a file the writer synced as "cover-art.jpg" is not one.
_COVER_NAME = re.compile(r"^cover-\d+\.jpg$")
_FILENAME = re.compile(FILENAME_PATTERN)
_CONTENT_TYPE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}$")
_GENERIC_TYPE = "application/octet-stream"

# mimetypes' built-in table only (not the host's /etc/mime.types: the same name gets the same
# type on every machine), plus what the app stores that the table lacks or gets wrong.
_TYPES = mimetypes.MimeTypes()
for _extension, _type in {
    ".md": "text/markdown",
    ".markdown": "text/markdown",
    ".epub": "application/epub+zip",
    ".webp": "image/webp",
    ".avif": "image/avif",
    ".heic": "image/heic",
    ".json": "application/json",
    ".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ".odt": "application/vnd.oasis.opendocument.text",
    ".woff2": "font/woff2",
    ".opus": "audio/ogg",
    ".ogg": "audio/ogg",
    ".m4a": "audio/mp4",
}.items():
    _TYPES.add_type(_type, _extension)


class UploadMissing(NotFound, code="upload_missing"):
    """No object at the staging key: never PUT, expired by the lifecycle rule, or stored already."""


class UploadMismatch(AtelierError, code="upload_mismatch"):
    """The staged object is not the one the command describes (size or sha256 differ)."""


class InvalidFilename(AtelierError, code="invalid_filename"): ...


class InvalidStagingKey(AtelierError, code="invalid_staging_key"):
    """Not a key this service handed out for the project: never read, never deleted."""


class NotAnImage(AtelierError, code="not_an_image"): ...


class FileTooLarge(AtelierError, status_code=413, code="file_too_large"): ...


class ProjectLimitReached(AtelierError, status_code=413, code="project_files_limit"): ...


class ProjectFileRow(SQLModel, table=True):
    """One file of a project; mirrors `ProjectFile`, plus where its bytes are."""

    __tablename__ = "project_files"

    project: str = Field(primary_key=True)
    filename: str = Field(primary_key=True)
    content_type: str
    size_bytes: int = Field(sa_column=Column(BigInteger, nullable=False))
    sha256: str
    uploaded_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    uploaded_by: str
    media_id: str | None = None
    # Content-addressed: files with the same bytes (and an image and its library item) share it.
    object_key: str


FILE_TABLES = (ProjectFileRow,)


@dataclass(frozen=True)
class StoredFile:
    file: ProjectFile
    object_key: str


def _to_file(row: ProjectFileRow) -> ProjectFile:
    file = ProjectFile.model_validate(row.model_dump(exclude={"object_key"}))
    if file.uploaded_at.tzinfo is None:  # SQLite keeps no time zone; we write UTC only
        file.uploaded_at = file.uploaded_at.replace(tzinfo=UTC)
    return file


class FilesRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def get(self, project: str, filename: str) -> StoredFile | None:
        async with self.db.session() as session:
            row = await session.get(ProjectFileRow, (project, filename))
            return StoredFile(_to_file(row), row.object_key) if row is not None else None

    async def list_by_project(
        self, project: str, *, limit: int, offset: int
    ) -> tuple[list[ProjectFile], int]:
        """A page of the project's files by name (the primary key's order), and how many in all."""
        async with self.db.session() as session:
            rows = await session.exec(
                select(ProjectFileRow)
                .where(ProjectFileRow.project == project)
                .order_by(col(ProjectFileRow.filename))
                .offset(offset)
                .limit(limit)
            )
            files = [_to_file(row) for row in rows]
            total = await session.exec(
                select(func.count())
                .select_from(ProjectFileRow)
                .where(ProjectFileRow.project == project)
            )
            return files, int(total.one())

    async def usage(self, project: str, *, excluding: Sequence[str] = ()) -> tuple[int, int]:
        """How many files the project has and their bytes, leaving out the names given (files a
        store is about to replace)."""
        stmt = select(func.count(), func.coalesce(func.sum(ProjectFileRow.size_bytes), 0)).where(
            ProjectFileRow.project == project
        )
        if excluding:
            stmt = stmt.where(col(ProjectFileRow.filename).not_in(list(excluding)))
        async with self.db.session() as session:
            count, size = (await session.exec(stmt)).one()
            return int(count), int(size)

    async def cover_filenames(self, project: str) -> list[str]:
        async with self.db.session() as session:
            rows = await session.exec(
                select(ProjectFileRow.filename).where(
                    ProjectFileRow.project == project,
                    col(ProjectFileRow.filename).like("cover-%.jpg"),
                )
            )
            return [name for name in rows if _COVER_NAME.match(name)]

    async def store(
        self, file: ProjectFile, object_key: str, *, removing: Sequence[str] = ()
    ) -> None:
        """Record the file (a file of the same name is replaced: the newest upload wins) and
        drop the rows named in `removing`, in one transaction."""
        values: dict[str, Any] = file.model_dump()
        values["object_key"] = object_key
        values["uploaded_at"] = file.uploaded_at.astimezone(UTC)
        stmt = dialect_insert(self.db, ProjectFileRow).values(values)
        stmt = stmt.on_conflict_do_update(
            index_elements=["project", "filename"],
            set_={
                name: stmt.excluded[name] for name in values if name not in ("project", "filename")
            },
        )
        others = [name for name in removing if name != file.filename]
        async with self.db.engine.begin() as conn:
            await conn.execute(stmt)
            if others:
                await conn.execute(
                    delete(ProjectFileRow).where(
                        col(ProjectFileRow.project) == file.project,
                        col(ProjectFileRow.filename).in_(others),
                    )
                )


def check_filename(filename: str | None) -> str:
    """The app keeps files under these names on disk: no separators, controls or dot-names."""
    if (
        filename is None
        or not _FILENAME.match(filename)
        or filename in (".", "..")
        or len(filename) > 255
    ):
        raise InvalidFilename(
            f"{filename!r} is not a usable file name: 1 to 255 characters, no '/', '\\' or "
            "control characters, not '.' or '..'"
        )
    return filename


def file_content_type(filename: str, declared: str | None) -> str:
    """The uploader's type if it is a plausible one, else the extension's, else octet-stream."""
    if declared:
        base = declared.split(";", 1)[0].strip().lower()
        if _CONTENT_TYPE.match(base) and base != _GENERIC_TYPE:
            return base
    guessed, _ = _TYPES.guess_type(filename, strict=False)
    return guessed or _GENERIC_TYPE


def file_key(sha256: str) -> str:
    """Where a file that is not an image keeps its bytes (images share their library item's)."""
    return f"files/{sha256[:2]}/{sha256}"


def uploaded_media_id(project: str, sha256: str) -> str:
    # Derived from the bytes: the same image uploaded twice into a project is one library item.
    return str(uuid.uuid5(MEDIA_NAMESPACE, f"upload:{project}:{sha256}"))


def _verify(data: bytes, size_bytes: int, sha256: str) -> None:
    if len(data) != size_bytes:
        raise UploadMismatch(f"the upload has {len(data)} bytes, not the {size_bytes} announced")
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        raise UploadMismatch(f"the upload's sha256 is {actual}, not the {sha256} announced")


def _probe_if_image(data: bytes) -> ImageInfo | None:
    """The image's format and size, or None: bytes that only look like an image (a truncated
    PNG, a corrupt header) are kept as a plain file, never refused (the app's sync would stop)."""
    try:
        return probe_image(data)
    except (UnusableImage, *PIXEL_DATA_ERRORS):
        return None


def _verified_file(data: bytes, size_bytes: int, sha256: str) -> ImageInfo | None:
    _verify(data, size_bytes, sha256)
    return _probe_if_image(data)


def encode_cover(data: bytes) -> bytes:
    """The cover as the app's backend makes it: upright, RGB, inside 1600x2560 (never larger
    than the upload), JPEG at quality 90. Transparency is laid on white."""
    try:
        with open_image(data) as image:
            upright = ImageOps.exif_transpose(image)
            upright.thumbnail(COVER_MAX_SIZE, Image.Resampling.LANCZOS)
            if upright.mode in ("RGBA", "LA", "PA") or upright.has_transparency_data:
                rgba = upright.convert("RGBA")
                rgb = Image.new("RGB", rgba.size, (255, 255, 255))
                rgb.paste(rgba, mask=rgba.getchannel("A"))
            else:
                rgb = upright.convert("RGB")
            out = io.BytesIO()
            rgb.save(out, format="JPEG", quality=COVER_JPEG_QUALITY)
            return out.getvalue()
    except UnusableImage as exc:
        raise NotAnImage(f"a cover must be an image: {exc.message}") from exc
    except PIXEL_DATA_ERRORS as exc:
        raise NotAnImage(f"the cover image could not be decoded: {exc}") from exc


@dataclass(frozen=True)
class _Cover:
    data: bytes
    sha256: str
    info: ImageInfo


def _verified_cover(data: bytes, size_bytes: int, sha256: str) -> _Cover:
    _verify(data, size_bytes, sha256)
    jpeg = encode_cover(data)
    return _Cover(jpeg, hashlib.sha256(jpeg).hexdigest(), probe_image(jpeg))


@dataclass
class FilesService:
    files: FilesRepository
    media: MediaRepository
    store: ObjectStore
    staging_bucket: str
    media_bucket: str
    _: KW_ONLY
    thumbnail_max_px: int = 256
    presign_ttl_s: int = 300
    upload_slot_ttl_s: int = 300
    upload_max_bytes: int = 50 * 1024 * 1024
    project_max_files: int = 10_000
    project_max_bytes: int = 5 * 1024**3

    @staticmethod
    def _staging_prefix(project: str) -> str:
        return f"uploads/{project}/"

    async def upload_slot(self, project: str) -> UploadSlotReply:
        """A fresh staging key and a presigned PUT for it; nothing is written yet."""
        key = f"{self._staging_prefix(project)}{uuid.uuid4().hex}"
        url = await self.store.presigned_put(self.staging_bucket, key, self.upload_slot_ttl_s)
        return UploadSlotReply(staging_key=key, put_url=url, expires_s=self.upload_slot_ttl_s)

    async def store_file(self, command: StoreFileCommand) -> StoreFileReply:
        """Store a staged upload as a project file; a refusal is answered in `error`.

        The staged object is deleted afterwards whatever the outcome: a refused upload is
        uploaded again into a new slot, never stored from the old one.
        """
        if not re.fullmatch(
            re.escape(self._staging_prefix(command.project)) + "[0-9a-f]{32}", command.staging_key
        ):
            # Not a slot of this project: someone else's staged bytes are neither read nor removed.
            error = InvalidStagingKey(
                f"{command.staging_key!r} is not an upload slot of project {command.project!r}"
            )
            return StoreFileReply(error=RemoteError.of(error))
        item: MediaItem | None
        try:
            if command.as_cover:
                file, item = await self._store_cover(command)
            else:
                file, item = await self._store_plain(command)
        except AtelierError as exc:
            log.info(
                "refused a project file",
                extra={"project": command.project, "code": exc.code, "error": exc.message},
            )
            return StoreFileReply(error=RemoteError.of(exc))
        finally:
            await self._remove_staged(command.staging_key)
        log.info(
            "stored a project file",
            extra={
                "project": file.project,
                "file_name": file.filename,  # `filename` is a LogRecord attribute
                "size_bytes": file.size_bytes,
                "media_id": file.media_id,
            },
        )
        return StoreFileReply(file=file, media=item)

    async def _read_upload(self, command: StoreFileCommand) -> bytes:
        # A HEAD first: a wrong or oversized object is refused without reading it into memory.
        size = await self.store.size_if_exists(self.staging_bucket, command.staging_key)
        if size is None:
            raise UploadMissing(f"nothing was uploaded to {command.staging_key!r}")
        if size != command.size_bytes:
            raise UploadMismatch(
                f"the upload has {size} bytes, not the {command.size_bytes} announced"
            )
        if size > self.upload_max_bytes:
            raise FileTooLarge(
                f"the upload has {size} bytes; files are limited to {self.upload_max_bytes} "
                "(ATELIER_MEDIA_UPLOAD_MAX_BYTES)"
            )
        data = await self.store.get_bytes_if_exists(self.staging_bucket, command.staging_key)
        if data is None:
            raise UploadMissing(f"nothing was uploaded to {command.staging_key!r}")
        return data

    async def _check_limits(self, project: str, size: int, replacing: Sequence[str]) -> None:
        # Checked before the write, not under a lock: uploads racing each other may overshoot a
        # limit by a few files, which is all a guard against runaway use needs.
        count, total = await self.files.usage(project, excluding=replacing)
        if count + 1 > self.project_max_files:
            raise ProjectLimitReached(
                f"project {project!r} already has {count} files, the most allowed "
                f"({self.project_max_files}, ATELIER_MEDIA_PROJECT_MAX_FILES)",
                code="project_files_limit",
            )
        if total + size > self.project_max_bytes:
            raise ProjectLimitReached(
                f"project {project!r} holds {total} bytes of files; {size} more would pass its "
                f"limit of {self.project_max_bytes} bytes (ATELIER_MEDIA_PROJECT_MAX_BYTES)",
                code="project_bytes_limit",
            )

    async def _store_plain(self, command: StoreFileCommand) -> tuple[ProjectFile, MediaItem | None]:
        filename = check_filename(command.filename)
        data = await self._read_upload(command)
        # Hashing and probing are CPU work: off the event loop, as landing does.
        info = await asyncio.to_thread(_verified_file, data, command.size_bytes, command.sha256)
        await self._check_limits(command.project, len(data), [filename])
        item = None
        if info is not None:
            item = await self._library_item(command.project, data, command.sha256, info)
        if item is not None:
            object_key, content_type = item.original_key, item.content_type
        else:
            object_key = file_key(command.sha256)
            content_type = file_content_type(filename, command.content_type)
            await self.store.put_bytes(
                self.media_bucket,
                object_key,
                data,
                content_type,
                metadata={"sha256": command.sha256},
            )
        file = ProjectFile(
            project=command.project,
            filename=filename,
            content_type=content_type,
            size_bytes=len(data),
            sha256=command.sha256,
            uploaded_at=utcnow(),
            uploaded_by=command.uploaded_by,
            media_id=item.id if item is not None else None,
        )
        await self.files.store(file, object_key)
        return file, item

    async def _store_cover(self, command: StoreFileCommand) -> tuple[ProjectFile, MediaItem]:
        data = await self._read_upload(command)
        cover = await asyncio.to_thread(_verified_cover, data, command.size_bytes, command.sha256)
        previous = await self.files.cover_filenames(command.project)
        await self._check_limits(command.project, len(cover.data), previous)
        item = await self._library_item(command.project, cover.data, cover.sha256, cover.info)
        if item is None:  # pragma: no cover - media's own JPEG always decodes
            raise NotAnImage("the re-encoded cover could not be read back")
        now = utcnow()
        file = ProjectFile(
            project=command.project,
            filename=f"cover-{int(now.timestamp() * 1000)}.jpg",
            content_type="image/jpeg",
            size_bytes=len(cover.data),
            sha256=cover.sha256,
            uploaded_at=now,
            uploaded_by=command.uploaded_by,
            media_id=item.id,
        )
        # The previous cover files go in the same transaction; their library items stay.
        await self.files.store(file, item.original_key, removing=previous)
        return file, item

    async def _library_item(
        self, project: str, data: bytes, sha256: str, info: ImageInfo
    ) -> MediaItem | None:
        """The project's item with these bytes, else a new uploaded one; None when the pixels
        cannot be decoded after all (the file is then kept as a plain file)."""
        existing = await self.media.find_by_sha256(project, sha256)
        if existing is not None:
            # Same bytes, same content address: its original is already in the bucket.
            return existing
        try:
            thumbnail = await asyncio.to_thread(make_thumbnail, data, self.thumbnail_max_px)
        except UnusableImage:
            return None
        okey = original_key(sha256, info.extension)
        await self.store.put_bytes(
            self.media_bucket, okey, data, info.content_type, metadata={"sha256": sha256}
        )
        tkey = thumbnail_key(sha256)
        await self.store.put_bytes(self.media_bucket, tkey, thumbnail, "image/webp")
        item = MediaItem(
            id=uploaded_media_id(project, sha256),
            project=project,
            job_id="",
            task_id="",
            index=0,
            content_type=info.content_type,
            width=info.width,
            height=info.height,
            size_bytes=len(data),
            sha256=sha256,
            original_key=okey,
            thumbnail_key=tkey,
            profile_id="",
            provider="upload",
            model="",
            prompt="",
            size=f"{info.width}x{info.height}",
            created_at=utcnow(),
            source="uploaded",
        )
        # Two uploads of the same image at once: both end with the one row that won.
        [stored] = await self.media.insert_if_absent([item])
        return stored

    async def _remove_staged(self, key: str) -> None:
        # Best effort: a leftover costs only space (the sweep takes it, atelier_media.sweep),
        # and the outcome is already decided.
        try:
            await self.store.remove(self.staging_bucket, key)
        except Exception:
            log.warning(
                "could not remove a staged upload", extra={"staging_key": key}, exc_info=True
            )

    async def list_files(self, query: ProjectFilesQuery) -> ProjectFilesReply:
        files, total = await self.files.list_by_project(
            query.project, limit=query.limit, offset=query.offset
        )
        return ProjectFilesReply(files=files, total=total)

    async def get_file(self, project: str, filename: str) -> ProjectFileReply:
        stored = await self.files.get(project, filename)
        if stored is None:
            return ProjectFileReply()
        # The object may be shared with a file of another type: the URL answers with this one's.
        url = await self.store.presigned_get(
            self.media_bucket,
            stored.object_key,
            self.presign_ttl_s,
            response_content_type=stored.file.content_type,
        )
        return ProjectFileReply(file=stored.file, content_url=url)

    async def mark_delivered(self, command: MarkDeliveredCommand) -> MarkDeliveredReply:
        marked = await self.media.mark_delivered(command.project, command.media_ids, utcnow())
        return MarkDeliveredReply(marked=marked)
