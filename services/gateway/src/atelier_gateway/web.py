"""The demo web page at the gateway root: plain HTML, CSS and JavaScript modules, no build step.

The page is a client of the public API like any other (docs/adr/0009-web-page-auth.md): it holds
the bearer token in `sessionStorage` and sends it on every `fetch`, so serving it needs no
session, cookie or secret here. Its files are public; what they show comes from the API.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from starlette.responses import FileResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

WEB_DIR = Path(__file__).parent / "web"

# Only our own scripts and styles run; images are our blob: URLs (fetched with the token) and
# the demo's data: URLs; every request goes to this origin.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
_HEADERS = {
    # Revalidate every time (ETag/Last-Modified make that cheap): a new version shows at once.
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class _PageFiles(StaticFiles):
    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(_HEADERS)
        return response


def install_web_page(app: FastAPI) -> None:
    """`GET /` is the page; `/ui/...` its scripts, styles and demo data."""

    @app.get("/", include_in_schema=False)
    async def web_page() -> FileResponse:
        return FileResponse(
            WEB_DIR / "index.html",
            media_type="text/html; charset=utf-8",
            headers={**_HEADERS, "Content-Security-Policy": CONTENT_SECURITY_POLICY},
        )

    app.mount("/ui", _PageFiles(directory=WEB_DIR), name="ui")
