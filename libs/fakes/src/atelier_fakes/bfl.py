"""A fake Black Forest Labs FLUX API: submit → `polling_url` → poll → signed `sample` URL.

Like the real one (providers.md A.5): `POST /v1/{model}` with `x-key` answers `{id,
polling_url}`; `GET /v1/get_result?id=` reports `Pending` (for `pending_s`), then `Ready` with a
`sample` URL that expires after `url_ttl_s`, or `Request Moderated`, `Content Moderated`,
`Error`; an unknown id is `Task not found`. Validation errors are FastAPI-style 422s, and extra
fields are refused. Every submission is recorded in `submissions`, so a test can prove that a
resumed worker did not pay twice. Failures are scripted by prompt markers such as
"a cat [bfl:content-moderated]"; see `MARKERS`.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import io
import random
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from PIL import Image, UnidentifiedImageError

from atelier_fakes import _common
from atelier_fakes._common import RecordedRequest, StoredFile
from atelier_fakes.images import CONTENT_TYPES, render_image

MARKERS: dict[str, str] = {
    "request-moderated": "poll ends in `Request Moderated` (input flagged)",
    "content-moderated": "poll ends in `Content Moderated` (output flagged)",
    "error": "poll ends in `Error`",
    "task-not-found": "the task is forgotten at once: every poll says `Task not found`",
    "expired-url": "Ready, but the sample URL has already expired (GET → 410)",
    "garbage-image": "Ready, but the sample is not an image",
    "slow": "stay Pending for `slow_pending_s` instead of `pending_s`",
    "poll-flaky": "the first poll answers 503 and the second 429, then polling works",
    "foreign-polling-url": "the submission names a polling_url on another host",
    "401-echo-key": "403 whose detail echoes the caller's key (a leaky proxy)",
    "402": "402 insufficient credits",
    "422": "422 FastAPI-style validation error",
    "429": "429 too many active tasks, with `retry-after`",
    "429-no-hint": "429 too many active tasks, without `retry-after`",
    "500": "500 internal server error",
    "503": "503 service unavailable",
    "hang": "the submission answers only after `hang_s` seconds",
}
_MARKER_RE = re.compile(r"\[bfl:([a-z0-9\-]+)\]")
_OUTCOMES = {
    "request-moderated": "Request Moderated",
    "content-moderated": "Content Moderated",
    "error": "Error",
}
_RATIO_RE = re.compile(r"^(\d+):(\d+)$")
_COMMON = frozenset(
    {
        "prompt",
        "seed",
        "safety_tolerance",
        "output_format",
        "prompt_upsampling",
        "webhook_url",
        "webhook_secret",
    }
)
MAX_PIXELS = 4 * 1024 * 1024


@dataclass
class Task:
    id: str
    model: str
    prompt: str
    width: int
    height: int
    seed: int
    output_format: str
    created_at: float
    pending_s: float
    markers: list[str]
    polls: int = 0
    sample_url: str | None = None


@dataclass
class FakeBFLState(_common.FakeState):
    api_key: str = "bfl-fake-key-00000000-0000-0000-0000"
    pending_s: float = 0.2
    slow_pending_s: float = 30.0
    url_ttl_s: float = 600.0  # "sample URLs expire after about 10 minutes"
    hang_s: float = 60.0
    retry_after_s: float = 2.0
    downloads: list[RecordedRequest] = field(default_factory=list)
    tasks: dict[str, Task] = field(default_factory=dict)
    files: dict[str, StoredFile] = field(default_factory=dict)

    @property
    def submissions(self) -> list[RecordedRequest]:
        return [recorded for recorded in self.requests if recorded.method == "POST"]

    @property
    def polls(self) -> list[RecordedRequest]:
        return [recorded for recorded in self.requests if recorded.method == "GET"]

    @property
    def bodies(self) -> list[Any]:
        return [recorded.body for recorded in self.submissions]

        self.files.clear()


class _Reject(Exception):
    def __init__(self, status: int, detail: Any, headers: dict[str, str] | None = None) -> None:
        super().__init__(str(detail))
        self.status, self.detail = status, detail
        self.headers = headers or {}


def create_bfl_fake(state: FakeBFLState | None = None) -> FastAPI:
    """The fake as an ASGI app; serve it with `run_fake_in_thread` or uvicorn."""
    state = state or FakeBFLState()
    app = FastAPI(title="Fake BFL FLUX API", docs_url=None, redoc_url=None)
    app.state.fake = state

    @app.get("/v1/get_result")
    async def get_result(request: Request, id: str = "") -> Response:
        state.requests.append(_common.record(request))
        try:
            _check_auth(request.headers.get("x-key"), state.api_key)
            return _poll(request, state, id)
        except _Reject as reject:
            return _error(reject)

    @app.post("/v1/{model}")
    async def submit(model: str, request: Request) -> Response:
        body = await _common.json_body(request)
        state.requests.append(_common.record(request, body))
        try:
            key = _check_auth(request.headers.get("x-key"), state.api_key)
            width, height = _validated(model, body)
            return await _accept(request, state, model, body, width, height, key)
        except _Reject as reject:
            return _error(reject)

    _common.serve_files(
        app,
        state.files,
        state.downloads,
        missing="The specified blob does not exist.",
        expired="Signed expiry time has passed.",
    )
    return app


def _check_auth(key: str | None, expected: str) -> str:
    if not key or key != expected:
        raise _Reject(403, "Not authenticated - Invalid Authentication")
    return key


def _extra(name: str, value: Any) -> _Reject:
    return _Reject(
        422,
        [
            {
                "type": "extra_forbidden",
                "loc": ["body", name],
                "msg": "Extra inputs are not permitted",
                "input": value if not isinstance(value, str) else value[:40],
            }
        ],
    )


def _invalid(name: str, message: str, value: Any = None) -> _Reject:
    return _Reject(
        422, [{"type": "value_error", "loc": ["body", name], "msg": message, "input": value}]
    )


def _validated(model: str, body: Any) -> tuple[int, int]:
    """(width, height) of the image the submission asks for, or a 422 as BFL would send."""
    if not model.startswith("flux-"):
        raise _Reject(404, "Not Found")
    if not isinstance(body, dict):
        raise _Reject(422, [{"type": "json_invalid", "loc": ["body"], "msg": "JSON decode error"}])
    aspect = model.startswith("flux-kontext") or model.endswith("-ultra")
    references = 8 if model.startswith("flux-2") else 4 if model.startswith("flux-kontext") else 0
    allowed = set(_COMMON) | ({"aspect_ratio"} if aspect else {"width", "height"})
    if references:
        allowed |= {"input_image"} | {f"input_image_{i}" for i in range(2, references + 1)}
    if model == "flux-2-flex":
        allowed |= {"steps", "guidance"}
    if model.endswith("-ultra"):
        allowed |= {"raw"}
    for name, value in body.items():
        if name not in allowed:
            raise _extra(name, value)
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        raise _Reject(
            422, [{"type": "missing", "loc": ["body", "prompt"], "msg": "Field required"}]
        )
    seed = body.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise _invalid("seed", "Input should be a valid integer", seed)
    tolerance = body.get("safety_tolerance", 2)
    if not isinstance(tolerance, int) or not 0 <= tolerance <= 6:
        raise _invalid("safety_tolerance", "Input should be between 0 and 6", tolerance)
    if body.get("output_format", "jpeg") not in ("jpeg", "png"):
        raise _invalid("output_format", "Input should be 'jpeg' or 'png'", body["output_format"])
    for name in body:
        if name.startswith("input_image"):
            _check_image(name, body[name])
    if aspect:
        return _aspect_dimensions(body.get("aspect_ratio", "1:1"))
    width, height = body.get("width", 1024), body.get("height", 1024)
    for name, side in (("width", width), ("height", height)):
        if not isinstance(side, int) or side % 16 or side < 64:
            raise _invalid(name, "Input should be a multiple of 16 and at least 64", side)
        if model in ("flux-pro-1.1", "flux-dev") and not 256 <= side <= 1440:
            raise _invalid(name, "Input should be between 256 and 1440", side)
    if width * height > MAX_PIXELS:
        raise _invalid("width", "width x height must be at most 4 megapixels", width * height)
    return width, height


def _aspect_dimensions(ratio: Any) -> tuple[int, int]:
    match = _RATIO_RE.match(ratio) if isinstance(ratio, str) else None
    if match is None:
        raise _invalid("aspect_ratio", "Input should look like '16:9'", ratio)
    w, h = int(match.group(1)), int(match.group(2))
    if not 9 / 21 <= w / h <= 21 / 9:
        raise _invalid("aspect_ratio", "Aspect ratio must be between 21:9 and 9:21", ratio)
    scale = (1024 * 1024 / (w * h)) ** 0.5  # about one megapixel
    return max(64, round(w * scale / 16) * 16), max(64, round(h * scale / 16) * 16)


def _check_image(name: str, value: Any) -> None:
    if isinstance(value, str) and value.startswith(("http://", "https://")):
        return
    try:
        data = base64.b64decode(value, validate=True) if isinstance(value, str) else b""
        with Image.open(io.BytesIO(data)) as img:
            img.verify()
    except (binascii.Error, ValueError, UnidentifiedImageError, OSError):
        raise _invalid(name, "Input should be a URL or a base64-encoded image", None) from None


async def _accept(
    request: Request,
    state: FakeBFLState,
    model: str,
    body: dict[str, Any],
    width: int,
    height: int,
    key: str,
) -> Response:
    markers = _MARKER_RE.findall(body["prompt"])
    await _common.hang_or_raise(
        request, markers, state.hang_s, lambda marker: _raise_for_marker(marker, state, key)
    )
    task = Task(
        id=str(uuid.uuid4()),
        model=model,
        prompt=body["prompt"],
        width=width,
        height=height,
        seed=seed if isinstance(seed := body.get("seed"), int) else random.randint(0, 2**31),
        output_format=body.get("output_format", "jpeg"),
        created_at=time.monotonic(),
        pending_s=state.slow_pending_s if "slow" in markers else state.pending_s,
        markers=markers,
    )
    if "task-not-found" not in markers:
        state.tasks[task.id] = task
    base = str(request.base_url).rstrip("/")
    if "foreign-polling-url" in markers:
        base = "https://api.elsewhere.example"
    return JSONResponse(
        {
            "id": task.id,
            "polling_url": f"{base}/v1/get_result?id={task.id}",
            "cost": 3.0,
            "input_mp": 0.0,
            "output_mp": round(width * height / 1_000_000, 2),
        }
    )


def _poll(request: Request, state: FakeBFLState, task_id: str) -> Response:
    task = state.tasks.get(task_id)
    if task is None:
        return JSONResponse({"id": task_id, "status": "Task not found"})
    task.polls += 1
    if "poll-flaky" in task.markers and task.polls <= 2:
        if task.polls == 1:
            raise _Reject(503, "Service Unavailable")
        raise _Reject(429, "Too many requests")
    elapsed = time.monotonic() - task.created_at
    if elapsed < task.pending_s:
        progress = round(elapsed / task.pending_s, 2)
        return JSONResponse(
            {"id": task.id, "status": "Pending", "result": None, "progress": progress}
        )
    for marker in task.markers:
        if marker in _OUTCOMES:
            details = (
                {"Moderation Reasons": ["Derivative Works Filter"]}
                if "moderated" in marker
                else {"error": "Internal error during generation"}
            )
            return JSONResponse(
                {"id": task.id, "status": _OUTCOMES[marker], "result": None, "details": details}
            )
    if task.sample_url is None:
        if "garbage-image" in task.markers:
            data = b"<html>not an image</html>"
        else:
            data = render_image(
                f"{task.prompt}#{task.seed}", task.width, task.height, task.output_format
            )
        expires = time.time() + (-1.0 if "expired-url" in task.markers else state.url_ttl_s)
        task.sample_url = _common.store_file(
            state.files,
            str(request.base_url),
            data,
            CONTENT_TYPES[task.output_format],
            expires,
            query="?se=signed&sig=abc",
        )
    sample = task.sample_url
    return JSONResponse(
        {
            "id": task.id,
            "status": "Ready",
            "result": {
                "sample": sample,
                "prompt": task.prompt,
                "seed": task.seed,
                "start_time": time.time() - elapsed,
                "end_time": time.time(),
                "duration": elapsed,
            },
            "progress": None,
        }
    )


def _raise_for_marker(marker: str, state: FakeBFLState, key: str) -> None:
    if marker in _OUTCOMES or marker in (
        "task-not-found",
        "expired-url",
        "garbage-image",
        "slow",
        "poll-flaky",
        "foreign-polling-url",
    ):
        return
    retry = {"retry-after": f"{state.retry_after_s:g}"}
    too_many = "You have exceeded the maximum number of active tasks (24). Try again later."
    rejections = {
        "401-echo-key": _Reject(403, f"Not authenticated - Invalid key {key}"),
        "402": _Reject(402, "Insufficient credits. Visit https://api.bfl.ai to add credits."),
        "422": _invalid("width", "Input should be a multiple of 16", 1000),
        "429": _Reject(429, too_many, retry),
        "429-no-hint": _Reject(429, too_many),
        "500": _Reject(500, "Internal Server Error"),
        "503": _Reject(503, "Service temporarily unavailable"),
    }
    raise rejections.get(marker) or _Reject(400, f"fake BFL: unknown marker [bfl:{marker}]")


def _error(reject: _Reject) -> JSONResponse:
    return JSONResponse(
        {"detail": reject.detail}, status_code=reject.status, headers=reject.headers
    )


def add_cli(fakes: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`python -m atelier_fakes bfl ...`"""
    _common.add_fake_parser(
        fakes,
        "bfl",
        help="fake Black Forest Labs FLUX API (POST /v1/{model}, GET /v1/get_result)",
        description="Fake BFL submit-and-poll API with expiring sample URLs.",
        markers=MARKERS,
        state=FakeBFLState,
        serve=create_bfl_fake,
        url_suffix="/v1",
        flags={
            "api_key": ("--api-key", "x-key to accept"),
            "pending_s": ("--pending", "seconds a task is Pending"),
            "url_ttl_s": _common.URL_TTL,
            "hang_s": _common.HANG,
        },
    )
