"""OpenAI's images requests as Atelier generations, and their outcome as OpenAI's answer.
Pure: no I/O. Every rule a caller can observe is here (docs/openai-compat.md lists them); what
Atelier allows is still decided by the native validation the translated request goes through.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from atelier_contracts.errors import AtelierError, ErrorClass, InvalidInput, NotFound
from atelier_contracts.jobs import JobStatus, JobView
from atelier_contracts.profiles import Profile
from atelier_contracts.subjects import PROJECT_ID_PATTERN
from atelier_gateway.models import GenerationRequestBody
from atelier_gateway.openai_compat.models import ImageOut, ImageRequest, ImagesResponse
from atelier_gateway.validation import option_value_problem

# The header naming the project the images go to: what the SDK sends for `OpenAI(project=...)`.
PROJECT_HEADER = "OpenAI-Project"
# OpenAI parameters that become profile options of the same name, when the profile declares
# that option; `auto` means the profile's default and is not sent.
OPTION_PARAMS = (
    "quality",
    "style",
    "background",
    "moderation",
    "output_format",
    "output_compression",
    "input_fidelity",
)
AUTO = "auto"
# The files an edit may send: PNG, JPEG and WEBP, as OpenAI takes (GIF too: the context
# service reads it). Recognised by their first bytes, never by the part's declared type.
_SIGNATURES: tuple[tuple[bytes, int, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", 0, "image/png"),
    (b"\xff\xd8\xff", 0, "image/jpeg"),
    (b"GIF8", 0, "image/gif"),
    (b"WEBP", 8, "image/webp"),
)
_OUTPUT_FORMATS = {"image/png": "png", "image/jpeg": "jpeg", "image/webp": "webp"}


class ParamError(InvalidInput):
    """400 `invalid_request_error` naming the OpenAI parameter at fault (`param`)."""

    def __init__(self, message: str, *, param: str | None, code: str = "invalid_value") -> None:
        super().__init__(message, code=code)
        self.param = param


class ModelNotFound(NotFound):
    """404 `model_not_found`: no profile has this name or id."""

    code = "model_not_found"
    param = "model"


def validation_error(
    errors: Sequence[Mapping[str, Any]], *, prefix: Sequence[str] = ()
) -> ParamError:
    """A body that does not fit the schema (pydantic's errors), as a 400 naming its first
    field; `prefix`: location parts that are not the parameter's name (FastAPI's `body`)."""
    parts = []
    for error in errors:
        where = ".".join(str(p) for p in error["loc"] if p not in prefix)
        if error["type"] == "extra_forbidden":
            parts.append(f"Unrecognized request argument supplied: {where}")
        else:
            parts.append(f"{where}: {error['msg']}" if where else str(error["msg"]))
    first = [str(p) for p in errors[0]["loc"] if p not in prefix] if errors else []
    return ParamError("; ".join(parts) + ".", param=first[0] if first else None)


# --- the request -----------------------------------------------------------------------------


def find_profile(model: str | None, profiles: Iterable[Profile]) -> Profile:
    """The profile `model` names, by id, else by name (case-insensitive, as names are unique
    regardless of case); without a model, the first enabled profile as `GET /v1/features`
    orders them."""
    listed = list(profiles)
    if not model:
        enabled = sorted(
            (p for p in listed if p.enabled), key=lambda p: (p.sort_order, p.name.lower())
        )
        if not enabled:
            raise ModelNotFound("No image profile is enabled, so there is no default model.")
        return enabled[0]
    for profile in listed:
        if profile.id == model:
            return profile
    wanted = model.casefold()
    for profile in listed:
        if profile.name.casefold() == wanted:
            return profile
    raise ModelNotFound(
        f"The model {model!r} does not exist: name an Atelier profile by its name or id "
        "(GET /v1/features lists them)."
    )


def request_project(header: str | None, granted: Iterable[str]) -> str:
    """The project the images go to: the `OpenAI-Project` header, else the token's only project.
    Whether the token grants it is checked by the submission (403 otherwise)."""
    if header is not None and header.strip():
        project = header.strip()
        if not re.fullmatch(PROJECT_ID_PATTERN, project):
            raise ParamError(
                f"The {PROJECT_HEADER} header {project[:100]!r} is not a project id: letters, "
                "digits, '-' and '_' only.",
                param=None,
                code="invalid_project",
            )
        return project
    projects = sorted(granted)
    if len(projects) == 1:
        return projects[0]
    raise ParamError(
        f"Name the project the images go to in the {PROJECT_HEADER} header (the SDK's "
        "`project=`): "
        + ("your token grants several." if projects else "your token grants no project."),
        param=None,
        code="project_required",
    )


def refuse_unsupported(body: ImageRequest) -> None:
    if body.stream:
        raise ParamError(
            "Streaming is not supported by Atelier: leave `stream` out (the answer comes when "
            "the images are made; GET /v1/generations/{id}/events streams a job's progress).",
            param="stream",
            code="unsupported_parameter",
        )


def requested_size(size: str | None) -> str | None:
    """`auto` (or none) is the profile's default size; any other size is checked against the
    profile's list by the native validation."""
    if size is None or size.strip().lower() == AUTO:
        return None
    return size


def options_for(body: ImageRequest, profile: Profile) -> dict[str, Any]:
    """The OpenAI parameters the profile declares as options, under the same names. A parameter
    the profile does not declare is left out (its model has no such setting); one it declares
    with a value it does not take is refused by the native check, which lists the values."""
    declared = {option.name: option for option in profile.options}
    options: dict[str, Any] = {}
    for name in OPTION_PARAMS:
        value = getattr(body, name, None)
        if value is None or value == AUTO or name not in declared:
            continue
        problem = option_value_problem(declared[name], value)
        if problem is not None:
            raise ParamError(
                f"{profile.name!r} takes `{name}` but it {problem} (got {value!r}).",
                param=name,
                code="invalid_option",
            )
        options[name] = value
    return options


def generation_request(
    body: ImageRequest,
    project: str,
    profile: Profile,
    elements: Sequence[Mapping[str, Any]] = (),
) -> GenerationRequestBody:
    """The native request an OpenAI one stands for; `elements`: an edit's input images."""
    try:
        return GenerationRequestBody.model_validate(
            {
                "project": project,
                "profile_id": profile.id,
                "prompt": body.prompt,
                "size": requested_size(body.size),
                "count": body.n or 1,
                "options": options_for(body, profile),
                "context": {"elements": list(elements)},
            }
        )
    except ValidationError as exc:
        raise validation_error(exc.errors()) from exc


def image_type(data: bytes) -> str | None:
    """The media type of an image file from its first bytes; None when it is none we take."""
    for signature, offset, media_type in _SIGNATURES:
        if data[offset : offset + len(signature)] == signature:
            return media_type
    return None


def edit_element(position: int, data: bytes, media_type: str) -> dict[str, Any]:
    """An input image of an edit as a context element that sends only its picture: the prompt
    gains "Reference images, in order: Image 1, ...", nothing else. The picture goes by
    reference through the staging bucket (ADR 0017), as every data URL of a request does."""
    encoded = base64.b64encode(data).decode("ascii")
    return {
        "id": f"image-{position}",
        "name": f"Image {position}",
        "type": "image",
        "image": {"data_url": f"data:{media_type};base64,{encoded}"},
        "send": {"image": True, "description": False, "data": False},
    }


# --- the answer ------------------------------------------------------------------------------


def images_response(
    job: JobView, images: Sequence[ImageOut], content_types: Iterable[str]
) -> ImagesResponse:
    formats = {_OUTPUT_FORMATS.get(t) for t in content_types}
    output_format = formats.pop() if len(formats) == 1 else None
    return ImagesResponse(
        created=int(job.created_at.timestamp()),
        data=list(images),
        size=job.size,
        output_format=output_format,
    )


# How a job that ended without images is answered: (status, OpenAI code).
_JOB_FAILURES: dict[ErrorClass, tuple[int, str]] = {
    ErrorClass.CONTENT_BLOCKED: (400, "content_policy_violation"),
    ErrorClass.INVALID_REQUEST: (400, "invalid_request"),
    ErrorClass.CANCELLED: (400, "cancelled"),
    ErrorClass.RATE_LIMITED: (503, "provider_rate_limited"),
    ErrorClass.PROVIDER_UNAVAILABLE: (503, "provider_unavailable"),
    ErrorClass.TIMEOUT: (503, "timeout"),
    ErrorClass.QUOTA_EXHAUSTED: (503, "provider_quota_exhausted"),
    ErrorClass.AUTH: (500, "provider_auth"),
    ErrorClass.NO_IMAGE_RETURNED: (500, "no_image_returned"),
    ErrorClass.INTERNAL: (500, "internal"),
}


class JobFailed(AtelierError):
    """A job that ended without an image. `retryable`: whether asking again may succeed (the
    SDK's automatic retry is told with `x-should-retry`)."""

    def __init__(self, message: str, *, code: str, status_code: int, retryable: bool) -> None:
        super().__init__(message, code=code, status_code=status_code)
        self.retryable = retryable


def job_failure(job: JobView) -> JobFailed:
    if job.error is not None:
        error_class, message, retryable = (
            job.error.error_class,
            job.error.message,
            job.error.retryable,
        )
    elif job.status == JobStatus.CANCELLED:
        error_class, message, retryable = (
            ErrorClass.CANCELLED,
            "The generation was cancelled.",
            False,
        )
    else:
        error_class = ErrorClass.NO_IMAGE_RETURNED
        message, retryable = "The provider answered without an image.", True
    status, code = _JOB_FAILURES.get(error_class, (500, error_class.value))
    return JobFailed(message, code=code, status_code=status, retryable=retryable)
