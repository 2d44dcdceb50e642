"""What every fake provider shares: recording requests, expiring result files, stalls, the CLI.

One copy of each, so all fakes record, expire and hang the same way.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

# What every fake's `hang` marker does.
HANG_MARKER = "answer only after `hang_s` seconds (or never, if the client gives up)"


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: Any  # parsed JSON, or the raw text when it did not parse


@dataclass
class StoredFile:
    data: bytes
    content_type: str
    expires_at: float


@dataclass
class FakeState:
    """Configuration and everything the fake saw; shared between the app and the test.

    Subclasses add their settings (with defaults) and what else they keep; `reset()` empties
    every list and map, so a module-scoped fake starts each test clean.
    """

    requests: list[RecordedRequest] = field(default_factory=list)

    @property
    def bodies(self) -> list[Any]:
        return [recorded.body for recorded in self.requests]

    def reset(self) -> None:
        for spec in fields(self):
            value = getattr(self, spec.name)
            if isinstance(value, list | dict):
                value.clear()


def record(request: Request, body: Any = None) -> RecordedRequest:
    """The request as a fake remembers it: method, path (with any query), headers, body."""
    path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RecordedRequest(request.method, path, dict(request.headers), body)


def parse_json(raw: bytes) -> Any:
    """The body as JSON, or as text when it is not JSON (recorded either way)."""
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return raw.decode("utf-8", errors="replace")


async def json_body(request: Request) -> Any:
    return parse_json(await request.body())


def unprocessable(field_name: str, message: str, error_type: str) -> JSONResponse:
    """FastAPI's own 422 for a body field (what fal apps and A1111 answer)."""
    return JSONResponse(
        {"detail": [{"loc": ["body", field_name], "msg": message, "type": error_type}]},
        status_code=422,
    )


async def hang_or_raise(
    request: Request, markers: Iterable[str], hang_s: float, raise_for: Callable[[str], None]
) -> None:
    """Act out the prompt markers that stall (`hang`) or answer an error (`raise_for`)."""
    for marker in markers:
        if marker == "hang":
            await hang(request, hang_s)
        else:
            raise_for(marker)


async def hang(request: Request, seconds: float) -> None:
    """Stall like an overloaded provider, but stop early once the client has given up."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await request.is_disconnected():
            return
        await asyncio.sleep(0.05)


def store_file(
    files: dict[str, StoredFile],
    base_url: str,
    data: bytes,
    content_type: str,
    expires_at: float,
    query: str = "",
) -> str:
    """Keep a result until `expires_at` and return the URL `serve_files` answers it on."""
    file_id = uuid.uuid4().hex
    files[file_id] = StoredFile(data, content_type, expires_at)
    return f"{base_url.rstrip('/')}/files/{file_id}{query}"


def serve_files(
    app: FastAPI,
    files: Mapping[str, StoredFile],
    downloads: list[RecordedRequest],
    *,
    missing: str = "Not Found",
    expired: str = "This link has expired.",
    expired_status: int = 410,
) -> None:
    """`GET /files/{id}`: a stored result until it expires, like a signed CDN link."""

    @app.get("/files/{file_id}")
    async def get_file(file_id: str, request: Request) -> Response:
        downloads.append(record(request))
        stored = files.get(file_id)
        if stored is None:
            return Response(missing, status_code=404)
        if time.time() >= stored.expires_at:
            return Response(expired, status_code=expired_status)
        return Response(stored.data, media_type=stored.content_type)


# Command-line options shared by several fakes: state field → (option, help).
API_KEY = ("--api-key", "key to accept")
DELAY = ("--delay", "seconds before each answer")
HANG = ("--hang", "seconds the `hang` marker stalls")
URL_TTL = ("--url-ttl", "seconds a result URL lives")


def add_fake_parser(
    fakes: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    *,
    help: str,
    description: str,
    markers: Mapping[str, str],
    state: type[Any],
    serve: Callable[[Any], FastAPI],
    url_suffix: str,
    flags: Mapping[str, tuple[str, str]],
    where: str = "in the prompt",
) -> argparse.ArgumentParser:
    """A fake's subcommand: the options every fake has (host, port, log level), one per state
    field in `flags` (defaulting to the state's own default) and its failure markers listed
    in the help. `make_app` builds the state from the options and serves it."""
    parser = fakes.add_parser(
        name,
        help=help,
        description=description,
        epilog=f"failure markers (put them {where}):\n"
        + "\n".join(f"  [{name}:{marker}]  {what}" for marker, what in markers.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port; 0 picks a free one (default)")
    parser.add_argument("--log-level", default="info", help="uvicorn log level (default info)")
    for field_name, (option, text) in flags.items():
        default = getattr(state, field_name)
        if isinstance(default, bool):
            action = argparse.BooleanOptionalAction
            parser.add_argument(option, dest=field_name, action=action, default=default, help=text)
            continue
        kind = str if default is None else type(default)
        parser.add_argument(option, dest=field_name, type=kind, default=default, help=text)

    def make_app(args: argparse.Namespace) -> FastAPI:
        return serve(state(**{field_name: getattr(args, field_name) for field_name in flags}))

    parser.set_defaults(url_suffix=url_suffix, make_app=make_app)
    return parser
