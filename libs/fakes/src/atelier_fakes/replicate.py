"""A fake Replicate predictions API: create (with `Prefer: wait`), get, cancel, delivery URLs.

It follows providers.md A.7: predictions move `starting` → `processing` → `succeeded` (or
`failed`/`canceled`/`aborted`) on configurable timings; `Prefer: wait=N` holds the create call
until the prediction settles or N seconds pass; polls answer `poll_http_code` (200, or any other
2xx a client must take as an answer); errors are RFC 7807 problems
(`application/problem+json`); outputs are URLs that expire after `url_ttl_s`. Logs carry
"Using seed: N" and tqdm-style percentages, as FLUX models print them. Failures are scripted by
markers in the prompt, e.g. "a cat [replicate:429]"; see `MARKERS`.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from atelier_fakes import _common
from atelier_fakes._common import RecordedRequest, StoredFile
from atelier_fakes.images import CONTENT_TYPES, render_image

MARKERS: dict[str, str] = {
    "401": "create answers 401 Unauthenticated, whatever the token",
    "402": "create answers 402: the account has run out of credit",
    "404": "create answers 404: no such model or version",
    "422": "create answers 422: input failed the model's schema",
    "sensitive": "create answers 422 'flagged as sensitive (E005)': the prompt was refused",
    "429": "create answers 429 with `Retry-After`",
    "500": "create answers 500",
    "failed": "the prediction fails with a model error (CUDA out of memory)",
    "nsfw": "the prediction fails after running: 'NSFW content detected'",
    "empty": "the prediction succeeds with `output: null`",
    "expired-url": "the output URL has already expired (GET → 404)",
    "garbage-image": "the output URL serves HTML instead of an image",
    "poll-502": "the first poll answers 502 (a hiccup)",
    "lost": "polls answer 404: Replicate no longer knows the prediction",
    "poll-unknown": "polls answer 202 with a status Replicate does not document (`warming`)",
    "aborted": "the prediction is `aborted`: its deadline passed before the model started",
}
_MARKER_RE = re.compile(r"\[replicate:([a-z0-9\-]+)\]")
_ASPECT_RATIOS = {
    "1:1": (1024, 1024),
    "16:9": (1344, 768),
    "21:9": (1536, 640),
    "3:2": (1216, 832),
    "2:3": (832, 1216),
    "4:5": (896, 1088),
    "5:4": (1088, 896),
    "3:4": (896, 1152),
    "4:3": (1152, 896),
    "9:16": (768, 1344),
    "9:21": (640, 1536),
}
_STEPS = 4


@dataclass
class Prediction:
    id: str
    model: str
    version: str
    input: dict[str, Any]
    markers: frozenset[str]
    created_at: float
    boot_s: float
    run_s: float
    seed: int
    canceled_at: float | None = None
    polls: int = 0
    output: Any = None

    def status(self, now: float) -> str:
        if self.canceled_at is not None:
            return "canceled"
        if now < self.created_at + self.boot_s:
            return "starting"
        if "aborted" in self.markers:
            return "aborted"
        if now < self.completed_at:
            return "processing"
        return "failed" if self.markers & {"failed", "nsfw"} else "succeeded"

    @property
    def completed_at(self) -> float:
        return self.created_at + self.boot_s + self.run_s


@dataclass
class FakeReplicateState(_common.FakeState):
    api_token: str = "r8_fake_token_0000000000000000"
    boot_s: float = 0.1  # `starting`
    run_s: float = 0.2  # then `processing`
    max_wait_s: float = 60.0  # the most `Prefer: wait` holds a call
    url_ttl_s: float = 3600.0
    retry_after_s: float = 3.0
    # The HTTP status of every poll's answer (any 2xx is an answer to a client).
    poll_http_code: int = 200
    downloads: list[RecordedRequest] = field(default_factory=list)
    predictions: dict[str, Prediction] = field(default_factory=dict)
    files: dict[str, StoredFile] = field(default_factory=dict)

    @property
    def submissions(self) -> list[RecordedRequest]:
        """Prediction creations (cancels are POSTs too, but not submissions)."""
        return [
            recorded
            for recorded in self.requests
            if recorded.method == "POST" and recorded.path.endswith("/predictions")
        ]

        self.files.clear()


def create_replicate_fake(state: FakeReplicateState | None = None) -> FastAPI:
    """The fake as an ASGI app; serve it with `run_fake_in_thread` or uvicorn."""
    state = state or FakeReplicateState()
    app = FastAPI(title="Fake Replicate API", docs_url=None, redoc_url=None)
    app.state.fake = state

    async def create(request: Request, model: str, version: str | None) -> Response:
        body = await _common.json_body(request)
        state.requests.append(_common.record(request, body))
        if (denied := _check_auth(request, state)) is not None:
            return denied
        if not isinstance(body, dict) or not isinstance(body.get("input"), dict):
            return _problem(422, "Input validation failed", "input is required")
        if version is None and model == "":
            version = body.get("version")
            if not isinstance(version, str) or not version:
                return _problem(422, "Invalid version", "version is required")
        inputs = body["input"]
        prompt = inputs.get("prompt")
        markers = frozenset(_MARKER_RE.findall(prompt)) if isinstance(prompt, str) else frozenset()
        if (scripted := _scripted_create(markers, state)) is not None:
            return scripted
        if (invalid := _validate_input(inputs)) is not None:
            return invalid
        seed = inputs.get("seed")
        prediction = Prediction(
            id=uuid.uuid4().hex[:26],
            model=model or "owner/versioned-model",
            version=version or "dp-" + uuid.uuid4().hex[:20],
            input=inputs,
            markers=markers,
            created_at=time.time(),
            boot_s=state.boot_s,
            run_s=state.run_s,
            seed=seed if isinstance(seed, int) else random.randint(0, 2**31 - 1),
        )
        state.predictions[prediction.id] = prediction
        wait_s = _prefer_wait(request.headers.get("prefer"), state.max_wait_s)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and prediction.status(time.time()) in (
            "starting",
            "processing",
        ):
            if await request.is_disconnected():
                break
            await asyncio.sleep(0.02)
        return JSONResponse(await _view(prediction, state, request), status_code=201)

    @app.post("/v1/models/{owner}/{name}/predictions")
    async def create_for_model(owner: str, name: str, request: Request) -> Response:
        return await create(request, f"{owner}/{name}", None)

    @app.post("/v1/predictions")
    async def create_for_version(request: Request) -> Response:
        return await create(request, "", None)

    @app.get("/v1/predictions/{prediction_id}")
    async def get_prediction(prediction_id: str, request: Request) -> Response:
        state.requests.append(_common.record(request))
        if (denied := _check_auth(request, state)) is not None:
            return denied
        prediction = state.predictions.get(prediction_id)
        if prediction is None or "lost" in prediction.markers:
            return _problem(404, "Not found", "The requested resource could not be found.")
        prediction.polls += 1
        if prediction.polls == 1 and "poll-502" in prediction.markers:
            return Response("<html><h1>502 Bad Gateway</h1></html>", 502, media_type="text/html")
        if "poll-unknown" in prediction.markers:
            return JSONResponse({"id": prediction.id, "status": "warming"}, 202)
        return JSONResponse(await _view(prediction, state, request), state.poll_http_code)

    @app.post("/v1/predictions/{prediction_id}/cancel")
    async def cancel(prediction_id: str, request: Request) -> Response:
        state.requests.append(_common.record(request))
        if (denied := _check_auth(request, state)) is not None:
            return denied
        prediction = state.predictions.get(prediction_id)
        if prediction is None:
            return _problem(404, "Not found", "The requested resource could not be found.")
        if prediction.status(time.time()) in ("starting", "processing"):
            prediction.canceled_at = time.time()
        return JSONResponse(await _view(prediction, state, request))

    # Replicate's delivery URLs answer an expired file like a missing one.
    _common.serve_files(app, state.files, state.downloads, expired="Not Found", expired_status=404)

    return app


def _check_auth(request: Request, state: FakeReplicateState) -> Response | None:
    if request.headers.get("authorization") != f"Bearer {state.api_token}":
        return _problem(401, "Unauthenticated", "You did not pass a valid authentication token")
    return None


def _prefer_wait(header: str | None, max_wait_s: float) -> float:
    if not header:
        return 0.0
    match = re.search(r"\bwait(?:=(\d+))?", header)
    if match is None:
        return 0.0
    return min(float(match.group(1)) if match.group(1) else max_wait_s, max_wait_s)


def _scripted_create(markers: frozenset[str], state: FakeReplicateState) -> Response | None:
    if "401" in markers:
        return _problem(401, "Unauthenticated", "You did not pass a valid authentication token")
    if "402" in markers:
        return _problem(
            402,
            "Insufficient credit",
            "You have insufficient credit to run this model. Go to "
            "https://replicate.com/account/billing#billing to purchase credit.",
        )
    if "404" in markers:
        return _problem(404, "Not found", "The requested model or version could not be found.")
    if "422" in markers:
        return _problem(422, "Input validation failed", "- input.num_outputs: Must be <= 4")
    if "sensitive" in markers:
        return _problem(
            422,
            "Input validation failed",
            "The input or output was flagged as sensitive. Please try again with different "
            "inputs. (E005)",
        )
    if "429" in markers:
        return _problem(
            429,
            "Request was throttled",
            "Request was throttled. Your rate limit resets in ~3s.",
            {"retry-after": f"{state.retry_after_s:g}"},
        )
    if "500" in markers:
        return _problem(500, "Internal server error", "Something went wrong on our end.")
    return None


def _validate_input(inputs: dict[str, Any]) -> Response | None:
    """The checks an official FLUX model's schema makes (unknown inputs are ignored)."""
    problems: list[str] = []
    if not isinstance(inputs.get("prompt"), str) or not inputs["prompt"]:
        problems.append("- input: prompt is required")
    ratio = inputs.get("aspect_ratio")
    if ratio is not None and ratio not in _ASPECT_RATIOS:
        allowed = ", ".join(f'"{r}"' for r in _ASPECT_RATIOS)
        problems.append(f"- input.aspect_ratio: aspect_ratio must be one of: {allowed}")
    for key in ("width", "height", "seed", "num_outputs"):
        value = inputs.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            problems.append(f"- input.{key}: Invalid type. Expected: integer")
    num_outputs = inputs.get("num_outputs", 1)
    if isinstance(num_outputs, int) and not 1 <= num_outputs <= 4:
        problems.append("- input.num_outputs: Must be between 1 and 4")
    for key in ("input_images", "image_input"):
        value = inputs.get(key)
        if value is not None and not (
            isinstance(value, list) and all(isinstance(v, str) and v for v in value)
        ):
            problems.append(f"- input.{key}: Invalid type. Expected: array of URIs")
    if problems:
        return _problem(422, "Input validation failed", "\n".join(problems))
    return None


async def _view(
    prediction: Prediction, state: FakeReplicateState, request: Request
) -> dict[str, Any]:
    """The prediction object as Replicate shows it at this moment."""
    now = time.time()
    status = prediction.status(now)
    base = str(request.base_url).rstrip("/")
    started = prediction.created_at + prediction.boot_s
    aborted = status == "aborted"  # never started
    view: dict[str, Any] = {
        "id": prediction.id,
        "model": prediction.model,
        "version": prediction.version,
        "input": prediction.input,
        "logs": "" if aborted else _logs(prediction, now),
        "output": None,
        "data_removed": False,
        "error": None,
        "status": status,
        "created_at": _iso(prediction.created_at),
        "started_at": _iso(started) if now >= started and not aborted else None,
        "completed_at": None,
        "urls": {
            "get": f"{base}/v1/predictions/{prediction.id}",
            "cancel": f"{base}/v1/predictions/{prediction.id}/cancel",
            "stream": f"{base}/v1/predictions/{prediction.id}/stream",
            "web": f"https://replicate.com/p/{prediction.id}",
        },
        "metrics": {},
    }
    if status == "canceled":
        view["completed_at"] = _iso(prediction.canceled_at or now)
    elif aborted:
        view["completed_at"] = _iso(started)
    elif status in ("succeeded", "failed"):
        view["completed_at"] = _iso(prediction.completed_at)
        view["metrics"] = {"predict_time": prediction.run_s, "total_time": prediction.run_s}
    if status == "failed":
        view["error"] = (
            "NSFW content detected. Try running it again, or try a different prompt."
            if "nsfw" in prediction.markers
            else "CUDA out of memory. Tried to allocate 2.00 GiB"
        )
    if status == "succeeded":
        if prediction.output is None and "empty" not in prediction.markers:
            prediction.output = await _render_output(prediction, state, base)
        view["output"] = prediction.output
    return view


def _logs(prediction: Prediction, now: float) -> str:
    started = prediction.created_at + prediction.boot_s
    if now < started:
        return ""
    done = min(1.0, (now - started) / prediction.run_s) if prediction.run_s > 0 else 1.0
    if prediction.canceled_at is not None:
        done = min(done, max(0.0, (prediction.canceled_at - started) / (prediction.run_s or 1)))
    lines = [f"Using seed: {prediction.seed}"]
    for step in range(int(done * _STEPS) + 1):
        percent = step * 100 // _STEPS
        lines.append(f"{percent:3d}%|{'█' * (percent // 10):<10}| {step}/{_STEPS}")
    return "\n".join(lines)


async def _render_output(prediction: Prediction, state: FakeReplicateState, base: str) -> list[str]:
    inputs, markers = prediction.input, prediction.markers
    if isinstance(inputs.get("width"), int) and isinstance(inputs.get("height"), int):
        width, height = inputs["width"], inputs["height"]
    else:
        width, height = _ASPECT_RATIOS.get(str(inputs.get("aspect_ratio", "1:1")), (1024, 1024))
    output_format = inputs.get("output_format", "webp")
    output_format = output_format if output_format in CONTENT_TYPES else "webp"
    count = inputs.get("num_outputs", 1)
    prompt = str(inputs.get("prompt"))
    rendered = await asyncio.to_thread(
        lambda: [
            render_image(f"{prompt}#{prediction.seed}#{i}", width, height, output_format)
            for i in range(count)
        ]
    )
    expires_at = time.time() + (-1.0 if "expired-url" in markers else state.url_ttl_s)
    urls = []
    for data in rendered:
        if "garbage-image" in markers:
            data = b"<html><body>Access denied</body></html>"
        urls.append(
            _common.store_file(state.files, base, data, CONTENT_TYPES[output_format], expires_at)
        )
    return urls


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat().replace("+00:00", "Z")


def _problem(
    status: int, title: str, detail: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"type": "about:blank", "title": title, "status": status, "detail": detail},
        status_code=status,
        headers=headers,
        media_type="application/problem+json",
    )


def add_cli(fakes: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`python -m atelier_fakes replicate ...`"""
    _common.add_fake_parser(
        fakes,
        "replicate",
        help="fake Replicate predictions API (create with Prefer: wait, get, cancel)",
        description="Fake Replicate API on /v1: starting → processing → succeeded/failed, "
        "RFC 7807 errors, expiring output URLs.",
        markers=MARKERS,
        state=FakeReplicateState,
        serve=create_replicate_fake,
        url_suffix="/v1",
        flags={
            "api_token": ("--api-token", "bearer token to accept"),
            "boot_s": ("--boot", "seconds `starting`"),
            "run_s": ("--run", "seconds `processing`"),
            "poll_http_code": ("--poll-code", "HTTP status of poll answers (e.g. 202)"),
            "url_ttl_s": _common.URL_TTL,
        },
    )
