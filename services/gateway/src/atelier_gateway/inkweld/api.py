"""The app's routes (`/api/v1/...`), each a translation onto the native services.

Generation goes through `GatewayService.submit`, exactly as `POST /v1/generations` does (same
validation, quota, idempotency, durable `jobs.requested`); the synchronous answer then follows
the job's status the way the SSE route does, for at most the configured time. Profiles and the
switch come from the same catalog as `GET /v1/features`; admin changes and the audit are the
profiles service's own methods over NATS. docs/inkweld.md lists every route and its mapping.

Not in the gateway's own OpenAPI document: the contract of these routes is the app's document,
served at `/api/v1/openapi.json`.
"""

# No `from __future__ import annotations`: FastAPI resolves the route annotations at run time.
import asyncio
import base64
import hashlib
import json
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import jwt
from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response, Security
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from faststream.nats import NatsBroker
from pydantic import ValidationError
from starlette.background import BackgroundTask
from starlette.datastructures import UploadFile
from starlette.responses import JSONResponse, StreamingResponse

from atelier_contracts.errors import (
    AtelierError,
    ErrorClass,
    Forbidden,
    InvalidInput,
    NotFound,
    Unavailable,
)
from atelier_contracts.jobs import FINAL_STATUSES, JobStatus, JobView
from atelier_contracts.media import MediaItem, StoreFileCommand, StoreFileReply
from atelier_contracts.profiles import (
    AuditFilterQuery,
    AuditListQuery,
    GenerationSettings,
    Profile,
)
from atelier_gateway.assignments import assign_media, project_assignments
from atelier_gateway.auth import Authenticator, User
from atelier_gateway.backends import MediaFetcher
from atelier_gateway.inkweld import mapping
from atelier_gateway.inkweld.app_auth import (
    AppBackend,
    AppIdentity,
    looks_like_app_token,
    verify_app_token,
)
from atelier_gateway.inkweld.backends import ProfilesAdmin, ProjectFiles
from atelier_gateway.inkweld.errors import InkweldRoute, StillRunning, document
from atelier_gateway.inkweld.models import (
    AdminImageModelProfile,
    CoverUploaded,
    CreateImageModelProfileRequest,
    CustomSizesResponse,
    CustomSizesUpdate,
    ImageAuditStats,
    ImageGenerateRequest,
    ImageGenerateResponse,
    ImageGenerationAudit,
    ImageGenerationStatus,
    MediaListResponse,
    MessageBody,
    PaginatedImageAudits,
    ProviderEntry,
    ProviderType,
    PublicImageModelProfile,
    SystemFeatures,
    UpdateImageModelProfileRequest,
    UploadedMedia,
)
from atelier_gateway.inkweld.settings import InkweldSettings
from atelier_gateway.models import AssignBody
from atelier_gateway.service import GatewayService
from atelier_gateway.settings import Settings

log = logging.getLogger("atelier.gateway.inkweld")

# Not in the app's OpenAPI document; errors before its stream take these statuses (errors.py).
STREAM_OPERATION = "generateImageStream"
# The app shows a generate error starting with this as "Content blocked" (reference §1).
MODERATION_PREFIX = "MODERATION_BLOCKED:"

# The claims that make a token an admin's for the app's admin routes (ADR 0008).
ADMIN_ROLE = "admin"
_JOB_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,100}$")
_PREFER_WAIT_RE = re.compile(r"(?:^|[,;\s])wait\s*=\s*([0-9]+(?:\.[0-9]+)?)", re.IGNORECASE)
# The media service answers at most this many items per request.
_MEDIA_PAGE = 500
# Audit-by-id reads the audits of the job's user and profile; this many pages at most.
_AUDIT_PAGES = 10
# Multipart boundaries and part headers around an uploaded file.
_MULTIPART_SLACK = 64 * 1024


def upload_too_large() -> AtelierError:
    return AtelierError(
        "The file is larger than Atelier accepts (ATELIER_GATEWAY_INKWELD_MAX_UPLOAD_BYTES).",
        code="upload_too_large",
        status_code=413,
    )


@dataclass(frozen=True)
class Caller:
    """Who calls: an Atelier token (its grants and admin claim), or the app's own token
    (`app`: grants and admin are asked of the app's backend, see app_auth.py)."""

    user: User
    admin: bool
    app: AppIdentity | None = None


def has_admin_claim(token: str) -> bool:
    """`roles` containing "admin", or `admin: true`. Read only from a token the `Authenticator`
    has just verified (signature, issuer, expiry): the payload is the one it checked."""
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    roles = claims.get("roles")
    return (isinstance(roles, list) and ADMIN_ROLE in roles) or claims.get("admin") is True


def wait_seconds(prefer: str | None, limit_s: float) -> float:
    """RFC 7240 `Prefer: wait=<seconds>` shortens the wait; it never lengthens it."""
    match = _PREFER_WAIT_RE.search(prefer or "")
    if match is None:
        return limit_s
    return max(0.0, min(float(match.group(1)), limit_s))


async def wait_for_final(
    service: GatewayService, user: User, job_id: str, wait_s: float
) -> JobView | None:
    """The job once it ended, or None if it is still running after `wait_s`.

    Follows the job's status subject (subscribed before the state is read, as the SSE route
    does), so the answer goes out the moment the job ends. Stopping to wait changes nothing
    for the job: it is durable and lands whoever is still listening.
    """
    try:
        async with asyncio.timeout(wait_s):
            while True:
                try:
                    stream = await service.open_job_stream(user, job_id)
                except (NotFound, Unavailable):
                    # Not recorded yet, or dispatch is away for a moment: the job is queued
                    # durably either way, so keep asking until the wait is over.
                    await asyncio.sleep(0.2)
                    continue
                last: JobView | None = None
                try:
                    async for update in stream.updates:
                        last = update.job
                finally:
                    await stream.updates.aclose()
                    await stream.subscription.close()
                if last is not None and last.status in FINAL_STATUSES:
                    return last
                await asyncio.sleep(0.2)  # the feed closed (reconnecting): read again
    except TimeoutError:
        return None


def sse_event(event: str, data: dict[str, Any]) -> bytes:
    """One server-sent event as the app parses it: `event:` equal to the JSON's `type`, one
    `data:` line, a blank line; no ids, retry lines or comments (reference §1)."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def _read_all(fetcher: MediaFetcher, url: str) -> bytes:
    upstream = await fetcher.open(url)
    try:
        return await upstream.aread()
    finally:
        await upstream.aclose()


async def _stream(fetcher: MediaFetcher, item: MediaItem, url: str, max_age_s: int) -> Response:
    return await _stream_file(fetcher, url, item.content_type, item.sha256, max_age_s)


async def _stream_file(
    fetcher: MediaFetcher, url: str, content_type: str, sha256: str, max_age_s: int
) -> Response:
    upstream = await fetcher.open(url)
    headers = {
        "Cache-Control": f"private, max-age={max_age_s}",
        "ETag": f'"{sha256}"',
        "X-Content-Type-Options": "nosniff",
    }
    if "content-length" in upstream.headers and "content-encoding" not in upstream.headers:
        headers["Content-Length"] = upstream.headers["content-length"]

    async def body() -> AsyncIterator[bytes]:
        try:
            async for chunk in upstream.aiter_bytes():
                yield chunk
        finally:
            await upstream.aclose()

    return StreamingResponse(
        body(),
        media_type=content_type,
        headers=headers,
        background=BackgroundTask(upstream.aclose),
    )


def create_inkweld_router(
    settings: Settings,
    service: GatewayService,
    fetcher: MediaFetcher,
    broker: NatsBroker,
    inkweld: InkweldSettings | None = None,
    app_backend: AppBackend | None = None,
) -> APIRouter:
    """The app's routes; include it under `/api/v1`."""
    inkweld = inkweld or InkweldSettings()
    app_backend = app_backend or AppBackend(inkweld.app_backend_url)
    files_api = ProjectFiles(broker, query_timeout_s=settings.query_timeout_s)
    admin_api = ProfilesAdmin(broker, query_timeout_s=settings.query_timeout_s)
    aliases = inkweld.provider_aliases
    bearer = HTTPBearer(auto_error=False, scheme_name="InkweldBearer")
    authenticator = Authenticator(
        secret=settings.jwt_secret if settings.hs256_enabled else None,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        leeway_s=settings.jwt_leeway_s,
        jwks_url=settings.jwks_url,
        jwks_cache_s=settings.jwks_cache_s,
    )

    async def current_caller(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
    ) -> Caller:
        token = credentials.credentials if credentials else None
        if token and inkweld.app_jwt_secrets and looks_like_app_token(token):
            identity = verify_app_token(
                token, inkweld.app_jwt_secrets, leeway_s=settings.jwt_leeway_s
            )
            # No grants of its own: each project is asked of the app's backend (project_user).
            return Caller(User(identity.user_id, frozenset()), admin=False, app=identity)
        user = await authenticator(token)  # raises unless the token is valid
        assert token is not None
        return Caller(user, admin=has_admin_claim(token))

    async def admin_caller(caller: Annotated[Caller, Depends(current_caller)]) -> Caller:
        if caller.app is not None:
            if not await app_backend.is_admin(caller.app):
                raise Forbidden("This needs an admin of the app.")
            return caller
        if not caller.admin:
            raise Forbidden(
                f'This needs an admin: a token with `roles: ["{ADMIN_ROLE}"]` or `admin: true`.'
            )
        return caller

    async def optional_caller(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
    ) -> Caller | None:
        if credentials is None:
            return None
        return await current_caller(credentials)

    AnyCaller = Annotated[Caller, Depends(current_caller)]
    Admin = Annotated[Caller, Depends(admin_caller)]
    router = APIRouter(route_class=InkweldRoute, include_in_schema=False)

    # --- helpers over the native service -------------------------------------------------

    async def shown_catalog() -> tuple[GenerationSettings, list[tuple[Profile, ProviderType]]]:
        catalog = await service.catalog()
        return catalog.settings, mapping.visible_profiles(catalog.profiles, aliases)

    async def shown_profile(profile_id: str) -> tuple[Profile, ProviderType]:
        profile = await admin_api.profile(profile_id) if len(profile_id) <= 100 else None
        provider = mapping.inkweld_provider(profile.provider, aliases) if profile else None
        if profile is None or provider is None:
            raise NotFound(f"There is no image profile {profile_id!r}.")
        return profile, provider

    async def project_user(
        caller: Caller | None, username: str, slug: str, *, write: bool
    ) -> tuple[str, User]:
        """The Atelier project of `username/slug` and a user granted it, or the refusal.

        An Atelier token's grants decide at once; an app token's access is the app backend's
        answer (`canRead` to read, `canWrite` to change), checked for every request.
        """
        if caller is not None and caller.app is not None:
            access = await app_backend.project_access(caller.app, username, slug)
            if not access.can_read:
                raise NotFound(f"There is no project {username}/{slug}.")
            if write and not access.can_write:
                raise Forbidden(
                    f"You can read {username}/{slug} but not change it: ask its owner to make "
                    "you an editor."
                )
            return access.project, User(caller.user.id, frozenset({access.project}))
        project = mapping.project_of(username, slug)
        # Not granted looks like not there, as on every native read.
        if project is None or caller is None or not caller.user.is_granted(project):
            raise NotFound(f"There is no project {username}/{slug}.")
        return project, caller.user

    async def generation_user(caller: Caller, project_key: str | None) -> tuple[str, User]:
        """Where a generation's images go, and a user allowed to write there."""
        if caller.app is None:
            return mapping.generation_project(project_key, caller.user.projects), caller.user
        username, _, slug = (project_key or "").partition("/")
        if not username or not slug:
            raise InvalidInput("Name the project the images go to: projectKey (username/slug).")
        return await project_user(caller, username, slug, write=True)

    async def project_media(user: User, project: str) -> AsyncIterator[MediaItem]:
        offset = 0
        while True:
            page = await service.media_page(user, project, limit=_MEDIA_PAGE, offset=offset)
            for item in page.items:
                yield item
            offset += _MEDIA_PAGE
            if not page.items or offset >= page.total:
                return

    async def store_upload(
        request: Request, user: User, project: str, *, as_cover: bool
    ) -> StoreFileReply:
        """The uploaded file, stored byte for byte under the name it came with (a cover:
        re-encoded as the app's backend does), by media (docs/inkweld.md, "Media sync").

        The bytes go to a presigned staging URL media hands out, then media records them; the
        staged copy is media's to delete, whatever it answers.
        """
        # Refused before the body is read where the size is declared; the reads below stop at
        # the limit either way.
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > inkweld.max_upload_bytes + _MULTIPART_SLACK:
            raise upload_too_large()
        form = await request.form(max_files=1, max_fields=10)
        try:
            upload = next((v for v in form.values() if isinstance(v, UploadFile)), None)
            if upload is None:
                field = "cover" if as_cover else "file"
                raise InvalidInput(f"Send the file as multipart/form-data (field `{field}`).")
            digest = hashlib.sha256()
            size = 0
            while chunk := await upload.read(1 << 20):
                size += len(chunk)
                if size > inkweld.max_upload_bytes:
                    raise upload_too_large()
                digest.update(chunk)
            filename = None if as_cover else (upload.filename or "")
            if filename is not None and not filename:
                raise InvalidInput("The uploaded file has no name: send it with a file name.")
            content_type = upload.content_type or "application/octet-stream"
            slot = await files_api.upload_slot(project)
            if slot.error is not None:
                raise slot.error.to_error()
            assert slot.put_url is not None and slot.staging_key is not None
            await upload.seek(0)

            async def body() -> AsyncIterator[bytes]:
                while chunk := await upload.read(1 << 20):
                    yield chunk

            await fetcher.upload(slot.put_url, body(), size, content_type)
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
        reply = await files_api.store_file(command)
        if reply.error is not None:
            raise reply.error.to_error()
        return reply

    async def mark_delivered(project: str, job: JobView) -> None:
        """The app keeps its own copy of what a synchronous generate answered: its sync listing
        waits for that copy (sync_grace_s). Best effort: at worst the app sees a second copy."""
        try:
            await files_api.mark_delivered(project, [image.media_id for image in job.images])
        except AtelierError:
            log.warning("could not mark images as delivered", extra={"job_id": job.id})

    async def reference_images(
        user: User, project: str, body: ImageGenerateRequest
    ) -> dict[str, str]:
        """The image chosen for each `reference` element in the project, by element id."""
        wanted = {e.elementId for e in body.worldbuildingContext or [] if e.role == "reference"}
        if not wanted or not user.is_granted(project):
            return {}
        chosen = await project_assignments(service, user, project)
        return {k: item.id for k, item in chosen.elements.items() if k in wanted}

    # --- configuration and status ------------------------------------------------------------

    @router.get("/config/features", operation_id="getSystemFeatures")
    async def get_features() -> SystemFeatures:
        """Public, as in the app: it is read before anyone signs in."""
        switch, shown = await shown_catalog()
        usable = any(profile.enabled for profile, _ in shown)
        return mapping.system_features(switch, usable, inkweld.app_mode)

    @router.get("/ai/image/status", operation_id="getImageGenerationStatus")
    async def get_status(caller: AnyCaller) -> ImageGenerationStatus:
        switch, shown = await shown_catalog()
        return mapping.generation_status(switch, shown)

    @router.get("/ai/image-profiles", operation_id="listImageProfiles")
    async def list_profiles(caller: AnyCaller) -> list[PublicImageModelProfile]:
        _, shown = await shown_catalog()
        return [mapping.public_profile(p, name) for p, name in shown if p.enabled]

    @router.get("/ai/image/custom-sizes", operation_id="getCustomImageSizes")
    async def get_custom_sizes(caller: AnyCaller) -> CustomSizesResponse:
        """Atelier has no custom sizes: every profile lists the sizes it makes."""
        return CustomSizesResponse(sizes=[])

    @router.put("/ai/image/custom-sizes", operation_id="updateCustomImageSizes")
    async def put_custom_sizes(caller: Admin, body: CustomSizesUpdate) -> CustomSizesResponse:
        raise InvalidInput(
            "Atelier has no custom sizes: each profile lists the sizes it makes. Add the size "
            "to a profile's supportedSizes instead."
        )

    # --- generation --------------------------------------------------------------------------

    @dataclass(frozen=True)
    class Started:
        """A submitted generation: who, which job, shown as which of the app's providers."""

        user: User
        project: str
        job_id: str
        provider: ProviderType

    async def start_generation(
        body: ImageGenerateRequest, caller: Caller, idempotency_key: str | None
    ) -> Started:
        """Checks and submits the durable job, as `POST /v1/generations` does; every refusal
        is raised here, before any answer is sent."""
        project, user = await generation_user(caller, body.projectKey)
        _, shown = await shown_catalog()
        match = next(((p, n) for p, n in shown if p.id == body.profileId), None)
        if match is None:
            raise InvalidInput(
                f"There is no image profile {body.profileId!r}; GET /api/v1/ai/image-profiles "
                "lists the ones available.",
                code="unknown_profile",
            )
        profile, provider = match
        native = mapping.generation_request(
            body, project, profile, await reference_images(user, project, body)
        )
        submission = await service.submit(native, user, idempotency_key)
        return Started(user, project, submission.response.id, provider)

    async def generation_result(
        started: Started, job: JobView, body: ImageGenerateRequest
    ) -> ImageGenerateResponse:
        """The ended job as the app's answer: every image's bytes inline (`b64Json`), no `url`:
        the app prefers a `url`, and an `<img>` cannot send the token ours would need."""
        if job.status not in (JobStatus.COMPLETED, JobStatus.PARTIAL) or not job.images:
            raise mapping.job_failure(job)
        images = []
        for image in sorted(job.images, key=lambda i: i.index):
            item, url = await service.media_source(started.user, image.media_id, "content")
            data = base64.b64encode(await _read_all(fetcher, url)).decode("ascii")
            images.append(mapping.generated_image(image.index, item, data))
        return mapping.generate_response(job, images, started.provider, body)

    @router.post("/ai/image/generate", operation_id="generateImage")
    async def generate(
        body: ImageGenerateRequest,
        caller: AnyCaller,
        request: Request,
        response: Response,
        prefer: Annotated[str | None, Header()] = None,
        idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
    ) -> ImageGenerateResponse:
        """Submits a durable job like `POST /v1/generations`, then waits for it to end."""
        started = await start_generation(body, caller, idempotency_key)
        wait_s = wait_seconds(prefer, inkweld.generate_timeout_s)
        applied: dict[str, str] = {}
        if prefer and wait_s < inkweld.generate_timeout_s:
            applied["Preference-Applied"] = f"wait={wait_s:g}"
        response.headers.update(applied)
        job = await wait_for_final(service, started.user, started.job_id, wait_s)
        if job is None:
            raise StillRunning(started.job_id, wait_s, applied)
        try:
            result = await generation_result(started, job, body)
        except AtelierError as exc:
            if exc.code == ErrorClass.CONTENT_BLOCKED:
                # The app shows an error starting with this as "Content blocked".
                exc.message = f"{MODERATION_PREFIX} {exc.message}"
            raise
        if not await request.is_disconnected():
            # Only what reaches the app is the app's: a caller that hung up gets its images
            # from the library listing instead.
            await mark_delivered(started.project, job)
        response.headers["Location"] = f"/v1/generations/{started.job_id}"
        return result

    @router.post("/ai/image/generate-stream", operation_id=STREAM_OPERATION)
    async def generate_stream(
        body: ImageGenerateRequest,
        caller: AnyCaller,
        idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
    ) -> Response:
        """The same durable job as `/generate`, answered as server-sent events.

        Refusals come before the stream, as plain JSON with the app's statuses. Then exactly one
        `completed` or `error` event and the stream ends. No `partial_image` events: no adapter
        streams a provider's partial images yet. A caller that hangs up stops only the stream:
        the job lands in the media library.
        """
        started = await start_generation(body, caller, idempotency_key)

        async def events() -> AsyncIterator[bytes]:
            try:
                job = await wait_for_final(
                    service, started.user, started.job_id, inkweld.stream_timeout_s
                )
                if job is None:
                    raise StillRunning(started.job_id, inkweld.stream_timeout_s)
                result = await generation_result(started, job, body)
            except AtelierError as exc:
                yield sse_event("error", {"type": "error", "error": exc.message})
                return
            except Exception:  # the stream has begun: the app must still get its final event
                log.exception("generate-stream failed", extra={"job_id": started.job_id})
                failed = "Something went wrong inside Atelier; the image may still land."
                yield sse_event("error", {"type": "error", "error": failed})
                return
            await mark_delivered(started.project, job)
            completed = {"type": "completed", "result": result.model_dump(mode="json")}
            yield sse_event("completed", completed)

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",  # proxies must pass each event on at once
                "Location": f"/v1/generations/{started.job_id}",
            },
        )

    # --- admin: profiles ---------------------------------------------------------------------

    @router.get("/admin/image-profiles", operation_id="adminListImageProfiles")
    async def admin_list_profiles(caller: Admin) -> list[AdminImageModelProfile]:
        catalog = await service.backends.profiles(include_disabled=True)  # fresh, not cached
        shown = mapping.visible_profiles(catalog.profiles, aliases)
        return [mapping.admin_profile(p, name) for p, name in shown]

    @router.post(
        "/admin/image-profiles",
        operation_id="adminCreateImageProfile",
        status_code=201,
    )
    async def admin_create_profile(
        caller: Admin, body: CreateImageModelProfileRequest
    ) -> AdminImageModelProfile:
        fields = mapping.profile_fields_for_create(body)
        profile = await admin_api.create_profile(fields, caller.user.id)
        service.forget_profiles()
        return mapping.admin_profile(profile, body.provider)

    @router.get("/admin/image-profiles/providers", operation_id="adminListImageProviders")
    async def admin_list_providers(caller: Admin) -> list[ProviderEntry]:
        return mapping.provider_entries()

    ProfileId = Annotated[str, Path(min_length=1, max_length=200)]

    @router.get("/admin/image-profiles/{profileId}", operation_id="adminGetImageProfile")
    async def admin_get_profile(caller: Admin, profileId: ProfileId) -> AdminImageModelProfile:
        return mapping.admin_profile(*await shown_profile(profileId))

    @router.patch("/admin/image-profiles/{profileId}", operation_id="adminUpdateImageProfile")
    async def admin_update_profile(
        caller: Admin, profileId: ProfileId, body: UpdateImageModelProfileRequest
    ) -> AdminImageModelProfile:
        current, shown_as = await shown_profile(profileId)
        fields = mapping.profile_fields_for_update(current, body, shown_as)
        profile = await admin_api.replace_profile(current.id, fields, caller.user.id)
        service.forget_profiles()
        provider = mapping.inkweld_provider(profile.provider, aliases) or shown_as
        return mapping.admin_profile(profile, provider)

    @router.delete("/admin/image-profiles/{profileId}", operation_id="adminDeleteImageProfile")
    async def admin_delete_profile(caller: Admin, profileId: ProfileId) -> MessageBody:
        current, _ = await shown_profile(profileId)
        await admin_api.delete_profile(current.id, caller.user.id)
        service.forget_profiles()
        return MessageBody(message=f"Profile {current.name!r} deleted.")

    # --- admin: audits -----------------------------------------------------------------------

    @router.get("/admin/image-audits", operation_id="adminListImageAudits")
    async def admin_list_audits(
        caller: Admin,
        userId: str | None = None,
        profileId: str | None = None,
        status: Literal["success", "moderated"] | None = None,
        startDate: str | None = None,
        endDate: str | None = None,
        search: Annotated[str | None, Query(max_length=200)] = None,
        page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
        limit: Annotated[int, Query(ge=1, le=100)] = 50,
    ) -> PaginatedImageAudits:
        filters = mapping.audit_query(
            user_id=userId,
            profile_id=profileId,
            status=status,
            start_date=startDate,
            end_date=endDate,
            search=search,
            page=page,
            limit=limit,
        )
        reply = await admin_api.audits(filters)
        return mapping.audit_page(reply, page=page, limit=limit)

    @router.get("/admin/image-audits/stats/summary", operation_id="adminGetImageAuditStats")
    async def admin_audit_stats(
        caller: Admin, startDate: str | None = None, endDate: str | None = None
    ) -> ImageAuditStats:
        window = mapping.audit_query(start_date=startDate, end_date=endDate)
        filters = AuditFilterQuery(since=window.since, until=window.until)
        return mapping.audit_stats(await admin_api.audit_summary(filters))

    @router.get("/admin/image-audits/{auditId}", operation_id="adminGetImageAudit")
    async def admin_get_audit(
        caller: Admin, auditId: Annotated[str, Path(max_length=200)]
    ) -> ImageGenerationAudit:
        """An audit entry is a finished job (its id is the job's). The audit is read by the
        job's user and profile, from when it was made: dispatch says which job that is."""
        missing = NotFound(f"There is no audit record {auditId!r}.")
        job = await service.backends.job(auditId) if _JOB_ID_RE.match(auditId) else None
        if job is None or job.status not in FINAL_STATUSES:
            raise missing
        filters = AuditListQuery(
            user_id=job.user_id,
            profile_id=job.profile_id,
            since=job.created_at,
            until=job.updated_at + timedelta(hours=1),
            limit=500,
        )
        for page in range(_AUDIT_PAGES):
            reply = await admin_api.audits(filters.model_copy(update={"offset": page * 500}))
            found = next((r for r in reply.items if r.job_id == auditId), None)
            if found is not None:
                return mapping.inkweld_audit(found)
            if (page + 1) * 500 >= reply.total:
                break
        raise missing

    # --- media and covers: the project's files and generated images -------------------------

    Username = Annotated[str, Path(max_length=100)]
    Slug = Annotated[str, Path(max_length=100)]

    @router.get("/media/{username}/{slug}", operation_id="listProjectMedia")
    async def list_media(
        caller: AnyCaller,
        username: Username,
        slug: Slug,
        prefix: Annotated[str | None, Query(max_length=200)] = None,
    ) -> MediaListResponse:
        project, user = await project_user(caller, username, slug, write=False)
        files = await files_api.files(project)
        items = [item async for item in project_media(user, project)]
        entries = mapping.sync_listing(
            files,
            items,
            now=datetime.now(UTC),
            grace_s=inkweld.sync_grace_s,
            prefix=prefix or "",
        )
        return MediaListResponse(items=entries, total=len(entries))

    @router.post("/media/{username}/{slug}", operation_id="uploadProjectMedia")
    async def upload_media(
        caller: AnyCaller, username: Username, slug: Slug, request: Request
    ) -> UploadedMedia:
        """Stored under the exact name sent, byte for byte; an image also joins the library
        (or, with a generated image's bytes, becomes the app's name for it)."""
        project, user = await project_user(caller, username, slug, write=True)
        stored = await store_upload(request, user, project, as_cover=False)
        assert stored.file is not None
        return UploadedMedia(
            message="File uploaded.", filename=stored.file.filename, size=stored.file.size_bytes
        )

    @router.get("/media/{username}/{slug}/{filename}", operation_id="getProjectMediaFile")
    async def get_media_file(
        caller: AnyCaller,
        username: Username,
        slug: Slug,
        filename: Annotated[str, Path(max_length=255)],
    ) -> Response:
        project, user = await project_user(caller, username, slug, write=False)
        found = await files_api.file(project, filename)
        if found.file is not None and found.content_url is not None:
            served = mapping.served_type(filename, found.file.content_type)
            return await _stream_file(
                fetcher,
                found.content_url,
                served,
                found.file.sha256,
                settings.media_cache_max_age_s,
            )
        item, url = await service.media_source(user, mapping.media_id_of(filename), "content")
        if item.project != project:
            raise NotFound(f"There is no file {filename!r} in {username}/{slug}.")
        return await _stream(fetcher, item, url, settings.media_cache_max_age_s)

    @router.post("/projects/{username}/{slug}/cover", operation_id="uploadProjectCover")
    async def upload_cover(
        caller: AnyCaller, username: Username, slug: Slug, request: Request
    ) -> CoverUploaded:
        """Any image: re-encoded as the app's backend does (JPEG inside 1600x2560), stored as
        `cover-<ms>.jpg` and chosen as the cover with a durable `media.assigned`, as
        `POST /v1/media/{id}/assign` publishes."""
        project, user = await project_user(caller, username, slug, write=True)
        stored = await store_upload(request, user, project, as_cover=True)
        assert stored.file is not None and stored.media is not None
        await assign_media(service, user, stored.media.id, AssignBody(target="cover"))
        return CoverUploaded(message="Cover image uploaded.", coverImage=stored.file.filename)

    @router.get("/projects/{username}/{slug}/cover", operation_id="getProjectCover")
    async def get_cover(
        caller: Annotated[Caller | None, Depends(optional_caller)], username: Username, slug: Slug
    ) -> Response:
        project, user = await project_user(caller, username, slug, write=False)
        cover = (await project_assignments(service, user, project)).cover
        if cover is None:
            raise NotFound(f"{username}/{slug} has no cover image.")
        item, url = await service.media_source(user, cover.id, "content")
        return await _stream(fetcher, item, url, settings.media_cache_max_age_s)

    @router.delete("/projects/{username}/{slug}/cover", operation_id="deleteProjectCover")
    async def delete_cover(caller: AnyCaller, username: Username, slug: Slug) -> MessageBody:
        project, user = await project_user(caller, username, slug, write=True)
        if (await project_assignments(service, user, project)).cover is None:
            raise NotFound(f"{username}/{slug} has no cover image.")
        raise Forbidden(
            "Atelier keeps a project's cover until another image is chosen: upload or pick "
            "another image as the cover."
        )

    async def inkweld_document() -> JSONResponse:
        """The app's document these routes follow (the gateway's own is `/openapi.json`)."""
        return JSONResponse(document())

    # Not one of the document's operations: a plain route.
    router.add_api_route("/openapi.json", inkweld_document, route_class_override=APIRoute)
    return router
