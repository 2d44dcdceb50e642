"""A fake Stability AI v2beta Stable Image API: `POST /v2beta/stable-image/generate/{endpoint}`.

Like the real one (providers.md A.4) it takes only `multipart/form-data`, refuses fields an
endpoint does not know, answers raw bytes for `Accept: image/*` (outcome in the `finish-reason`
and `seed` headers) or `{image, finish_reason, seed}` for `Accept: application/json`, and sends
a *blurred image with HTTP 200* and `finish-reason: CONTENT_FILTERED` when its output filter
trips. Errors are `{"id", "name", "errors": [...]}`. Failures are scripted by prompt markers
such as "a cat [stability:content-filtered]"; see `MARKERS`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import random
import re
import uuid
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from PIL import Image, ImageFilter, UnidentifiedImageError
from starlette.datastructures import UploadFile

from atelier_fakes import _common
from atelier_fakes.images import CONTENT_TYPES, render_image

MARKERS: dict[str, str] = {
    "content-filtered": "200 with a blurred image and `finish-reason: CONTENT_FILTERED`",
    "403-moderation": "403 name content_moderation (the prompt was flagged)",
    "401-echo-key": "401 whose message echoes the caller's key (a leaky proxy)",
    "402": "402 payment_required (out of credits)",
    "413": "413 payload_too_large",
    "422": "422 invalid_prompt",
    "429": "429 rate_limit_exceeded without a Retry-After header",
    "429-retry-after": "429 rate_limit_exceeded with `retry-after` (seconds)",
    "500": "500 internal_error",
    "garbage-image": "200 image/png whose bytes are not an image",
    "hang": _common.HANG_MARKER,
}
_MARKER_RE = re.compile(r"\[stability:([a-z0-9\-]+)\]")

ASPECT_SIZES: dict[str, tuple[int, int]] = {
    "1:1": (1024, 1024),
    "16:9": (1344, 768),
    "21:9": (1536, 640),
    "2:3": (832, 1216),
    "3:2": (1216, 832),
    "4:5": (896, 1088),
    "5:4": (1088, 896),
    "9:16": (768, 1344),
    "9:21": (640, 1536),
}
STYLE_PRESETS = frozenset(
    {
        "3d-model",
        "analog-film",
        "anime",
        "cinematic",
        "comic-book",
        "digital-art",
        "enhance",
        "fantasy-art",
        "isometric",
        "line-art",
        "low-poly",
        "modeling-compound",
        "neon-punk",
        "origami",
        "photographic",
        "pixel-art",
        "tile-texture",
    }
)
SD3_MODELS = frozenset({"sd3.5-large", "sd3.5-large-turbo", "sd3.5-medium"})
MAX_SEED = 4_294_967_294
_COMMON = frozenset({"prompt", "negative_prompt", "aspect_ratio", "seed", "output_format"})
FIELDS: dict[str, frozenset[str]] = {
    "core": _COMMON | {"style_preset"},
    "ultra": _COMMON | {"image", "strength"},
    "sd3": _COMMON | {"model", "mode", "image", "strength", "cfg_scale"},
}


@dataclass
class FakeStabilityState(_common.FakeState):
    api_key: str = "sk-fake-stability-key-000000000000"
    hang_s: float = 60.0
    delay_s: float = 0.0
    retry_after_s: float = 2.0
    # Each request as its form fields (text values; files as `(filename, content_type, size)`).


class _Reject(Exception):
    def __init__(
        self, status: int, name: str, errors: list[str], headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(name)
        self.status, self.name, self.errors = status, name, errors
        self.headers = headers or {}


def create_stability_fake(state: FakeStabilityState | None = None) -> FastAPI:
    """The fake as an ASGI app; serve it with `run_fake_in_thread` or uvicorn."""
    state = state or FakeStabilityState()
    app = FastAPI(title="Fake Stability AI API", docs_url=None, redoc_url=None)
    app.state.fake = state

    @app.post("/v2beta/stable-image/generate/{endpoint}")
    async def generate(endpoint: str, request: Request) -> Response:
        request_id = uuid.uuid4().hex
        recorded = _common.record(request)
        state.requests.append(recorded)
        try:
            if endpoint not in FIELDS:
                raise _Reject(404, "not_found", [f"endpoint {endpoint!r} does not exist"])
            key = _check_auth(request.headers.get("authorization"), state.api_key)
            if not request.headers.get("content-type", "").startswith("multipart/form-data"):
                raise _Reject(400, "bad_request", ["content-type: must be multipart/form-data"])
            text, files = await _form(request)
            recorded.body = {**text, **{k: (f[0], f[1], len(f[2])) for k, f in files.items()}}
            _validate(endpoint, text, files)
            if state.delay_s > 0:
                await asyncio.sleep(state.delay_s)
            return await _answer(request, endpoint, text, files, state, key, request_id)
        except _Reject as reject:
            body = {"id": request_id, "name": reject.name, "errors": reject.errors}
            return JSONResponse(body, status_code=reject.status, headers=reject.headers)

    return app


def _check_auth(header: str | None, api_key: str) -> str:
    if not header or not header.startswith("Bearer ") or not header[7:].strip():
        raise _Reject(401, "unauthorized", ["authorization: missing"])
    given = header[7:].strip()
    if given != api_key:
        raise _Reject(401, "unauthorized", ["authorization: invalid API key"])
    return given


async def _form(request: Request) -> tuple[dict[str, str], dict[str, tuple[str, str, bytes]]]:
    form = await request.form()
    text: dict[str, str] = {}
    files: dict[str, tuple[str, str, bytes]] = {}
    for name, value in form.multi_items():
        if isinstance(value, UploadFile):
            files[name] = (value.filename or "", value.content_type or "", await value.read())
        else:
            text[name] = value
    return text, files


def _validate(
    endpoint: str, text: dict[str, str], files: dict[str, tuple[str, str, bytes]]
) -> None:
    allowed = FIELDS[endpoint]
    for name in [*text, *files]:
        if name not in allowed:
            raise _Reject(400, "bad_request", [f"{name}: unknown field for {endpoint}"])
    if "image" in text:
        raise _Reject(400, "bad_request", ["image: must be a file"])
    prompt = text.get("prompt", "")
    if not 1 <= len(prompt) <= 10_000:
        raise _Reject(400, "bad_request", ["prompt: must be 1 to 10000 characters"])
    if len(text.get("negative_prompt", "")) > 10_000:
        raise _Reject(400, "bad_request", ["negative_prompt: at most 10000 characters"])
    if "aspect_ratio" in text and text["aspect_ratio"] not in ASPECT_SIZES:
        raise _Reject(
            400, "bad_request", [f"aspect_ratio: must be one of {', '.join(ASPECT_SIZES)}"]
        )
    if "seed" in text and not _int_in(text["seed"], 0, MAX_SEED):
        raise _Reject(400, "bad_request", [f"seed: must be an integer 0..{MAX_SEED}"])
    if text.get("output_format", "png") not in CONTENT_TYPES:
        raise _Reject(400, "bad_request", ["output_format: must be png, jpeg or webp"])
    if "style_preset" in text and text["style_preset"] not in STYLE_PRESETS:
        raise _Reject(400, "bad_request", ["style_preset: unknown preset"])
    if "model" in text and text["model"] not in SD3_MODELS:
        raise _Reject(
            400, "bad_request", [f"model: must be one of {', '.join(sorted(SD3_MODELS))}"]
        )
    image = files.get("image")
    mode = text.get("mode", "text-to-image")
    if mode not in ("text-to-image", "image-to-image"):
        raise _Reject(400, "bad_request", ["mode: must be text-to-image or image-to-image"])
    if endpoint == "sd3" and (mode == "image-to-image") != (image is not None):
        raise _Reject(400, "bad_request", ["image: required exactly when mode is image-to-image"])
    if image is not None:
        _image_size(image[2])
        if "strength" not in text or not _float_in(text["strength"], 0.0, 1.0):
            raise _Reject(400, "bad_request", ["strength: required with image, 0 to 1"])
        if "aspect_ratio" in text:
            raise _Reject(400, "bad_request", ["aspect_ratio: only valid for text-to-image"])
    elif "strength" in text:
        raise _Reject(400, "bad_request", ["strength: only valid with an image"])


def _image_size(data: bytes) -> tuple[int, int]:
    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.size
    except (UnidentifiedImageError, OSError):
        raise _Reject(400, "bad_request", ["image: not a valid image"]) from None


def _int_in(raw: str, low: int, high: int) -> bool:
    try:
        return low <= int(raw) <= high
    except ValueError:
        return False


def _float_in(raw: str, low: float, high: float) -> bool:
    try:
        return low <= float(raw) <= high
    except ValueError:
        return False


async def _answer(
    request: Request,
    endpoint: str,
    text: dict[str, str],
    files: dict[str, tuple[str, str, bytes]],
    state: FakeStabilityState,
    key: str,
    request_id: str,
) -> Response:
    prompt = text["prompt"]
    filtered = False
    for marker in _MARKER_RE.findall(prompt):
        if marker == "hang":
            await _common.hang(request, state.hang_s)
        elif marker == "content-filtered":
            filtered = True
        elif marker == "garbage-image":
            return Response(b"<html>no</html>", media_type="image/png")
        else:
            raise _scripted_rejection(marker, state, key)
    output_format = text.get("output_format", "png")
    if "image" in files:
        width, height = _image_size(files["image"][2])
    else:
        width, height = ASPECT_SIZES[text.get("aspect_ratio", "1:1")]
    seed = int(text.get("seed", "0")) or random.randint(1, MAX_SEED)
    image = await asyncio.to_thread(
        _render, f"{endpoint}:{prompt}:{seed}", width, height, output_format, filtered
    )
    finish_reason = "CONTENT_FILTERED" if filtered else "SUCCESS"
    if request.headers.get("accept", "image/*").startswith("application/json"):
        return JSONResponse(
            {
                "image": base64.b64encode(image).decode("ascii"),
                "finish_reason": finish_reason,
                "seed": seed,
            },
            headers={"x-request-id": request_id},
        )
    return Response(
        image,
        media_type=CONTENT_TYPES[output_format],
        headers={"finish-reason": finish_reason, "seed": str(seed), "x-request-id": request_id},
    )


def _render(text: str, width: int, height: int, output_format: str, blurred: bool) -> bytes:
    data = render_image(text, width, height, output_format)
    if not blurred:
        return data
    with Image.open(io.BytesIO(data)) as img:
        out = io.BytesIO()
        img.filter(ImageFilter.GaussianBlur(32)).save(out, format=img.format)
        return out.getvalue()


def _scripted_rejection(marker: str, state: FakeStabilityState, key: str) -> _Reject:
    if marker == "403-moderation":
        return _Reject(
            403,
            "content_moderation",
            [
                "Your request was flagged by our content moderation system, as a result your "
                "request was denied and you were not charged."
            ],
        )
    if marker == "401-echo-key":
        return _Reject(401, "unauthorized", [f"authorization: invalid key {key}"])
    if marker == "402":
        return _Reject(
            402, "payment_required", ["You lack sufficient credits to make this request."]
        )
    if marker == "413":
        return _Reject(413, "payload_too_large", ["body: payloads cannot be larger than 10MiB"])
    if marker == "422":
        return _Reject(422, "invalid_prompt", ["prompt: English is the only supported language"])
    if marker in ("429", "429-retry-after"):
        headers = {"retry-after": f"{state.retry_after_s:g}"} if marker != "429" else {}
        return _Reject(
            429,
            "rate_limit_exceeded",
            ["You have exceeded the rate limit of 150 requests within a 10 second period."],
            headers,
        )
    if marker == "500":
        return _Reject(500, "internal_error", ["An unexpected server error has occurred."])
    return _Reject(400, "bad_request", [f"fake Stability: unknown marker [stability:{marker}]"])


def add_cli(fakes: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`python -m atelier_fakes stability ...`"""
    _common.add_fake_parser(
        fakes,
        "stability",
        help="fake Stability AI (POST /v2beta/stable-image/generate/{core,ultra,sd3})",
        description="Fake Stability AI v2beta Stable Image endpoints (multipart in).",
        markers=MARKERS,
        state=FakeStabilityState,
        serve=create_stability_fake,
        url_suffix="/v2beta",
        flags={"api_key": _common.API_KEY, "delay_s": _common.DELAY, "hang_s": _common.HANG},
    )
