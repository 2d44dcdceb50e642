"""The request body's size, bounded before it is parsed (issue 15: one user must not be able to
fill the gateway's memory, or the job queue, with one request).

A declared `Content-Length` over the limit is refused before a byte is read; a chunked body is
counted as it is read and refused as soon as it passes the limit. The refusal is raised from
`receive`, where the route reads its body, as a `BodyTooLarge` (an `HTTPException`, which
FastAPI lets through its body parsing): the native API answers it as `413 request_too_large`
(`install_body_limit`), the Inkweld facade in its own shape, like every other error of a route.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from atelier_web import error_body

# The Inkweld facade's file uploads (`POST /api/v1/media/{user}/{slug}` and
# `.../projects/{user}/{slug}/cover`) take up to `ATELIER_GATEWAY_INKWELD_MAX_UPLOAD_BYTES` and
# count their bytes themselves.
INKWELD_UPLOADS = re.compile(r"^/api/v1/(media/[^/]+/[^/]+|projects/[^/]+/[^/]+/cover)/?$")


class BodyTooLarge(HTTPException):
    code = "request_too_large"

    def __init__(self, limit: int) -> None:
        super().__init__(
            status_code=413,
            detail=f"The request body is larger than {limit:,} bytes, the most this API takes "
            "(ATELIER_GATEWAY_MAX_REQUEST_BYTES). Send fewer or smaller pictures: library "
            "images travel by media_id.",
        )


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class BodyLimitMiddleware:
    def __init__(
        self, app: ASGIApp, *, max_bytes: int, exempt: Callable[[str], bool] | None = None
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.exempt = exempt or (lambda path: INKWELD_UPLOADS.match(path) is not None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.exempt(scope["path"]):
            await self.app(scope, receive, send)
            return
        declared = _declared_length(scope)
        received = 0

        async def receive_within_limit() -> Message:
            nonlocal received
            if declared is not None and declared > self.max_bytes:
                raise BodyTooLarge(self.max_bytes)
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        await self.app(scope, receive_within_limit, send)


def install_body_limit(app: FastAPI, max_bytes: int) -> None:
    app.add_middleware(BodyLimitMiddleware, max_bytes=max_bytes)

    @app.exception_handler(BodyTooLarge)
    async def _body_too_large(_: Request, exc: BodyTooLarge) -> JSONResponse:
        return JSONResponse(error_body(exc.code, str(exc.detail)), status_code=413)
