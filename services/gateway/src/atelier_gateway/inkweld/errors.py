"""Errors in the app's shapes and with the status codes its document lists for each operation.

Atelier answers `{"error": {"code", "message"}}`; the app expects `{"error": "..."}` (profiles,
generation, audits) or `{"message": "..."}` (media, covers), and only the status codes its
document lists. `InkweldRoute` catches what a route raises (including a malformed body) and
answers in the operation's own shape; a status the operation does not list becomes the nearest
one it does (docs/inkweld.md, "Errors").
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any, Literal

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from atelier_contracts.errors import AtelierError
from atelier_gateway.auth import TokenRejected
from atelier_gateway.service import QuotaRefused

DOCUMENT_PATH = Path(__file__).parent / "openapi.json"

ErrorStyle = Literal["error", "message"]
# The document's error schemas that carry `message` rather than `error`.
_MESSAGE_SCHEMAS = ("MediaError", "ImageError")


@cache
def document() -> dict[str, Any]:
    """The app's OpenAPI document, as bundled with the gateway."""
    loaded: dict[str, Any] = json.loads(DOCUMENT_PATH.read_text())
    return loaded


# Operations the app's frontend calls that its document leaves out (reference §1): the statuses
# the app's backend answers them with before a stream begins.
_UNDOCUMENTED: dict[str, tuple[frozenset[int], ErrorStyle]] = {
    "generateImageStream": (frozenset({200, 400, 401, 403, 503}), "error"),
}


@cache
def operation_errors(operation_id: str) -> tuple[frozenset[int], ErrorStyle]:
    """The status codes the document lists for an operation, and its error body's shape."""
    if operation_id in _UNDOCUMENTED:
        return _UNDOCUMENTED[operation_id]
    for item in document()["paths"].values():
        for operation in item.values():
            if operation.get("operationId") != operation_id:
                continue
            responses: dict[str, Any] = operation["responses"]
            style: ErrorStyle = "error"
            for status, response in responses.items():
                if int(status) < 400:
                    continue
                schema = response.get("content", {}).get("application/json", {}).get("schema", {})
                if str(schema.get("$ref", "")).endswith(_MESSAGE_SCHEMAS):
                    style = "message"
            return frozenset(int(status) for status in responses), style
    raise KeyError(f"the Inkweld document has no operation {operation_id!r}")


def documented_status(status: int, code: str, documented: frozenset[int]) -> int:
    """`status` if the operation lists it, else the nearest one it does list."""
    if code == "generation_disabled" and 503 in documented:
        return 503  # "no provider available" is what the app says while generation is off
    if status in documented:
        return status
    if status >= 500:
        return 503 if 503 in documented else status
    for candidate in (400, 404, 403):
        if candidate in documented:
            return candidate
    return status


class StillRunning(AtelierError):
    """The synchronous generate stopped waiting; the job runs on and lands in the library."""

    status_code = 503
    code = "still_running"

    def __init__(self, job_id: str, waited_s: float, headers: dict[str, str] | None = None) -> None:
        super().__init__(
            f"The image is taking longer than {waited_s:g} seconds. It is still being made and "
            f"will appear in the project's media library (generation {job_id}).",
        )
        self.job_id = job_id
        self.headers = {
            "Location": f"/v1/generations/{job_id}",
            "Retry-After": "5",
            **(headers or {}),
        }


def error_response(
    exc: AtelierError, documented: frozenset[int], style: ErrorStyle
) -> JSONResponse:
    status = documented_status(exc.status_code, exc.code, documented)
    headers: dict[str, str] = {"X-Atelier-Error-Code": exc.code}
    headers.update(getattr(exc, "headers", None) or {})
    if isinstance(exc, TokenRejected) and status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="atelier"'
    if isinstance(exc, QuotaRefused):
        reply = exc.reply
        wait_s = reply.retry_after_s
        if wait_s is None and reply.resets_at is not None:
            wait_s = (reply.resets_at - datetime.now(UTC)).total_seconds()
        if wait_s is not None:
            headers["Retry-After"] = str(max(1, math.ceil(wait_s)))
    body: dict[str, Any] = {"error": exc.message} if style == "error" else {"message": exc.message}
    moderation = getattr(exc, "moderation", None)
    if moderation is not None:  # a content block's detail, beside the field the app reads
        body["moderation"] = moderation
    return JSONResponse(body, status_code=status, headers=headers)


def validation_message(exc: ValidationError) -> str:
    """A contract's refusal of a translated request, field by field."""
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"] if p != "body")
        parts.append(f"{where}: {error['msg']}" if where else str(error["msg"]))
    return "; ".join(parts)


def _validation_message(exc: RequestValidationError) -> str:
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return "The request body is not valid JSON."
    parts = []
    for error in errors:
        where = ".".join(str(p) for p in error.get("loc", ()) if p != "body")
        parts.append(f"{where or 'request body'}: {error.get('msg', 'is invalid')}")
    return "; ".join(parts)


class InkweldRoute(APIRoute):
    """A route of the facade: errors in its operation's shape (`operation_id` names it)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if self.operation_id is None:
            raise ValueError(f"Inkweld route {self.path} needs the document's operation_id")
        documented, style = operation_errors(self.operation_id)

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except AtelierError as exc:
                return error_response(exc, documented, style)
            except RequestValidationError as exc:
                invalid = AtelierError(_validation_message(exc), code="invalid_input")
                return error_response(invalid, documented, style)
            except HTTPException as exc:  # e.g. a malformed multipart body
                failed = AtelierError(
                    str(exc.detail), code="http_error", status_code=exc.status_code
                )
                return error_response(failed, documented, style)

        return handle
