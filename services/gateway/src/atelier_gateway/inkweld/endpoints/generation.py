"""Generation: `POST /ai/image/generate` and `/generate-stream`.

Both go through `GatewayService.submit`, exactly as `POST /v1/generations` does (same validation,
quota, idempotency, durable `jobs.requested`); the answer then follows the job's status the way
the SSE route does, for at most the configured time.
"""

# No `from __future__ import annotations`: FastAPI resolves the route annotations at run time.
import base64
import json
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request, Response
from starlette.responses import StreamingResponse

from atelier_contracts.errors import AtelierError, ErrorClass, InvalidInput
from atelier_contracts.jobs import JobStatus, JobView
from atelier_gateway.assignments import project_assignments
from atelier_gateway.auth import User
from atelier_gateway.inkweld.auth import AnyCaller, Caller, generation_user
from atelier_gateway.inkweld.errors import InkweldRoute, StillRunning
from atelier_gateway.inkweld.facade import Facade, FacadeDep
from atelier_gateway.inkweld.mapping.generation import (
    generate_response,
    generated_image,
    generation_request,
    job_failure,
)
from atelier_gateway.inkweld.models import (
    ImageGenerateRequest,
    ImageGenerateResponse,
    ProviderType,
)
from atelier_gateway.waiting import wait_for_final

log = logging.getLogger("atelier.gateway.inkweld")

# Not in the app's OpenAPI document; errors before its stream take these statuses (errors.py).
STREAM_OPERATION = "generateImageStream"
# The app shows a generate error starting with this as "Content blocked" (reference §1).
MODERATION_PREFIX = "MODERATION_BLOCKED:"
_PREFER_WAIT_RE = re.compile(r"(?:^|[,;\s])wait\s*=\s*([0-9]+(?:\.[0-9]+)?)", re.IGNORECASE)

IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key")]

router = APIRouter(route_class=InkweldRoute)


def wait_seconds(prefer: str | None, limit_s: float) -> float:
    """RFC 7240 `Prefer: wait=<seconds>` shortens the wait; it never lengthens it."""
    match = _PREFER_WAIT_RE.search(prefer or "")
    if match is None:
        return limit_s
    return max(0.0, min(float(match.group(1)), limit_s))


def sse_event(event: str, data: dict[str, Any]) -> bytes:
    """One server-sent event as the app parses it: `event:` equal to the JSON's `type`, one
    `data:` line, a blank line; no ids, retry lines or comments (reference §1)."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


@dataclass(frozen=True)
class Started:
    """A submitted generation: who, which job, shown as which of the app's providers."""

    user: User
    project: str
    job_id: str
    provider: ProviderType


async def _reference_images(
    ink: Facade, user: User, project: str, body: ImageGenerateRequest
) -> dict[str, str]:
    """The image chosen for each `reference` element in the project, by element id."""
    wanted = {e.elementId for e in body.worldbuildingContext or [] if e.role == "reference"}
    if not wanted or not user.is_granted(project):
        return {}
    chosen = await project_assignments(ink.service, user, project)
    return {k: item.id for k, item in chosen.elements.items() if k in wanted}


async def _start_generation(
    ink: Facade, body: ImageGenerateRequest, caller: Caller, idempotency_key: str | None
) -> Started:
    """Checks and submits the durable job, as `POST /v1/generations` does; every refusal
    is raised here, before any answer is sent."""
    project, user = await generation_user(ink, caller, body.projectKey)
    _, shown = await ink.shown_catalog()
    match = next(((p, n) for p, n in shown if p.id == body.profileId), None)
    if match is None:
        raise InvalidInput(
            f"There is no image profile {body.profileId!r}; GET /api/v1/ai/image-profiles "
            "lists the ones available.",
            code="unknown_profile",
        )
    profile, provider = match
    native = generation_request(
        body, project, profile, await _reference_images(ink, user, project, body)
    )
    submission = await ink.service.submit(native, user, idempotency_key)
    return Started(user, project, submission.response.id, provider)


async def _read_all(ink: Facade, url: str) -> bytes:
    upstream = await ink.fetcher.open(url)
    try:
        return await upstream.aread()
    finally:
        await upstream.aclose()


async def _generation_result(
    ink: Facade, started: Started, job: JobView, body: ImageGenerateRequest
) -> ImageGenerateResponse:
    """The ended job as the app's answer: every image's bytes inline (`b64Json`), no `url`:
    the app prefers a `url`, and an `<img>` cannot send the token ours would need."""
    if job.status not in (JobStatus.COMPLETED, JobStatus.PARTIAL) or not job.images:
        raise job_failure(job)
    images = []
    for image in sorted(job.images, key=lambda i: i.index):
        item, url = await ink.service.media_source(started.user, image.media_id, "content")
        data = base64.b64encode(await _read_all(ink, url)).decode("ascii")
        images.append(generated_image(image.index, item, data))
    return generate_response(job, images, started.provider, body)


async def _mark_delivered(ink: Facade, project: str, job: JobView) -> None:
    """The app keeps its own copy of what a synchronous generate answered: its sync listing
    waits for that copy (sync_grace_s). Best effort: at worst the app sees a second copy."""
    try:
        await ink.files.mark_delivered(project, [image.media_id for image in job.images])
    except AtelierError:
        log.warning("could not mark images as delivered", extra={"job_id": job.id})


@router.post("/ai/image/generate", operation_id="generateImage")
async def generate(
    body: ImageGenerateRequest,
    caller: AnyCaller,
    ink: FacadeDep,
    request: Request,
    response: Response,
    prefer: Annotated[str | None, Header()] = None,
    idempotency_key: IdempotencyKey = None,
) -> ImageGenerateResponse:
    """Submits a durable job like `POST /v1/generations`, then waits for it to end."""
    started = await _start_generation(ink, body, caller, idempotency_key)
    limit_s = ink.inkweld.generate_timeout_s
    wait_s = wait_seconds(prefer, limit_s)
    applied: dict[str, str] = {}
    if prefer and wait_s < limit_s:
        applied["Preference-Applied"] = f"wait={wait_s:g}"
    response.headers.update(applied)
    job = await wait_for_final(ink.service, started.user, started.job_id, wait_s)
    if job is None:
        raise StillRunning(started.job_id, wait_s, applied)
    try:
        result = await _generation_result(ink, started, job, body)
    except AtelierError as exc:
        if exc.code == ErrorClass.CONTENT_BLOCKED:
            # The app shows an error starting with this as "Content blocked".
            exc.message = f"{MODERATION_PREFIX} {exc.message}"
        raise
    if not await request.is_disconnected():
        # Only what reaches the app is the app's: a caller that hung up gets its images
        # from the library listing instead.
        await _mark_delivered(ink, started.project, job)
    response.headers["Location"] = f"/v1/generations/{started.job_id}"
    return result


@router.post("/ai/image/generate-stream", operation_id=STREAM_OPERATION)
async def generate_stream(
    body: ImageGenerateRequest,
    caller: AnyCaller,
    ink: FacadeDep,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """The same durable job as `/generate`, answered as server-sent events.

    Refusals come before the stream, as plain JSON with the app's statuses. Then exactly one
    `completed` or `error` event and the stream ends. No `partial_image` events: no adapter
    streams a provider's partial images yet. A caller that hangs up stops only the stream:
    the job lands in the media library.
    """
    started = await _start_generation(ink, body, caller, idempotency_key)
    timeout_s = ink.inkweld.stream_timeout_s

    async def events() -> AsyncIterator[bytes]:
        try:
            job = await wait_for_final(ink.service, started.user, started.job_id, timeout_s)
            if job is None:
                raise StillRunning(started.job_id, timeout_s)
            result = await _generation_result(ink, started, job, body)
        except AtelierError as exc:
            failure: dict[str, Any] = {"type": "error", "error": exc.message}
            moderation = getattr(exc, "moderation", None)
            if moderation is not None:
                failure["moderation"] = moderation
            yield sse_event("error", failure)
            return
        except Exception:  # the stream has begun: the app must still get its final event
            log.exception("generate-stream failed", extra={"job_id": started.job_id})
            failed = "Something went wrong inside Atelier; the image may still land."
            yield sse_event("error", {"type": "error", "error": failed})
            return
        await _mark_delivered(ink, started.project, job)
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
