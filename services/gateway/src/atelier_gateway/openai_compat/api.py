"""The routes: `POST /v1/images/generations` (JSON) and `POST /v1/images/edits` (multipart).

Each is a translation onto the native code: the request becomes a `GenerationRequestBody` and
goes through `GatewayService.submit`, exactly as `POST /v1/generations` does (the profile's
checks, quota, `Idempotency-Key`, audit, durable `jobs.requested`; an edit's images staged by
reference, ADR 0017). The route then follows the job's status for at most
`ATELIER_GATEWAY_OPENAI_WAIT_S` and answers with its images. Not in the gateway's own OpenAPI
document: the contract is OpenAI's (`shared/reference/openai-images-openapi.json`).
"""

# No `from __future__ import annotations`: FastAPI resolves the route annotations at run time.
import asyncio
import base64
import logging
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request, Security
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from atelier_contracts.jobs import JobStatus, JobView
from atelier_gateway.auth import User
from atelier_gateway.dependencies import AppSettings, Fetcher, Service, authenticate_request
from atelier_gateway.models import media_content_url
from atelier_gateway.openai_compat import mapping
from atelier_gateway.openai_compat.errors import OpenAIRoute, StillRunning
from atelier_gateway.openai_compat.models import (
    MAX_EDIT_IMAGES,
    ImageEditFields,
    ImageGenerationBody,
    ImageOut,
    ImageRequest,
    ResponseFormat,
)
from atelier_gateway.waiting import wait_for_final
from atelier_web.dependencies import on_the_loop

log = logging.getLogger("atelier.gateway.openai")

# An edit's multipart text fields: the parameters, a few more than OpenAI has.
_MAX_FORM_FIELDS = 30
_IMAGE_PARTS = ("image", "image[]")


_bearer = HTTPBearer(auto_error=False, scheme_name="OpenAIBearer")


async def _current_user(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
) -> User:
    return await authenticate_request(request, credentials)


CurrentUser = Annotated[User, Depends(_current_user)]
ProjectHeader = Annotated[str | None, Header(alias=mapping.PROJECT_HEADER, max_length=200)]
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key")]
router = APIRouter(prefix="/v1/images", route_class=OpenAIRoute, include_in_schema=False)


class _ImagesCall:
    """One images request, on behalf of the token's user: its job submitted, waited for, and its
    images answered in OpenAI's shape."""

    def __init__(
        self,
        request: Request,
        user: CurrentUser,
        service: Service,
        settings: AppSettings,
        fetcher: Fetcher,
        project: ProjectHeader = None,
        idempotency_key: IdempotencyKey = None,
    ) -> None:
        self.request = request
        self.service = service
        self._user = user
        self._wait_s = settings.openai_wait_s
        self._fetcher = fetcher
        self._project = project
        self._idempotency_key = idempotency_key

    async def answer(
        self, body: ImageRequest, elements: Sequence[Mapping[str, Any]] = ()
    ) -> JSONResponse:
        """Submit the job, wait for it, answer its images in OpenAI's shape."""
        mapping.refuse_unsupported(body)
        target = mapping.request_project(self._project, self._user.projects)
        profile = mapping.find_profile(body.model, (await self.service.catalog()).profiles)
        native = mapping.generation_request(body, target, profile, elements)
        submission = await self.service.submit(native, self._user, self._idempotency_key)
        job_id = submission.response.id
        # `user` is OpenAI's end-user id: logged with the job, never the principal (the token's
        # subject is, for quotas and access).
        log.info(
            "images request",
            extra={"job_id": job_id, "project": native.project, "end_user": body.user},
        )
        job = await wait_for_final(self.service, self._user, job_id, self._wait_s)
        if job is None:
            raise StillRunning(job_id, self._wait_s, retry_safe=self._idempotency_key is not None)
        return await self._images_answer(job, body.response_format or "b64_json")

    async def _images_answer(self, job: JobView, response_format: ResponseFormat) -> JSONResponse:
        if job.status not in (JobStatus.COMPLETED, JobStatus.PARTIAL) or not job.images:
            raise mapping.job_failure(job)
        base_url = str(self.request.base_url).rstrip("/")
        made = await asyncio.gather(
            *(
                self._image_out(image.media_id, response_format, base_url)
                for image in sorted(job.images, key=lambda i: i.index)
            )
        )
        result = mapping.images_response(job, [out for out, _ in made], [t for _, t in made])
        return JSONResponse(
            result.model_dump(exclude_none=True),
            headers={"Location": f"/v1/generations/{job.id}", "x-request-id": job.id},
        )

    async def _image_out(
        self, media_id: str, response_format: ResponseFormat, base_url: str
    ) -> tuple[ImageOut, str]:
        if response_format == "url":
            reply = await self.service.media(self._user, media_id)
            assert reply.media is not None  # service.media raised otherwise
            item = reply.media
            out = ImageOut(url=base_url + media_content_url(media_id))
        else:
            item, url = await self.service.media_source(self._user, media_id, "content")
            out = ImageOut(b64_json=base64.b64encode(await self._read_bytes(url)).decode("ascii"))
        out.revised_prompt = item.revised_prompt
        return out, item.content_type

    async def _read_bytes(self, url: str) -> bytes:
        upstream = await self._fetcher.open(url)
        try:
            return await upstream.aread()
        finally:
            await upstream.aclose()


ImagesCall = Annotated[_ImagesCall, Depends(on_the_loop(_ImagesCall))]


@router.post("/generations")
async def create_image(body: ImageGenerationBody, call: ImagesCall) -> JSONResponse:
    """OpenAI's `createImage`: the images of a durable job, once it ended."""
    return await call.answer(body)


@router.post("/edits")
async def edit_image(call: ImagesCall) -> JSONResponse:
    """OpenAI's `createImageEdit`: the images go to the profile as reference images."""
    body, elements = await _edit_form(call.request, call.service.limits.max_data_url_bytes)
    return await call.answer(body, elements)


async def _edit_form(request: Request, limit: int) -> tuple[ImageEditFields, list[dict[str, Any]]]:
    """The edit's parameters and its images as context elements. Each image is read up to
    the limit of a picture sent in a request (`limit`), and must be PNG, JPEG, WEBP or GIF."""
    kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if kind != "multipart/form-data":
        raise mapping.ParamError(
            "Send an edit as multipart/form-data with one or more `image` parts (JSON "
            "edits, with images by URL or file id, are not supported).",
            param=None,
            code="unsupported_content_type",
        )
    form = await request.form(max_files=MAX_EDIT_IMAGES + 1, max_fields=_MAX_FORM_FIELDS)
    try:
        fields: dict[str, str] = {}
        elements: list[dict[str, Any]] = []
        for name, value in form.multi_items():
            if isinstance(value, str):
                if name in fields:
                    raise mapping.ParamError(f"`{name}` is sent twice.", param=name)
                fields[name] = value
            elif name == "mask":
                raise mapping.ParamError(
                    "Masks are not supported by Atelier: send only the images and describe "
                    "the change in the prompt.",
                    param="mask",
                    code="unsupported_parameter",
                )
            elif name not in _IMAGE_PARTS:
                raise mapping.ParamError(
                    f"Unrecognized file part {name!r}: send images as `image` or `image[]`.",
                    param=name,
                )
            else:
                elements.append(await _image_element(value, len(elements) + 1, limit))
    finally:
        await form.close()
    if not elements:
        raise mapping.ParamError(
            "Send at least one image to edit (`image` or `image[]` parts).", param="image"
        )
    try:
        parsed = ImageEditFields.model_validate(fields)
    except ValidationError as exc:
        raise mapping.validation_error(exc.errors()) from exc
    return parsed, elements


async def _image_element(upload: UploadFile, position: int, limit: int) -> dict[str, Any]:
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise mapping.ParamError(
            f"Image {position} is larger than {limit:,} bytes, the most Atelier takes per image "
            "(ATELIER_GATEWAY_MAX_DATA_URL_BYTES).",
            param="image",
            code="image_too_large",
        )
    media_type = mapping.image_type(data)
    if media_type is None:
        raise mapping.ParamError(
            f"Image {position} ({upload.filename or 'unnamed'}) is not a PNG, JPEG, WEBP or GIF "
            "file.",
            param="image",
            code="invalid_image_file",
        )
    return mapping.edit_element(position, data, media_type)
