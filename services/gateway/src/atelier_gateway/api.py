"""The public HTTP API (DESIGN.md §6): thin routes over `GatewayService`.

Every route needs a bearer token. Reads of something in a project the token does not grant answer
404, the same as for something that does not exist; only submitting to such a project says 403,
because there the user named the project themselves.
"""

# No `from __future__ import annotations` here: FastAPI must resolve the route annotations at
# run time.
import math
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import (
    APIRouter,
    FastAPI,
    Header,
    Path,
    Query,
    Request,
    Response,
    status,
)
from fastapi.responses import JSONResponse
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.background import BackgroundTask
from starlette.responses import StreamingResponse

from atelier_contracts.style import ProjectStyle
from atelier_contracts.subjects import PROJECT_ID_PATTERN
from atelier_gateway.assignments import assign_media, project_assignments
from atelier_gateway.auth import TokenRejected
from atelier_gateway.dependencies import AppSettings, CurrentUser, Service
from atelier_gateway.media_bytes import MediaBytes
from atelier_gateway.models import (
    AssignBody,
    AssignmentAccepted,
    ContextPreview,
    Features,
    GenerationAccepted,
    GenerationEstimate,
    GenerationRequestBody,
    JobList,
    JobOut,
    MediaOut,
    MediaPage,
    ProjectAssignments,
    StyleBody,
)
from atelier_gateway.service import QuotaRefused
from atelier_gateway.streams import JobStream
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
# The routes that validate a body as a submission would, without submitting it.
_CHECKED_LIKE_A_SUBMISSION: dict[int | str, dict[str, Any]] = {
    **_BODY_ERRORS,
    403: {"description": "`project_not_granted` or `generation_disabled`"},
    422: {
        "description": "The body does not fit the schema or its limits (`invalid_input`), "
        "or the request does not fit the profile"
    },
}
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"description": "Unknown, or in a project the token does not grant"}
}
ProjectId = Annotated[str, Path(pattern=PROJECT_ID_PATTERN)]
_LAST_EVENT_ID = Header(
    alias="Last-Event-ID",
    description="Sent by a reconnecting EventSource: the stream resumes after that event "
    "(stored for 24 h); an id it does not know gets the current state first",
)


router = APIRouter(prefix="/v1", responses=_ERRORS)


@router.get("/features", tags=["generation"])
async def get_features(user: CurrentUser, service: Service) -> Features:
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
    service: Service,
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
    responses=_CHECKED_LIKE_A_SUBMISSION,
)
async def preview_context(
    body: GenerationRequestBody, user: CurrentUser, service: Service
) -> ContextPreview:
    """The exact prompt and reference images a generation with this body would send, and
    every image that would not be sent with the reason. Validated like a generation;
    nothing is queued or charged, and pictures staged for it are deleted once answered."""
    reply = await service.preview(body, user)
    return ContextPreview.model_validate(reply, from_attributes=True)


@router.post(
    "/generations/estimate",
    tags=["generation"],
    responses=_CHECKED_LIKE_A_SUBMISSION,
)
async def estimate_generation(
    body: GenerationRequestBody, user: CurrentUser, service: Service
) -> GenerationEstimate:
    """What submitting the same body would reserve now: credits, and money where the
    profile states the provider's price. Validated like a submission; nothing is reserved,
    staged or queued. `fits` says whether your remaining credits cover it."""
    return await service.estimate(body, user)


@router.get(
    "/projects/{project}/style",
    tags=["style"],
    responses={
        **_NOT_FOUND,
        422: {"description": "`invalid_input`: the project id is not a valid id"},
    },
)
async def get_project_style(
    project: ProjectId, user: CurrentUser, service: Service
) -> ProjectStyle:
    """The project's style: words and reference images added to every generation of the
    project (a request can leave it out with `apply_style: false`). Version 0 with no
    words: the project has none yet."""
    return await service.project_style(user, project)


@router.put(
    "/projects/{project}/style",
    tags=["style"],
    responses={
        **_BODY_ERRORS,
        403: {"description": "`project_not_granted`"},
        409: {"description": "`style_version_stale`: it was changed since `version`"},
        422: {
            "description": "`invalid_input` (field named), or `style_image_unknown`: an "
            "image that is not in this project's media library"
        },
    },
)
async def put_project_style(
    project: ProjectId, body: StyleBody, user: CurrentUser, service: Service
) -> ProjectStyle:
    """Replace the project's style with a new version. `version` is the one you read: if
    someone wrote meanwhile, the answer is 409 and nothing changes."""
    return await service.put_project_style(user, project, body)


@router.get("/generations/{job_id}", tags=["generation"], responses=_NOT_FOUND)
async def get_generation(job_id: str, user: CurrentUser, service: Service) -> JobOut:
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
async def cancel_generation(job_id: str, user: CurrentUser, service: Service) -> JobOut:
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
    service: Service,
    settings: AppSettings,
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
    service: Service,
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
    service: Service,
    settings: AppSettings,
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
    service: Service,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> MediaPage:
    page = await service.media_page(user, project, limit=limit, offset=offset)
    return MediaPage(items=[MediaOut.of(item) for item in page.items], total=page.total)


@router.get("/media/{media_id}", tags=["media"], responses=_NOT_FOUND)
async def get_media(media_id: str, user: CurrentUser, service: Service) -> MediaOut:
    reply = await service.media(user, media_id)
    assert reply.media is not None  # service.media raised otherwise
    return MediaOut.of(reply.media)


_IMAGE_ROUTE: dict[str, Any] = {
    "tags": ["media"],
    "responses": _NOT_FOUND,
    "response_class": StreamingResponse,
}


@router.get("/media/{media_id}/content", **_IMAGE_ROUTE)
async def media_content(media_id: str, image: MediaBytes) -> Response:
    """The original image, byte for byte."""
    return await image.response(media_id, "content")


@router.get("/media/{media_id}/thumbnail", **_IMAGE_ROUTE)
async def media_thumbnail(media_id: str, image: MediaBytes) -> Response:
    return await image.response(media_id, "thumbnail")


@router.post(
    "/media/{media_id}/assign",
    status_code=status.HTTP_202_ACCEPTED,
    tags=["media"],
    responses={**_NOT_FOUND, **_BODY_ERRORS},
    summary="Use this image as the project's cover or an element's image",
)
async def use_media(
    media_id: str, body: AssignBody, user: CurrentUser, service: Service, response: Response
) -> AssignmentAccepted:
    """Stored as a durable `media.assigned` event before the answer; the newest choice per
    slot wins. `GET /v1/projects/{project}/assignments` shows it once media recorded it."""
    accepted = AssignmentAccepted.of(await assign_media(service, user, media_id, body))
    response.headers["Location"] = accepted.links.assignments
    return accepted


@router.get("/projects/{project}/assignments", tags=["media"], responses=_NOT_FOUND)
async def get_project_assignments(
    project: str, user: CurrentUser, service: Service
) -> ProjectAssignments:
    """The project's cover and the image of each element that has one."""
    return ProjectAssignments.of(project, await project_assignments(service, user, project))


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
