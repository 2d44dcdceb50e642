"""The public HTTP API (DESIGN.md §6): thin routes over `GatewayService`.

Every route needs a bearer token. Reads of something in a project the token does not grant answer
404, the same as for something that does not exist; only submitting to such a project says 403,
because there the user named the project themselves.
"""

# No `from __future__ import annotations` here: FastAPI must resolve the route annotations at
# run time, and `CurrentUser` is local to `create_router`.
import math
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import (
    APIRouter,
    Depends,
    FastAPI,
    Header,
    Query,
    Request,
    Response,
    Security,
    status,
)
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.background import BackgroundTask
from starlette.responses import StreamingResponse

from atelier_contracts.errors import Forbidden
from atelier_contracts.jobs import ContextPreviewQuery
from atelier_contracts.media import MediaItem
from atelier_contracts.profiles import ProfileSnapshot
from atelier_gateway.assignments import assign_media, project_assignments
from atelier_gateway.auth import Authenticator, TokenRejected, User
from atelier_gateway.backends import ContextPreviewer, MediaFetcher, not_answering
from atelier_gateway.models import (
    AssignBody,
    AssignmentAccepted,
    ContextPreview,
    Features,
    GenerationAccepted,
    GenerationRequestBody,
    JobList,
    JobOut,
    MediaOut,
    MediaPage,
    ProjectAssignments,
)
from atelier_gateway.service import GatewayService, JobStream, QuotaRefused, validate_generation
from atelier_gateway.settings import Settings
from atelier_web import error_body

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "No, expired or invalid bearer token"},
    503: {"description": "A service the gateway asks is not answering"},
}
# Every route that takes a JSON body (issue 15: 400 was missing from the document).
_BODY_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "`malformed_json`: the body is not JSON (or not UTF-8)"},
    413: {
        "description": "`request_too_large`: the body is over `ATELIER_GATEWAY_MAX_REQUEST_BYTES` "
        "(or, queued, over the job queue's payload limit)"
    },
    422: {"description": "`invalid_input`: the body does not fit the schema (field named)"},
}
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"description": "Unknown, or in a project the token does not grant"}
}
_LAST_EVENT_ID = Header(
    alias="Last-Event-ID",
    description="Sent by a reconnecting EventSource: the stream resumes after that event "
    "(stored for 24 h); an id it does not know gets the current state first",
)


def create_router(settings: Settings, service: GatewayService, fetcher: MediaFetcher) -> APIRouter:
    bearer = HTTPBearer(auto_error=False, description="JWT with `sub` and `projects` claims")
    authenticator = Authenticator(
        secret=settings.jwt_secret if settings.hs256_enabled else None,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        leeway_s=settings.jwt_leeway_s,
        jwks_url=settings.jwks_url,
        jwks_cache_s=settings.jwks_cache_s,
    )

    async def current_user(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
    ) -> User:
        return await authenticator(credentials.credentials if credentials else None)

    CurrentUser = Annotated[User, Depends(current_user)]
    router = APIRouter(prefix="/v1", responses=_ERRORS)

    @router.get("/features", tags=["generation"])
    async def get_features(user: CurrentUser) -> Features:
        """Is generation on, and which profiles (sizes, counts, options) may be used."""
        return await service.features()

    @router.post(
        "/generations",
        status_code=status.HTTP_202_ACCEPTED,
        tags=["generation"],
        responses={
            **_BODY_ERRORS,
            200: {"description": "Idempotency-Key seen before: the job it made"},
            403: {"description": "`project_not_granted` or `generation_disabled`"},
            429: {
                "description": "`quota_exceeded` (with `remaining`, `resets_at`) or "
                "`rate_limited` (with `Retry-After`)"
            },
            422: {
                "description": "The body does not fit the schema or its limits (`invalid_input`), "
                "the request does not fit the profile (`too_many_reference_images`, "
                "`reference_image_too_large`, `size_not_allowed`...), or "
                "`idempotency_key_reused` with a different request"
            },
        },
    )
    async def create_generation(
        body: GenerationRequestBody,
        user: CurrentUser,
        response: Response,
        idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
    ) -> GenerationAccepted:
        """Validate against the profile and queue the job; answers before any image exists."""
        submission = await service.submit(body, user, idempotency_key)
        response.headers["Location"] = submission.response.links.self
        if not submission.created:
            response.status_code = status.HTTP_200_OK
        return submission.response

    @router.post(
        "/context/preview",
        tags=["generation"],
        responses={
            **_BODY_ERRORS,
            403: {"description": "`project_not_granted` or `generation_disabled`"},
            422: {
                "description": "The body does not fit the schema or its limits (`invalid_input`), "
                "or the request does not fit the profile"
            },
        },
    )
    async def preview_context(body: GenerationRequestBody, user: CurrentUser) -> ContextPreview:
        """The exact prompt and reference images a generation with this body would send, and
        every image that would not be sent with the reason. Validated like a generation;
        nothing is queued, charged or stored."""
        if not user.is_granted(body.project):  # as for submitting: the user named the project
            raise Forbidden(
                f"Your account has no access to project {body.project!r}.",
                code="project_not_granted",
            )
        catalog = await service.backends.profiles(include_disabled=True)
        profile = next((p for p in catalog.profiles if p.id == body.profile_id), None)
        resolved = validate_generation(body, profile, catalog.settings, service.limits)
        previewer = service.backends
        if not isinstance(previewer, ContextPreviewer):
            raise not_answering("context")
        reply = await previewer.context_preview(
            ContextPreviewQuery(
                user_id=user.id,
                project=body.project,
                profile=ProfileSnapshot.of(resolved.profile),
                prompt=resolved.prompt,
                size=resolved.size,
                count=resolved.count,
                options=resolved.options,
                context=body.context,
                target=body.target,
            )
        )
        return ContextPreview.of(reply)

    @router.get("/generations/{job_id}", tags=["generation"], responses=_NOT_FOUND)
    async def get_generation(job_id: str, user: CurrentUser) -> JobOut:
        return JobOut.of(await service.job(user, job_id))

    @router.post(
        "/generations/{job_id}/cancel",
        tags=["generation"],
        responses=_NOT_FOUND,
        summary="Cancel a generation",
        description="Ends the job as `cancelled`: provider calls in flight are abandoned (and "
        "cancelled at the provider where it can), results arriving later are not landed. "
        "Images that already landed stay in the library. A finished job is returned unchanged.",
    )
    async def cancel_generation(job_id: str, user: CurrentUser) -> JobOut:
        return JobOut.of(await service.cancel(user, job_id))

    @router.get(
        "/generations/{job_id}/events",
        tags=["generation"],
        responses={
            **_NOT_FOUND,
            204: {"description": "Resumed after the job's final event: nothing more will come"},
        },
        response_class=EventSourceResponse,
    )
    async def generation_events(
        job_id: str,
        user: CurrentUser,
        last_event_id: Annotated[str | None, _LAST_EVENT_ID] = None,
    ) -> Response:
        """SSE: the current state first, then every change; ends after the final state.

        With `Last-Event-ID` (a reconnect), every change after that event instead, none twice.
        """
        stream = await service.open_job_stream(user, job_id, last_event_id)
        if stream.already_final:
            # 204 is what tells an EventSource to stop reconnecting.
            await stream.subscription.close()
            return Response(status_code=status.HTTP_204_NO_CONTENT)
        return _event_stream(stream, settings.sse_ping_s)

    @router.get("/projects/{project}/generations", tags=["generation"], responses=_NOT_FOUND)
    async def list_generations(
        project: str,
        user: CurrentUser,
        active: Annotated[bool, Query(description="Only jobs still running")] = True,
    ) -> JobList:
        jobs = await service.jobs(user, project, active_only=active)
        return JobList(jobs=[JobOut.of(job) for job in jobs])

    @router.get(
        "/projects/{project}/generations/events",
        tags=["generation"],
        responses=_NOT_FOUND,
        response_class=EventSourceResponse,
    )
    async def project_generation_events(
        project: str,
        user: CurrentUser,
        last_event_id: Annotated[str | None, _LAST_EVENT_ID] = None,
    ) -> EventSourceResponse:
        """SSE: the project's active jobs, then every change of any of its jobs; never ends.

        With `Last-Event-ID`, every change after that event (within `sse_replay_window_s`)
        instead.
        """
        stream = await service.open_project_stream(user, project, last_event_id)
        return _event_stream(stream, settings.sse_ping_s)

    @router.get("/projects/{project}/media", tags=["media"], responses=_NOT_FOUND)
    async def list_media(
        project: str,
        user: CurrentUser,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> MediaPage:
        page = await service.media_page(user, project, limit=limit, offset=offset)
        return MediaPage(items=[MediaOut.of(item) for item in page.items], total=page.total)

    @router.get("/media/{media_id}", tags=["media"], responses=_NOT_FOUND)
    async def get_media(media_id: str, user: CurrentUser) -> MediaOut:
        reply = await service.media(user, media_id)
        assert reply.media is not None  # service.media raised otherwise
        return MediaOut.of(reply.media)

    async def image(
        media_id: str, user: User, request: Request, variant: Literal["content", "thumbnail"]
    ) -> Response:
        item, url = await service.media_source(user, media_id, variant)
        return await _image_response(item, url, variant, request, fetcher, settings)

    @router.get(
        "/media/{media_id}/content",
        tags=["media"],
        responses=_NOT_FOUND,
        response_class=StreamingResponse,
    )
    async def media_content(media_id: str, user: CurrentUser, request: Request) -> Response:
        """The original image, byte for byte."""
        return await image(media_id, user, request, "content")

    @router.get(
        "/media/{media_id}/thumbnail",
        tags=["media"],
        responses=_NOT_FOUND,
        response_class=StreamingResponse,
    )
    async def media_thumbnail(media_id: str, user: CurrentUser, request: Request) -> Response:
        return await image(media_id, user, request, "thumbnail")

    @router.post(
        "/media/{media_id}/assign",
        status_code=status.HTTP_202_ACCEPTED,
        tags=["media"],
        responses={**_NOT_FOUND, **_BODY_ERRORS},
        summary="Use this image as the project's cover or an element's image",
    )
    async def use_media(
        media_id: str, body: AssignBody, user: CurrentUser, response: Response
    ) -> AssignmentAccepted:
        """Stored as a durable `media.assigned` event before the answer; the newest choice per
        slot wins. `GET /v1/projects/{project}/assignments` shows it once media recorded it."""
        accepted = AssignmentAccepted.of(await assign_media(service, user, media_id, body))
        response.headers["Location"] = accepted.links.assignments
        return accepted

    @router.get("/projects/{project}/assignments", tags=["media"], responses=_NOT_FOUND)
    async def get_project_assignments(project: str, user: CurrentUser) -> ProjectAssignments:
        """The project's cover and the image of each element that has one."""
        return ProjectAssignments.of(project, await project_assignments(service, user, project))

    return router


def _event_stream(stream: JobStream, ping_s: float) -> EventSourceResponse:
    async def events() -> AsyncIterator[ServerSentEvent]:
        try:
            async for update in stream.updates:
                yield ServerSentEvent(
                    data=JobOut.of(update.job).model_dump_json(by_alias=True),
                    event="status",
                    id=update.event_id,
                )
        finally:
            await stream.updates.aclose()
            await stream.subscription.close()

    # The background task also closes the subscription when the client left before the first
    # event, in which case the generator above never ran and its `finally` never will.
    return EventSourceResponse(
        events(),
        ping=ping_s,
        headers={"Cache-Control": "no-store"},
        background=BackgroundTask(stream.subscription.close),
    )


async def _image_response(
    item: MediaItem,
    url: str,
    variant: Literal["content", "thumbnail"],
    request: Request,
    fetcher: MediaFetcher,
    settings: Settings,
) -> Response:
    # The original's hash is its identity; the thumbnail is derived from it.
    etag = f'"{item.sha256}"' if variant == "content" else f'"{item.sha256}-thumb"'
    headers = {
        # private: the bytes are only for this user, so shared caches must not keep them.
        "Cache-Control": f"private, max-age={settings.media_cache_max_age_s}",
        "ETag": etag,
        # Generated bytes are untrusted: the browser must not guess them into HTML.
        "X-Content-Type-Options": "nosniff",
    }
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)

    upstream = await fetcher.open(url)
    if variant == "content":
        media_type = item.content_type
    else:
        stored = upstream.headers.get("content-type", "")
        media_type = stored if stored.startswith("image/") else "image/webp"
    if "content-length" in upstream.headers and "content-encoding" not in upstream.headers:
        headers["Content-Length"] = upstream.headers["content-length"]

    async def body() -> AsyncIterator[bytes]:
        try:
            async for chunk in upstream.aiter_bytes():
                yield chunk
        finally:
            await upstream.aclose()

    return StreamingResponse(
        body(), media_type=media_type, headers=headers, background=BackgroundTask(upstream.aclose)
    )


def install_auth_error_handler(app: FastAPI) -> None:
    """401s carry the challenge RFC 6750 asks for, so clients know to send a bearer token."""

    @app.exception_handler(TokenRejected)
    async def _token_rejected(_: Request, exc: TokenRejected) -> JSONResponse:
        return JSONResponse(
            error_body(exc.code, exc.message),
            status_code=exc.status_code,
            headers={"WWW-Authenticate": 'Bearer realm="atelier"'},
        )


def install_quota_error_handler(app: FastAPI) -> None:
    """429s say what is left and when to come back (body fields and `Retry-After`)."""

    @app.exception_handler(QuotaRefused)
    async def _quota_refused(_: Request, exc: QuotaRefused) -> JSONResponse:
        reply = exc.reply
        extra: dict[str, Any] = {
            "remaining": reply.remaining,
            "limit": reply.limit,
            "cost": reply.cost,
            "resets_at": reply.resets_at.isoformat() if reply.resets_at else None,
        }
        headers: dict[str, str] = {}
        if exc.code in ("rate_limited", "too_much_in_flight") and reply.retry_after_s is not None:
            extra["retry_after_s"] = reply.retry_after_s
            headers["Retry-After"] = str(max(1, math.ceil(reply.retry_after_s)))
        elif reply.resets_at is not None:
            wait_s = (reply.resets_at - datetime.now(UTC)).total_seconds()
            headers["Retry-After"] = str(max(1, math.ceil(wait_s)))
        return JSONResponse(
            error_body(exc.code, exc.message, **extra), status_code=429, headers=headers
        )
