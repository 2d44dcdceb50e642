"""Landing generated images, and answering questions about them.

No broker and no HTTP here: publishing is an injected async callable, storage is `ObjectStore`,
SQL is the repository's. Landing is idempotent by construction — a media id is derived from the
task and the image index, so a redelivered `gen.completed` ends with the same rows and
republishes the same `media.landed`.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

from PIL import Image, ImageOps, UnidentifiedImageError

from atelier_contracts.envelope import derived_event_id, utcnow
from atelier_contracts.errors import InvalidInput, NotFound
from atelier_contracts.generation import GenerationCompleted, StagedImage
from atelier_contracts.media import (
    MediaItem,
    MediaLanded,
    MediaListQuery,
    MediaListReply,
    MediaReply,
)
from atelier_media.repository import MediaRepository
from atelier_storage import ObjectStore

log = logging.getLogger("atelier.media")

# Fixed forever: media ids and MediaLanded event ids derive from it, so changing it would make a
# redelivered event land a second copy of every image.
MEDIA_NAMESPACE = uuid.UUID("6d1f3c2e-8a4b-5e7f-9c0d-1a2b3c4d5e6f")

# 8192² (~67 MP) is above anything a provider or upscaler returns today and far below what would
# exhaust a worker's memory. Pillow only warns between once and twice its limit, so `open_image`
# checks the limit itself; setting Pillow's too keeps every other decode path here bounded.
MAX_IMAGE_PIXELS = 8192 * 8192
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS

# Formats a browser shows and providers return. Naming them keeps Pillow from trying every
# decoder it has (fewer parsers exposed to bytes from the outside).
_FORMATS: dict[str, tuple[str, str]] = {
    "PNG": ("image/png", "png"),
    "JPEG": ("image/jpeg", "jpg"),
    "WEBP": ("image/webp", "webp"),
    "GIF": ("image/gif", "gif"),
    "AVIF": ("image/avif", "avif"),
}
# EXIF orientations that swap width and height (rotations by 90° or 270°).
_TRANSPOSED_ORIENTATIONS = {5, 6, 7, 8}
_EXIF_ORIENTATION = 0x0112

PublishLanded = Callable[[MediaLanded], Awaitable[None]]


class StagedImageMissing(NotFound):
    """The staged bytes are gone and the image was never landed: nothing we can land."""

    code = "staged_image_missing"


class UnusableImage(InvalidInput):
    """The staged bytes are not an image we accept (unknown format, too many pixels, corrupt)."""

    code = "unusable_image"


@dataclass(frozen=True)
class ImageInfo:
    content_type: str
    extension: str
    width: int
    height: int


def media_id_for(task_id: str, index: int) -> str:
    return str(uuid.uuid5(MEDIA_NAMESPACE, f"{task_id}:{index}"))


def landed_event_id(task_id: str) -> uuid.UUID:
    # Deterministic, so a republish inside JetStream's duplicate window is stored once. From the
    # task id, not gen.completed's event id: a re-sent completion of the same task is the same
    # landing.
    return derived_event_id(MEDIA_NAMESPACE, f"media.landed:{task_id}")


def original_key(sha256: str, extension: str) -> str:
    return f"originals/{sha256[:2]}/{sha256}.{extension}"


def thumbnail_key(sha256: str) -> str:
    return f"thumbnails/{sha256[:2]}/{sha256}.webp"


def open_image(data: bytes) -> Image.Image:
    """Open (header only) an image we accept, refusing oversized ones before any decoding."""
    try:
        image = Image.open(io.BytesIO(data), formats=list(_FORMATS))
    except (UnidentifiedImageError, Image.DecompressionBombError) as exc:
        raise UnusableImage(f"not an accepted image: {exc}") from exc
    if image.width * image.height > MAX_IMAGE_PIXELS:
        image.close()
        raise UnusableImage(
            f"image of {image.width}x{image.height} exceeds {MAX_IMAGE_PIXELS} pixels"
        )
    return image


def _probe(image: Image.Image) -> ImageInfo:
    content_type, extension = _FORMATS[str(image.format)]
    width, height = image.size
    if image.getexif().get(_EXIF_ORIENTATION) in _TRANSPOSED_ORIENTATIONS:
        width, height = height, width
    return ImageInfo(content_type, extension, width, height)


def _thumbnail(image: Image.Image, max_px: int) -> bytes:
    # thumbnail() first: for JPEG it decodes at reduced scale (draft), far cheaper. It works in
    # place, so probing has to come before it.
    image.thumbnail((max_px, max_px), Image.Resampling.LANCZOS)
    # Originals stay byte-exact with their EXIF; the thumbnail is shown upright.
    upright = ImageOps.exif_transpose(image)
    if upright.mode not in ("RGB", "RGBA"):
        upright = upright.convert("RGBA" if upright.has_transparency_data else "RGB")
    out = io.BytesIO()
    upright.save(out, format="WEBP", quality=80, method=4)
    return out.getvalue()


def probe_image(data: bytes) -> ImageInfo:
    """Format and displayed size, read from the bytes (a worker's claim could be wrong)."""
    with open_image(data) as image:
        return _probe(image)


def make_thumbnail(data: bytes, max_px: int) -> bytes:
    """A WebP no larger than `max_px` on its longest side, aspect kept, never upscaled."""
    try:
        with open_image(data) as image:
            return _thumbnail(image, max_px)
    except (OSError, SyntaxError, ValueError) as exc:  # truncated or corrupt pixel data
        raise UnusableImage(f"image could not be decoded: {exc}") from exc


@dataclass(frozen=True)
class AnalysedImage:
    sha256: str
    info: ImageInfo
    thumbnail: bytes


def analyse_image(data: bytes, max_px: int) -> AnalysedImage:
    """Hash, probe and thumbnail in one go: the bytes are parsed once, in one worker thread."""
    try:
        with open_image(data) as image:
            info = _probe(image)
            thumbnail = _thumbnail(image, max_px)
    except (OSError, SyntaxError, ValueError) as exc:  # truncated or corrupt pixel data
        raise UnusableImage(f"image could not be decoded: {exc}") from exc
    return AnalysedImage(hashlib.sha256(data).hexdigest(), info, thumbnail)


class MediaService:
    def __init__(
        self,
        repo: MediaRepository,
        store: ObjectStore,
        staging_bucket: str,
        media_bucket: str,
        publish: PublishLanded,
        *,
        thumbnail_max_px: int = 256,
        presign_ttl_s: int = 300,
    ) -> None:
        self.repo = repo
        self.store = store
        self.staging_bucket = staging_bucket
        self.media_bucket = media_bucket
        self.publish = publish
        self.thumbnail_max_px = thumbnail_max_px
        self.presign_ttl_s = presign_ttl_s

    async def land_generated_images(self, event: GenerationCompleted) -> MediaLanded:
        """Store originals and thumbnails, record them, publish `media.landed`, clean staging.

        Safe to repeat. Staging is deleted only after the rows are committed, so a staged image
        that is gone was landed before (a redelivery, or a concurrent landing of the same event):
        its row is read and republished. Staged bytes that are still there are landed again;
        every write is idempotent (content-addressed objects, `ON CONFLICT DO NOTHING` rows), so
        a redelivery after a crash anywhere before the clean-up ends with the same media.

        The usual first landing costs per image one GET, two PUTs and one DELETE on S3, and one
        INSERT for the whole event: no stat before a read or write, no read before the insert.
        """
        task = event.task
        ids = [media_id_for(task.task_id, image.index) for image in event.images]
        landed_at = utcnow()
        new_items: list[MediaItem] = []
        read: list[StagedImage] = []
        gone: dict[str, StagedImage] = {}
        # One image at a time, so only one image's bytes are held at once.
        for image, media_id in zip(event.images, ids, strict=True):
            data = await self.store.get_bytes_if_exists(self.staging_bucket, image.staging_key)
            if data is None:
                gone[media_id] = image
                continue
            new_items.append(await self._store_image(event, image, media_id, data, landed_at))
            read.append(image)
        already = await self.repo.get_many(list(gone)) if gone else {}
        for media_id, image in gone.items():
            # Before any row is written: an event's rows are committed all or none.
            if media_id not in already:
                raise StagedImageMissing(
                    f"staged image {image.staging_key!r} of task {task.task_id} "
                    f"(index {image.index}) is missing from bucket {self.staging_bucket!r} "
                    "and was never landed"
                )
        # One transaction for every row of the task; publishing comes after the commit so no
        # consumer ever hears about media that is not in the database.
        stored = {item.id: item for item in await self.repo.insert_if_absent(new_items)}
        media = [already.get(media_id) or stored[media_id] for media_id in dict.fromkeys(ids)]
        media.sort(key=lambda item: item.index)
        landed = MediaLanded(
            event_id=landed_event_id(task.task_id),
            job_id=task.job_id,
            task_id=task.task_id,
            project=task.project,
            media=media,
        )
        await self.publish(landed)
        log.info(
            "landed generated images",
            extra={
                "job_id": task.job_id,
                "task_id": task.task_id,
                "media_ids": [item.id for item in media],
                "newly_stored": len(new_items),
            },
        )
        # Only what was read: a staged image already gone needs no DELETE.
        await self._remove_staged(read)
        return landed

    async def _store_image(
        self,
        event: GenerationCompleted,
        image: StagedImage,
        media_id: str,
        data: bytes,
        landed_at: datetime,
    ) -> MediaItem:
        task = event.task
        if len(data) != image.size_bytes:
            log.warning(
                "staged image size differs from the worker's report",
                extra={"task_id": task.task_id, "reported": image.size_bytes, "read": len(data)},
            )
        # Hashing and decoding are CPU work: off the event loop so other messages keep flowing.
        analysed = await asyncio.to_thread(analyse_image, data, self.thumbnail_max_px)
        info = analysed.info

        # Content-addressed: identical bytes from another task share one object. Written without
        # asking whether it exists: a PUT of the same content is idempotent and costs one round
        # trip, where a stat first cost one more for every (almost always new) image.
        okey = original_key(analysed.sha256, info.extension)
        await self.store.put_bytes(
            self.media_bucket, okey, data, info.content_type, metadata={"sha256": analysed.sha256}
        )
        tkey = thumbnail_key(analysed.sha256)
        await self.store.put_bytes(self.media_bucket, tkey, analysed.thumbnail, "image/webp")

        return MediaItem(
            id=media_id,
            project=task.project,
            job_id=task.job_id,
            task_id=task.task_id,
            index=image.index,
            content_type=info.content_type,
            width=info.width,
            height=info.height,
            size_bytes=len(data),
            sha256=analysed.sha256,
            original_key=okey,
            thumbnail_key=tkey,
            profile_id=task.profile.id,
            provider=task.profile.provider,
            model=task.profile.model,
            prompt=task.prompt,
            size=task.size,
            seed=image.seed if image.seed is not None else task.seed,
            revised_prompt=image.revised_prompt,
            created_at=landed_at,
        )

    async def discard_staged(self, event: GenerationCompleted) -> None:
        """Drop the staged bytes of a result that will not land (its job was cancelled)."""
        await self._remove_staged(event.images)

    async def _remove_staged(self, images: Iterable[StagedImage]) -> None:
        # Best effort: the media is landed and announced; a leftover staging object costs only
        # space (a lifecycle rule on the staging bucket is the backstop), not correctness.
        for image in images:
            try:
                await self.store.remove(self.staging_bucket, image.staging_key)
            except Exception:
                log.warning(
                    "could not remove staged image",
                    extra={"staging_key": image.staging_key},
                    exc_info=True,
                )

    async def get_media(self, media_id: str) -> MediaReply:
        item = await self.repo.get(media_id)
        if item is None:
            return MediaReply(media=None)
        content_url, thumbnail_url = await asyncio.gather(
            self.store.presigned_get(self.media_bucket, item.original_key, self.presign_ttl_s),
            self.store.presigned_get(self.media_bucket, item.thumbnail_key, self.presign_ttl_s),
        )
        return MediaReply(media=item, content_url=content_url, thumbnail_url=thumbnail_url)

    async def list_media(self, query: MediaListQuery) -> MediaListReply:
        items, total = await self.repo.list_by_project(
            query.project, limit=query.limit, offset=query.offset
        )
        return MediaListReply(items=items, total=total)
