"""Errors in OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`, with its status
codes, so the SDKs raise their matching exception classes (`BadRequestError`,
`AuthenticationError`, `PermissionDeniedError`, `NotFoundError`, `RateLimitError`,
`InternalServerError`...). `OpenAIRoute` catches what a route raises, a malformed body included.
Atelier's own code is kept in the `X-Atelier-Error-Code` header.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from atelier_contracts.errors import AtelierError
from atelier_gateway.auth import TokenRejected
from atelier_gateway.openai_compat.mapping import JobFailed, ParamError, validation_error
from atelier_gateway.openai_compat.models import ErrorDetail, ErrorResponse
from atelier_gateway.service import QuotaRefused

log = logging.getLogger("atelier.gateway.openai")

INVALID_REQUEST = "invalid_request_error"
SERVER_ERROR = "server_error"

# Atelier's codes and the OpenAI parameter each one is about.
_PARAMS = {
    "size_not_allowed": "size",
    "count_not_allowed": "n",
    "empty_prompt": "prompt",
    "prompt_too_long": "prompt",
    "unknown_profile": "model",
    "profile_disabled": "model",
    "too_many_reference_images": "image",
    "reference_image_too_large": "image",
    "invalid_data_url": "image",
}


class StillRunning(AtelierError):
    """503: the route stopped waiting; the job runs on and lands in the media library."""

    status_code = 503
    code = "still_running"

    def __init__(self, job_id: str, waited_s: float, *, retry_safe: bool) -> None:
        super().__init__(
            f"The image is taking longer than {waited_s:g} seconds. It is still being made and "
            f"will appear in the project's media library (generation {job_id}: "
            f"GET /v1/generations/{job_id})."
        )
        self.job_id = job_id
        # Asked again with the same Idempotency-Key, the route waits for the same job.
        self.retry_safe = retry_safe


@dataclass(frozen=True)
class OpenAIAnswer:
    status: int
    error: ErrorDetail
    headers: dict[str, str] = field(default_factory=dict)


def _retry_after(exc: QuotaRefused) -> str | None:
    reply = exc.reply
    wait_s = reply.retry_after_s
    if wait_s is None and reply.resets_at is not None:
        wait_s = (reply.resets_at - datetime.now(UTC)).total_seconds()
    return None if wait_s is None else str(max(1, math.ceil(wait_s)))


def describe(exc: AtelierError) -> OpenAIAnswer:
    """An Atelier error as OpenAI would answer it: status, `{type, code, param, message}`, and
    headers (`Retry-After`, `x-should-retry` where the SDK's automatic retry would be wrong)."""
    headers = {"X-Atelier-Error-Code": exc.code}
    param = getattr(exc, "param", None) or _PARAMS.get(exc.code)
    status, kind, code = exc.status_code, INVALID_REQUEST, exc.code
    if isinstance(exc, TokenRejected) or status == 401:
        code = "invalid_api_key"
        headers["WWW-Authenticate"] = 'Bearer realm="atelier"'
    elif isinstance(exc, QuotaRefused):
        if exc.code == "quota_exceeded":
            # Spent until the period resets: retrying at once cannot help.
            kind = code = "insufficient_quota"
            headers["x-should-retry"] = "false"
        else:
            kind, code = "requests", "rate_limit_exceeded"
        retry_after = _retry_after(exc)
        if retry_after is not None:
            headers["Retry-After"] = retry_after
    elif isinstance(exc, StillRunning):
        kind = SERVER_ERROR
        headers["Location"] = f"/v1/generations/{exc.job_id}"
        headers["x-should-retry"] = "true" if exc.retry_safe else "false"
    elif isinstance(exc, JobFailed):
        kind = INVALID_REQUEST if status < 500 else SERVER_ERROR
        headers["x-should-retry"] = "true" if exc.retryable else "false"
    elif status == 422:
        status = 400  # OpenAI answers every invalid request with 400
    elif status >= 500:
        kind = SERVER_ERROR
    return OpenAIAnswer(
        status, ErrorDetail(message=exc.message, type=kind, param=param, code=code), headers
    )


def error_response(exc: AtelierError) -> JSONResponse:
    answer = describe(exc)
    body = ErrorResponse(error=answer.error).model_dump()
    return JSONResponse(body, status_code=answer.status, headers=answer.headers)


def _validation(exc: RequestValidationError) -> ParamError:
    errors = exc.errors()
    if any(
        e.get("type") == "json_invalid"
        or (e.get("type") == "missing" and tuple(e.get("loc", ())) == ("body",))
        for e in errors
    ):
        return ParamError(
            "The request body is not valid JSON: send the parameters as a JSON object.",
            param=None,
        )
    return validation_error(errors, prefix=("body",))


class OpenAIRoute(APIRoute):
    """A route answering every error in OpenAI's shape."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except AtelierError as exc:
                return error_response(exc)
            except RequestValidationError as exc:
                return error_response(_validation(exc))
            except HTTPException as exc:  # a body over the limit, a malformed multipart body
                status = exc.status_code
                code = getattr(exc, "code", None) or ("invalid_body" if status < 500 else "error")
                return error_response(AtelierError(str(exc.detail), code=code, status_code=status))
            except Exception:
                log.exception("OpenAI-compatible route failed", extra={"path": request.url.path})
                failed = AtelierError(
                    "Something went wrong inside Atelier; try again.",
                    code="internal",
                    status_code=500,
                )
                return error_response(failed)

        return handle
