"""Landing generated images, and answering questions about them.

No broker and no HTTP here: publishing is an injected async callable, storage is `ObjectStore`,
SQL is the repository's. A worker writes each generated image once, to its final place in the
media bucket (`generated_image_key`); landing verifies it, thumbnails it and records it. Landing
is idempotent by construction — a media id is derived from the task and the image index, so a
redelivered `gen.completed` ends with the same rows and republishes the same `media.landed`.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import KW_ONLY, dataclass
from datetime import datetime

from PIL import Image, ImageOps, UnidentifiedImageError

from atelier_contracts.clock import utcnow
from atelier_contracts.envelope import derived_event_id
from atelier_contracts.errors import InvalidInput, NotFound
from atelier_contracts.generation import (
    GenerationCompleted,
    GenerationTask,
    StagedImage,
    generated_image_key,
)
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
# What Pillow raises on truncated or corrupt pixel data, met only once it decodes past the header.
PIXEL_DATA_ERRORS = (OSError, SyntaxError, ValueError)

PublishLanded = Callable[[MediaLanded], Awaitable[None]]


class StagedImageMissing(NotFound, code="staged_image_missing"):
    """The worker's object is gone and the image was never landed: nothing we can land."""


class UnusableImage(InvalidInput, code="unusable_image"):
    """What a worker reported is not an image we accept: unknown format, too many pixels,
    corrupt, bytes that differ from their reported hash, or a key outside the task's own."""


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


@contextmanager
def decoded_image(data: bytes) -> Iterator[Image.Image]:
    """`open_image`, and truncated or corrupt pixel data found while decoding it refused."""
    try:
        with open_image(data) as image:
            yield image
    except PIXEL_DATA_ERRORS as exc:
        raise UnusableImage(f"image could not be decoded: {exc}") from exc


def make_thumbnail(data: bytes, max_px: int) -> bytes:
    """A WebP no larger than `max_px` on its longest side, aspect kept, never upscaled."""
    with decoded_image(data) as image:
        return _thumbnail(image, max_px)


@dataclass(frozen=True)
class AnalysedImage:
    sha256: str
    info: ImageInfo
    thumbnail: bytes


def analyse_image(data: bytes, max_px: int) -> AnalysedImage:
    """Hash, probe and thumbnail in one go: the bytes are parsed once, in one worker thread."""
    with decoded_image(data) as image:
        info = _probe(image)
        thumbnail = _thumbnail(image, max_px)
    return AnalysedImage(hashlib.sha256(data).hexdigest(), info, thumbnail)


def _check_key(task: GenerationTask, image: StagedImage) -> None:
    """Refuse a key that is not where this task's worker writes image `index` with the reported
    hash: landing it would record (or a clean-up remove) an object of another task."""
    expected = generated_image_key(task, image.index, image.sha256, image.content_type)
    if image.key != expected:
        raise UnusableImage(
            f"key {image.key!r} of task {task.task_id} (index {image.index}) is not its own "
            f"({expected!r})"
        )


@dataclass
class MediaService:
    repo: MediaRepository
    store: ObjectStore
    media_bucket: str
    publish: PublishLanded
    _: KW_ONLY
    thumbnail_max_px: int = 256
    presign_ttl_s: int = 300

    async def land_generated_images(self, event: GenerationCompleted) -> MediaLanded:
        """Verify and thumbnail the images a worker wrote, record them, publish `media.landed`.

        Safe to repeat: an image found again is verified and recorded again (`ON CONFLICT DO
        NOTHING` rows, a thumbnail PUT of the same bytes); one whose object is gone must have
        been landed under another key before (see below), and its row is read and republished.

        The usual first landing costs per image one GET (the original, to verify and thumbnail
        it) and one PUT (the thumbnail) on S3, and one INSERT for the whole event: no stat, no
        copy, no clean-up. A second completion of a landed task whose bytes differ (a task run
        twice) wrote an object no row will reference: it is deleted once the rows are known.
        """
        task = event.task
        # Before any read: an event naming objects outside its own task has nothing read,
        # recorded or removed.
        for image in event.images:
            _check_key(task, image)
        ids = [media_id_for(task.task_id, image.index) for image in event.images]
        landed_at = utcnow()
        new_items: list[MediaItem] = []
        read: dict[str, StagedImage] = {}
        gone: dict[str, StagedImage] = {}
        # One image at a time, so only one image's bytes are held at once.
        for image, media_id in zip(event.images, ids, strict=True):
            data = await self.store.get_bytes_if_exists(self.media_bucket, image.key)
            if data is None:
                gone[media_id] = image
                continue
            new_items.append(await self._store_image(event, image, media_id, data, landed_at))
            read[media_id] = image
        already = await self.repo.get_many(list(gone)) if gone else {}
        for media_id, image in gone.items():
            # Before any row is written: an event's rows are committed all or none.
            if media_id not in already:
                raise StagedImageMissing(
                    f"generated image {image.key!r} of task {task.task_id} "
                    f"(index {image.index}) is missing from bucket {self.media_bucket!r} "
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
        # The rows hold another key for these media ids: this completion's objects are
        # referenced by nothing (their keys are unique to the task and the bytes).
        await self._remove_objects(
            image for media_id, image in read.items() if stored[media_id].original_key != image.key
        )
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
                "generated image size differs from the worker's report",
                extra={"task_id": task.task_id, "reported": image.size_bytes, "read": len(data)},
            )
        # Hashing and decoding are CPU work: off the event loop so other messages keep flowing.
        analysed = await asyncio.to_thread(analyse_image, data, self.thumbnail_max_px)
        if analysed.sha256 != image.sha256:
            # The key names the reported hash: bytes that differ are not what the worker wrote
            # (or the object was replaced), and are never recorded under that name.
            raise UnusableImage(
                f"generated image {image.key!r} of task {task.task_id} has sha256 "
                f"{analysed.sha256}, not the {image.sha256} its worker reported"
            )
        info = analysed.info
        # The thumbnail stays content-addressed: identical bytes share one. A PUT of the same
        # content is idempotent and costs one round trip, where a stat first cost one more.
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
            original_key=image.key,
            thumbnail_key=tkey,
            profile_id=task.profile.id,
            provider=task.profile.provider,
            model=task.profile.model,
            prompt=task.prompt,
            size=task.size,
            # The worker's word only: the task's seed may never have reached the provider
            # (OpenAI and Gemini take none), and a seed on record must reproduce the image.
            seed=image.seed,
            revised_prompt=image.revised_prompt,
            created_at=landed_at,
        )

    async def discard_cancelled_result(self, event: GenerationCompleted) -> None:
        """Drop the images of a result that will not land (its job was cancelled).

        Their keys are unique to the task and its bytes, so only this task's own rows could
        reference them: an image of it that landed before the cancellation (a redelivered
        completion) keeps its object. Keys outside the task are never removed.
        """
        task = event.task
        ours: dict[str, StagedImage] = {}
        for image in event.images:
            try:
                _check_key(task, image)
            except UnusableImage:
                log.warning(
                    "cancelled result names an object outside its task; left alone",
                    extra={"task_id": task.task_id, "key": image.key},
                )
                continue
            ours[media_id_for(task.task_id, image.index)] = image
        landed = await self.repo.get_many(list(ours)) if ours else {}
        await self._remove_objects(
            image
            for media_id, image in ours.items()
            if media_id not in landed or landed[media_id].original_key != image.key
        )

    async def _remove_objects(self, images: Iterable[StagedImage]) -> None:
        # Best effort: an object left behind costs only space, not correctness.
        for image in images:
            try:
                await self.store.remove(self.media_bucket, image.key)
            except Exception:
                log.warning(
                    "could not remove an unreferenced generated image",
                    extra={"key": image.key},
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
