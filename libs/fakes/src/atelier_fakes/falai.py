"""A fake fal.ai queue API: submit → status → result → media URL, with cancel.

It follows providers.md A.6: `POST /{owner}/{app}[/{subpath}]` answers `{request_id,
status_url, response_url, cancel_url, queue_position}`, and those URLs use the app path
*without* the subpath (a client that builds them itself gets 404s here, as on fal). Each request
runs a small state machine with configurable timings (IN_QUEUE with a falling queue position,
then IN_PROGRESS, then COMPLETED), answered with `status_http_code` (200, or 202 as fal may
answer while a request waits); results are kept `result_ttl_s`, media URLs `url_ttl_s`.
Failures are scripted by markers in the prompt, e.g. "a cat [falai:429]"; see `MARKERS`.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from atelier_fakes import _common
from atelier_fakes._common import RecordedRequest, StoredFile
from atelier_fakes.images import CONTENT_TYPES, render_image

MARKERS: dict[str, str] = {
    "401": "submit answers 401, whatever the key",
    "locked": "submit answers 403 'User is locked. Reason: Exhausted balance'",
    "429": "submit answers 429 with `retry-after` (seconds)",
    "500": "submit answers 500",
    "422": "submit answers 422 with a FastAPI-style `detail[]` (bad image_size)",
    "content-policy": "runs, then the result is 422 with detail type content_policy_violation",
    "nsfw": "runs, then every image is black and flagged in `has_nsfw_concepts`",
    "model-error": "runs, then the result is the model's 500 `{detail}`",
    "empty": "runs, then the result has `images: []`",
    "garbage-image": "the media URL serves HTML instead of an image",
    "expired-url": "the media URL has already expired (GET → 410)",
    "result-expired": "the result is gone by the time it is fetched (GET → 404)",
    "status-502": "the first status poll answers 502 (a hiccup of fal's edge)",
    "status-429": "the first status poll answers 429 with `retry-after`",
    "lost": "status polls answer 404: fal no longer knows the request",
    "status-unknown": "status polls answer 202 with a status fal does not document (WARMING_UP)",
}
_MARKER_RE = re.compile(r"\[falai:([a-z0-9\-]+)\]")
_PRESET_SIZES = {
    "square_hd": (1024, 1024),
    "square": (512, 512),
    "portrait_4_3": (768, 1024),
    "portrait_16_9": (576, 1024),
    "landscape_4_3": (1024, 768),
    "landscape_16_9": (1024, 576),
}
_MAX_SIDE = 4096
_MAX_IMAGES = 4


@dataclass
class FalJob:
    request_id: str
    app: str  # owner/app, no subpath
    body: dict[str, Any]
    markers: frozenset[str]
    created_at: float
    queue_s: float
    run_s: float
    queue_position: int
    cancelled: bool = False
    status_polls: int = 0
    result: dict[str, Any] | None = None

    def status(self, now: float) -> str:
        if self.cancelled or now >= self.completed_at:
            return "COMPLETED"
        return "IN_QUEUE" if now < self.created_at + self.queue_s else "IN_PROGRESS"

    @property
    def completed_at(self) -> float:
        return self.created_at + self.queue_s + self.run_s


@dataclass
class FakeFalState(_common.FakeState):
    api_key: str = "fal-fake-key-id:fake-secret-0000"
    queue_s: float = 0.2  # time a request spends IN_QUEUE
    run_s: float = 0.2  # then IN_PROGRESS
    queue_position: int = 3  # the position a new request starts at; it falls to 0
    result_ttl_s: float = 360.0  # fal keeps results of 10 KB or more for 6 minutes
    url_ttl_s: float = 3600.0
    retry_after_s: float = 2.0
    # The HTTP status of every status answer: fal may answer 202 while a request waits, and its
    # own client keeps polling on any 2xx.
    status_http_code: int = 200
    downloads: list[RecordedRequest] = field(default_factory=list)
    jobs: dict[str, FalJob] = field(default_factory=dict)
    files: dict[str, StoredFile] = field(default_factory=dict)

    @property
    def submissions(self) -> list[RecordedRequest]:
        return [recorded for recorded in self.requests if recorded.method == "POST"]

        self.files.clear()


def create_falai_fake(state: FakeFalState | None = None) -> FastAPI:
    """The fake as an ASGI app; serve it with `run_fake_in_thread` or uvicorn."""
    state = state or FakeFalState()
    app = FastAPI(title="Fake fal.ai queue API", docs_url=None, redoc_url=None)
    app.state.fake = state

    _common.serve_files(app, state.files, state.downloads)

    @app.get("/{app_path:path}/requests/{request_id}/status")
    async def get_status(app_path: str, request_id: str, request: Request) -> Response:
        state.requests.append(_common.record(request))
        if (denied := _check_auth(request, state)) is not None:
            return denied
        job = _job_for(state, app_path, request_id)
        if job is None or "lost" in job.markers:
            return _detail(404, f"Request {request_id} not found")
        job.status_polls += 1
        if job.status_polls == 1 and "status-502" in job.markers:
            return Response("<html><h1>502 Bad Gateway</h1></html>", 502, media_type="text/html")
        if job.status_polls == 1 and "status-429" in job.markers:
            return _detail(429, "Too many requests", {"retry-after": "0.1"})
        if "status-unknown" in job.markers:
            return JSONResponse({"status": "WARMING_UP", "request_id": request_id}, 202)
        return JSONResponse(
            _status_body(job, str(request.base_url), time.time()), state.status_http_code
        )

    @app.get("/{app_path:path}/requests/{request_id}")
    async def get_result(app_path: str, request_id: str, request: Request) -> Response:
        state.requests.append(_common.record(request))
        if (denied := _check_auth(request, state)) is not None:
            return denied
        job = _job_for(state, app_path, request_id)
        now = time.time()
        if job is None or "result-expired" in job.markers:
            return _detail(404, f"Request {request_id} not found")
        if job.cancelled:
            return _detail(400, "Request was cancelled by the user before it started")
        if job.status(now) != "COMPLETED":
            return _detail(400, "Request is still in progress")
        if now >= job.completed_at + state.result_ttl_s:
            return _detail(404, f"Request {request_id} not found")
        return await _result(job, state, request)

    @app.put("/{app_path:path}/requests/{request_id}/cancel")
    async def cancel(app_path: str, request_id: str, request: Request) -> Response:
        state.requests.append(_common.record(request))
        if (denied := _check_auth(request, state)) is not None:
            return denied
        job = _job_for(state, app_path, request_id)
        if job is None:
            return _detail(404, f"Request {request_id} not found")
        if job.cancelled or job.status(time.time()) != "COMPLETED":
            job.cancelled = True
            return JSONResponse({"status": "CANCELLATION_REQUESTED"}, status_code=202)
        return JSONResponse({"status": "ALREADY_COMPLETED"}, status_code=400)

    @app.post("/{model_path:path}")
    async def submit(model_path: str, request: Request) -> Response:
        body = await _common.json_body(request)
        state.requests.append(_common.record(request, body))
        if (denied := _check_auth(request, state)) is not None:
            return denied
        segments = [part for part in model_path.split("/") if part]
        if len(segments) < 2:
            return _detail(404, f"Application '{model_path}' not found")
        if not isinstance(body, dict):
            return _common.unprocessable("body", "Input should be a valid dictionary", "dict_type")
        prompt = body.get("prompt")
        markers = frozenset(_MARKER_RE.findall(prompt)) if isinstance(prompt, str) else frozenset()
        if (scripted := _scripted_submit(markers, state)) is not None:
            return scripted
        if (invalid := _validate_input(body)) is not None:
            return invalid
        job = FalJob(
            request_id=str(uuid.uuid4()),
            app="/".join(segments[:2]),
            body=body,
            markers=markers,
            created_at=time.time(),
            queue_s=state.queue_s,
            run_s=state.run_s,
            queue_position=state.queue_position,
        )
        state.jobs[job.request_id] = job
        base = str(request.base_url).rstrip("/")
        urls = _urls(base, job)
        return JSONResponse(
            {
                "request_id": job.request_id,
                "gateway_request_id": job.request_id,
                **urls,
                "queue_position": job.queue_position,
            }
        )

    return app


def _check_auth(request: Request, state: FakeFalState) -> Response | None:
    header = request.headers.get("authorization", "")
    if header != f"Key {state.api_key}":
        return _detail(
            401,
            "Cannot access application. Authentication is required to access this application.",
        )
    return None


def _job_for(state: FakeFalState, app_path: str, request_id: str) -> FalJob | None:
    job = state.jobs.get(request_id)
    # fal's URLs name the app without its subpath; anything else is a different resource.
    if job is None or app_path.strip("/") != job.app:
        return None
    return job


def _urls(base: str, job: FalJob) -> dict[str, str]:
    root = f"{base}/{job.app}/requests/{job.request_id}"
    return {"status_url": f"{root}/status", "response_url": root, "cancel_url": f"{root}/cancel"}


def _status_body(job: FalJob, base_url: str, now: float) -> dict[str, Any]:
    status = job.status(now)
    body: dict[str, Any] = {"status": status, "request_id": job.request_id}
    body.update(_urls(base_url.rstrip("/"), job))
    if status == "IN_QUEUE":
        elapsed = (now - job.created_at) / job.queue_s if job.queue_s > 0 else 1.0
        body["queue_position"] = max(0, round(job.queue_position * (1 - elapsed)))
    elif status == "IN_PROGRESS":
        body["logs"] = [{"message": "Generating...", "level": "INFO", "source": "user"}]
    else:
        body["logs"] = []
        body["metrics"] = {"inference_time": job.run_s}
    return body


def _scripted_submit(markers: frozenset[str], state: FakeFalState) -> Response | None:
    if "401" in markers:
        return _detail(401, "Invalid Key Authorization header format")
    if "locked" in markers:
        return _detail(403, "User is locked. Reason: Exhausted balance. Top up your balance.")
    if "429" in markers:
        return _detail(429, "Rate limit exceeded", {"retry-after": f"{state.retry_after_s:g}"})
    if "500" in markers:
        return _detail(500, "Internal Server Error")
    if "422" in markers:
        return _common.unprocessable(
            "image_size", "Input should be 'square_hd', 'square', ... or an object", "enum"
        )
    return None


def _validate_input(body: dict[str, Any]) -> Response | None:
    """The checks a fal FLUX app makes (unknown fields are ignored, as pydantic does there)."""
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        return _common.unprocessable("prompt", "Field required", "missing")
    num_images = body.get("num_images", 1)
    if isinstance(num_images, bool) or not isinstance(num_images, int):
        return _common.unprocessable("num_images", "Input should be a valid integer", "int_type")
    if not 1 <= num_images <= _MAX_IMAGES:
        return _common.unprocessable(
            "num_images", f"Input should be less than or equal to {_MAX_IMAGES}", "less_than_equal"
        )
    if _dimensions(body) is None:
        return _common.unprocessable(
            "image_size", "Input should be a preset name or {width, height} up to 4096", "enum"
        )
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        return _common.unprocessable("seed", "Input should be a valid integer", "int_type")
    for key in ("image_urls", "image_url"):
        value = body.get(key)
        urls = value if isinstance(value, list) else [value] if value is not None else []
        for url in urls:
            if not isinstance(url, str) or not url.startswith(("data:image/", "http")):
                return _common.unprocessable(
                    key, "Input should be a valid URL or data URI", "url_parsing"
                )
    return None


def _dimensions(body: dict[str, Any]) -> tuple[int, int] | None:
    size = body.get("image_size", "landscape_4_3")
    if isinstance(size, str):
        return _PRESET_SIZES.get(size)
    if isinstance(size, dict):
        width, height = size.get("width"), size.get("height")
        if (
            isinstance(width, int)
            and isinstance(height, int)
            and 0 < width <= _MAX_SIDE
            and 0 < height <= _MAX_SIDE
        ):
            return width, height
    return None


async def _result(job: FalJob, state: FakeFalState, request: Request) -> Response:
    markers = job.markers
    if "content-policy" in markers:
        return JSONResponse(
            {
                "detail": [
                    {
                        "loc": ["body", "prompt"],
                        "msg": "The content could not be processed because it contained "
                        "material flagged by a content checker.",
                        "type": "content_policy_violation",
                        "url": "https://docs.fal.ai/errors#content_policy_violation",
                    }
                ]
            },
            status_code=422,
            headers={"x-fal-retryable": "false"},
        )
    if "model-error" in markers:
        return _detail(500, "Model crashed: CUDA error: an illegal memory access was encountered")
    if job.result is None:
        job.result = await _render_result(job, state, request)
    return JSONResponse(job.result)


async def _render_result(job: FalJob, state: FakeFalState, request: Request) -> dict[str, Any]:
    body, markers = job.body, job.markers
    seed = body.get("seed")
    seed = seed if isinstance(seed, int) else random.randint(0, 2**31 - 1)
    count = 0 if "empty" in markers else body.get("num_images", 1)
    width, height = _dimensions(body) or (1024, 768)
    output_format = "png" if body.get("output_format") == "png" else "jpeg"
    nsfw = "nsfw" in markers
    prompt = str(body["prompt"])
    rendered = await asyncio.to_thread(
        lambda: [
            render_image("" if nsfw else f"{prompt}#{seed}#{i}", width, height, output_format)
            for i in range(count)
        ]
    )
    expires_at = time.time() + (-1.0 if "expired-url" in markers else state.url_ttl_s)
    images = []
    for data in rendered:
        if "garbage-image" in markers:
            data = b"<html><body>Access denied</body></html>"
        url = _common.store_file(
            state.files, str(request.base_url), data, CONTENT_TYPES[output_format], expires_at
        )
        images.append(
            {
                "url": url,
                "width": width,
                "height": height,
                "content_type": CONTENT_TYPES[output_format],
            }
        )
    return {
        "images": images,
        "seed": seed,
        "has_nsfw_concepts": [nsfw] * len(images),
        "prompt": prompt,
        "timings": {"inference": job.run_s},
    }


def _detail(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status, headers=headers)


def add_cli(fakes: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`python -m atelier_fakes falai ...`"""
    _common.add_fake_parser(
        fakes,
        "falai",
        help="fake fal.ai queue API (POST /{owner}/{app}, status, result, cancel)",
        description="Fake fal.ai queue API: IN_QUEUE → IN_PROGRESS → COMPLETED, expiring "
        "results and media URLs.",
        markers=MARKERS,
        state=FakeFalState,
        serve=create_falai_fake,
        url_suffix="",
        flags={
            "api_key": ("--api-key", "`Key` to accept"),
            "queue_s": ("--queue", "seconds queued"),
            "run_s": ("--run", "seconds running"),
            "result_ttl_s": ("--result-ttl", "seconds results live"),
            "status_http_code": ("--status-code", "HTTP status of status answers (e.g. 202)"),
            "url_ttl_s": _common.URL_TTL,
        },
    )
