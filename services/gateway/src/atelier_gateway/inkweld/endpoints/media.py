"""Media and covers: the project's files (kept by name, byte for byte, by media) and generated
images, and its cover (docs/inkweld.md, "Media sync")."""

# No `from __future__ import annotations`: FastAPI resolves the route annotations at run time.
import hashlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from atelier_contracts.errors import AtelierError, Forbidden, InvalidInput, NotFound
from atelier_contracts.media import MediaItem, StoreFileCommand, StoreFileReply
from atelier_gateway.assignments import assign_media, project_assignments
from atelier_gateway.auth import User
from atelier_gateway.inkweld.auth import AnyCaller, OptionalCaller, project_user
from atelier_gateway.inkweld.errors import InkweldRoute
from atelier_gateway.inkweld.facade import Facade, FacadeDep
from atelier_gateway.inkweld.mapping.media import media_id_of, served_type, sync_listing
from atelier_gateway.inkweld.models import (
    CoverUploaded,
    MediaListResponse,
    MessageBody,
    UploadedMedia,
)
from atelier_gateway.media_bytes import streamed
from atelier_gateway.models import AssignBody

# The media service answers at most this many items per request.
_MEDIA_PAGE = 500
# Multipart boundaries and part headers around an uploaded file.
_MULTIPART_SLACK = 64 * 1024
_CHUNK = 1 << 20

Username = Annotated[str, Path(max_length=100)]
Slug = Annotated[str, Path(max_length=100)]

router = APIRouter(route_class=InkweldRoute)


def upload_too_large() -> AtelierError:
    return AtelierError(
        "The file is larger than Atelier accepts (ATELIER_GATEWAY_INKWELD_MAX_UPLOAD_BYTES).",
        code="upload_too_large",
        status_code=413,
    )


async def _stream_file(ink: Facade, url: str, content_type: str, sha256: str) -> Response:
    upstream = await ink.fetcher.open(url)
    headers = {
        "Cache-Control": f"private, max-age={ink.settings.media_cache_max_age_s}",
        "ETag": f'"{sha256}"',
        "X-Content-Type-Options": "nosniff",
    }
    return streamed(upstream, content_type, headers)


async def _stream_item(ink: Facade, item: MediaItem, url: str) -> Response:
    return await _stream_file(ink, url, item.content_type, item.sha256)


async def _project_media(ink: Facade, user: User, project: str) -> AsyncIterator[MediaItem]:
    offset = 0
    while True:
        page = await ink.service.media_page(user, project, limit=_MEDIA_PAGE, offset=offset)
        for item in page.items:
            yield item
        offset += _MEDIA_PAGE
        if not page.items or offset >= page.total:
            return


async def _store_upload(
    ink: Facade, request: Request, user: User, project: str, *, as_cover: bool
) -> StoreFileReply:
    """The uploaded file, stored byte for byte under the name it came with (a cover:
    re-encoded as the app's backend does), by media (docs/inkweld.md, "Media sync").

    The bytes go to a presigned staging URL media hands out, then media records them; the
    staged copy is media's to delete, whatever it answers.
    """
    max_bytes = ink.inkweld.max_upload_bytes
    # Refused before the body is read where the size is declared; the reads below stop at
    # the limit either way.
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes + _MULTIPART_SLACK:
        raise upload_too_large()
    form = await request.form(max_files=1, max_fields=10)
    try:
        upload = next((v for v in form.values() if isinstance(v, UploadFile)), None)
        if upload is None:
            field = "cover" if as_cover else "file"
            raise InvalidInput(f"Send the file as multipart/form-data (field `{field}`).")
        digest = hashlib.sha256()
        size = 0
        while chunk := await upload.read(_CHUNK):
            size += len(chunk)
            if size > max_bytes:
                raise upload_too_large()
            digest.update(chunk)
        filename = None if as_cover else (upload.filename or "")
        if filename is not None and not filename:
            raise InvalidInput("The uploaded file has no name: send it with a file name.")
        content_type = upload.content_type or "application/octet-stream"
        slot = await ink.files.upload_slot(project)
        if slot.error is not None:
            raise slot.error.to_error()
        assert slot.put_url is not None and slot.staging_key is not None
        await upload.seek(0)

        async def body() -> AsyncIterator[bytes]:
            while chunk := await upload.read(_CHUNK):
                yield chunk

        await ink.fetcher.upload(slot.put_url, body(), size, content_type)
    finally:
        await form.close()
    try:
        command = StoreFileCommand(
            project=project,
            filename=filename,
            staging_key=slot.staging_key,
            size_bytes=size,
            sha256=digest.hexdigest(),
            content_type=content_type[:200],
            uploaded_by=user.id,
            as_cover=as_cover,
        )
    except ValidationError:
        raise InvalidInput(
            f"The file name {filename!r} cannot be kept: use at most 255 characters, without "
            "'/', '\\' or control characters.",
            code="invalid_filename",
        ) from None
    reply = await ink.files.store_file(command)
    if reply.error is not None:
        raise reply.error.to_error()
    return reply


@router.get("/media/{username}/{slug}", operation_id="listProjectMedia")
async def list_media(
    caller: AnyCaller,
    ink: FacadeDep,
    username: Username,
    slug: Slug,
    prefix: Annotated[str | None, Query(max_length=200)] = None,
) -> MediaListResponse:
    project, user = await project_user(ink, caller, username, slug, write=False)
    files = await ink.files.files(project)
    items = [item async for item in _project_media(ink, user, project)]
    entries = sync_listing(
        files,
        items,
        now=datetime.now(UTC),
        grace_s=ink.inkweld.sync_grace_s,
        prefix=prefix or "",
    )
    return MediaListResponse(items=entries, total=len(entries))


@router.post("/media/{username}/{slug}", operation_id="uploadProjectMedia")
async def upload_media(
    caller: AnyCaller, ink: FacadeDep, username: Username, slug: Slug, request: Request
) -> UploadedMedia:
    """Stored under the exact name sent, byte for byte; an image also joins the library
    (or, with a generated image's bytes, becomes the app's name for it)."""
    project, user = await project_user(ink, caller, username, slug, write=True)
    stored = await _store_upload(ink, request, user, project, as_cover=False)
    assert stored.file is not None
    return UploadedMedia(
        message="File uploaded.", filename=stored.file.filename, size=stored.file.size_bytes
    )


@router.get("/media/{username}/{slug}/{filename}", operation_id="getProjectMediaFile")
async def get_media_file(
    caller: AnyCaller,
    ink: FacadeDep,
    username: Username,
    slug: Slug,
    filename: Annotated[str, Path(max_length=255)],
) -> Response:
    project, user = await project_user(ink, caller, username, slug, write=False)
    found = await ink.files.file(project, filename)
    if found.file is not None and found.content_url is not None:
        served = served_type(filename, found.file.content_type)
        return await _stream_file(ink, found.content_url, served, found.file.sha256)
    item, url = await ink.service.media_source(user, media_id_of(filename), "content")
    if item.project != project:
        raise NotFound(f"There is no file {filename!r} in {username}/{slug}.")
    return await _stream_item(ink, item, url)


@router.post("/projects/{username}/{slug}/cover", operation_id="uploadProjectCover")
async def upload_cover(
    caller: AnyCaller, ink: FacadeDep, username: Username, slug: Slug, request: Request
) -> CoverUploaded:
    """Any image: re-encoded as the app's backend does (JPEG inside 1600x2560), stored as
    `cover-<ms>.jpg` and chosen as the cover with a durable `media.assigned`, as
    `POST /v1/media/{id}/assign` publishes."""
    project, user = await project_user(ink, caller, username, slug, write=True)
    stored = await _store_upload(ink, request, user, project, as_cover=True)
    assert stored.file is not None and stored.media is not None
    await assign_media(ink.service, user, stored.media.id, AssignBody(target="cover"))
    return CoverUploaded(message="Cover image uploaded.", coverImage=stored.file.filename)


@router.get("/projects/{username}/{slug}/cover", operation_id="getProjectCover")
async def get_cover(
    caller: OptionalCaller, ink: FacadeDep, username: Username, slug: Slug
) -> Response:
    project, user = await project_user(ink, caller, username, slug, write=False)
    cover = (await project_assignments(ink.service, user, project)).cover
    if cover is None:
        raise NotFound(f"{username}/{slug} has no cover image.")
    item, url = await ink.service.media_source(user, cover.id, "content")
    return await _stream_item(ink, item, url)


@router.delete("/projects/{username}/{slug}/cover", operation_id="deleteProjectCover")
async def delete_cover(
    caller: AnyCaller, ink: FacadeDep, username: Username, slug: Slug
) -> MessageBody:
    project, user = await project_user(ink, caller, username, slug, write=True)
    if (await project_assignments(ink.service, user, project)).cover is None:
        raise NotFound(f"{username}/{slug} has no cover image.")
    raise Forbidden(
        "Atelier keeps a project's cover until another image is chosen: upload or pick "
        "another image as the cover."
    )
