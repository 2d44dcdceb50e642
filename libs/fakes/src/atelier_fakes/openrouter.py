"""A fake OpenRouter: chat completions with image output, and the images API.

`POST /api/v1/chat/completions` answers `choices[0].message.images[]` with data URLs;
`POST /api/v1/images` answers `{created, data: [{b64_json}], usage}` (providers.md A.2).
Errors are `{"error": {code, message, metadata?}}`, and, as on the real service, an error that
happens after generation started comes back as an HTTP 200 with the error in the body. Unknown
request fields are refused so the adapter cannot drift from the documented shape. Failures are
scripted by prompt markers such as "a cat [openrouter:200-error]"; see `MARKERS`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from atelier_fakes import _common
from atelier_fakes._common import RecordedRequest, StoredFile
from atelier_fakes.gemini import SIZES_1K, TIERS
from atelier_fakes.images import render_image

MARKERS: dict[str, str] = {
    "200-error": "chat: 200 whose choice has finish_reason error and an `error` object (502)",
    "200-error-top": "200 whose body is a top-level `error` object (429 from upstream)",
    "empty": "200 with `images: []` and an apology in `content`",
    "text-only": "chat: 200 with text and no `images` key",
    "content-filter": "chat: 200, finish_reason content_filter / native IMAGE_SAFETY, no image",
    "url-result": "200 whose image is an http URL to download (not a data URL)",
    "expired-url": "200 whose image URL has already expired (GET → 410)",
    "garbage-image": "200 whose data URL is not an image",
    "400": "400 invalid request",
    "401": "401 no auth credentials",
    "401-echo-key": "401 whose message echoes the caller's key (a leaky proxy)",
    "402": "402 insufficient credits",
    "403": "403 input flagged by moderation (metadata.reasons)",
    "408": "408 request timeout",
    "429": "429 with `retry-after` (seconds)",
    "429-reset": "429 with only metadata.headers X-RateLimit-Reset (epoch ms)",
    "500": "500 internal error",
    "502": "502 provider returned error (model down)",
    "503": "503 no provider meets your routing requirements",
    "524": "524 upstream timed out (Cloudflare)",
    "529": "529 provider overloaded",
    "hang": _common.HANG_MARKER,
}
_MARKER_RE = re.compile(r"\[openrouter:([a-z0-9\-]+)\]")
_IMAGE_ONLY_PREFIXES = ("black-forest-labs/", "sourceful/")
# Upstreams that can return several images per images-API call; the rest reject n > 1.
_MULTI_IMAGE_PREFIXES = ("openai/", "bytedance-seed/")
_CHAT_FIELDS = frozenset(
    {"model", "messages", "modalities", "image_config", "provider", "stream", "seed", "usage"}
)
_IMAGES_FIELDS = frozenset(
    {
        "model",
        "prompt",
        "n",
        "aspect_ratio",
        "resolution",
        "size",
        "quality",
        "background",
        "output_format",
        "output_compression",
        "seed",
        "input_references",
        "provider",
        "stream",
    }
)
_DATA_URL_RE = re.compile(r"^data:image/[\w.+-]+;base64,(.+)$", re.S)


@dataclass
class FakeOpenRouterState(_common.FakeState):
    api_key: str = "sk-or-v1-fake-openrouter-key-0000"
    hang_s: float = 60.0
    delay_s: float = 0.0
    retry_after_s: float = 2.0
    reset_in_s: float = 5.0  # how far ahead [openrouter:429-reset] puts X-RateLimit-Reset
    url_ttl_s: float = 600.0
    downloads: list[RecordedRequest] = field(default_factory=list)
    files: dict[str, StoredFile] = field(default_factory=dict)


class _Reject(Exception):
    def __init__(
        self,
        code: int,
        message: str,
        *,
        metadata: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code, self.message = code, message
        self.metadata = metadata
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.metadata is not None:
            error["metadata"] = self.metadata
        return {"error": error}


def create_openrouter_fake(state: FakeOpenRouterState | None = None) -> FastAPI:
    """The fake as an ASGI app; serve it with `run_fake_in_thread` or uvicorn."""
    state = state or FakeOpenRouterState()
    app = FastAPI(title="Fake OpenRouter API", docs_url=None, redoc_url=None)
    app.state.fake = state

    @app.post("/api/v1/chat/completions")
    async def chat(request: Request) -> Response:
        return await _handle(request, state, _chat)

    @app.post("/api/v1/images")
    async def images(request: Request) -> Response:
        return await _handle(request, state, _images)

    _common.serve_files(app, state.files, state.downloads, missing="Not found")
    return app


async def _handle(request: Request, state: FakeOpenRouterState, answer: Any) -> Response:
    body = await _common.json_body(request)
    state.requests.append(_common.record(request, body))
    try:
        given = _check_auth(request.headers.get("authorization"), state.api_key)
        if not isinstance(body, dict):
            raise _Reject(400, "Invalid JSON body")
        if state.delay_s > 0:
            await asyncio.sleep(state.delay_s)
        response: Response = await answer(request, body, state, given)
        return response
    except _Reject as reject:
        return JSONResponse(reject.body(), status_code=reject.code, headers=reject.headers)


def _check_auth(header: str | None, api_key: str) -> str:
    if not header or not header.startswith("Bearer ") or not header[7:].strip():
        raise _Reject(401, "No auth credentials found")
    given = header[7:].strip()
    if given != api_key:
        raise _Reject(401, "User not found.")
    return given


async def _chat(
    request: Request, body: dict[str, Any], state: FakeOpenRouterState, key: str
) -> Response:
    _check_fields(body, _CHAT_FIELDS)
    model = _model_of(body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _Reject(400, "messages: Expected an array with at least one message")
    prompt, references = _chat_prompt(messages)
    modalities = body.get("modalities") or ["text"]
    if model.startswith(_IMAGE_ONLY_PREFIXES) and "text" in modalities:
        raise _Reject(
            404,
            "No endpoints found that support the requested output modalities: "
            + ", ".join(modalities),
        )
    image_config = body.get("image_config") or {}
    ratio, tier = _ratio_tier(image_config.get("aspect_ratio"), image_config.get("image_size"))
    markers = _MARKER_RE.findall(prompt)
    await _common.hang_or_raise(
        request, markers, state.hang_s, lambda marker: _raise_for_marker(marker, model, state, key)
    )
    if "200-error" in markers:
        return _chat_answer(
            model,
            None,
            finish="error",
            native="error",
            error={
                "code": 502,
                "message": "Provider disconnected while generating",
                "metadata": {"provider_name": "Google"},
            },
        )
    if "200-error-top" in markers:
        return _top_level_error_200()
    if "content-filter" in markers:
        return _chat_answer(model, [], finish="content_filter", native="IMAGE_SAFETY")
    if "text-only" in markers or "image" not in modalities:
        return _chat_answer(model, None, content=f"I would draw: {prompt}")
    if "empty" in markers:
        return _chat_answer(model, [], content="Sorry, I can't make that image.")
    url = await _image_url(request, state, prompt, ratio, tier, markers)
    images = [{"type": "image_url", "image_url": {"url": url}, "index": 0}]
    text = "" if "text" not in modalities else f"Here is your image ({references} refs)."
    return _chat_answer(model, images, content=text)


async def _images(
    request: Request, body: dict[str, Any], state: FakeOpenRouterState, key: str
) -> Response:
    _check_fields(body, _IMAGES_FIELDS)
    model = _model_of(body)
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        raise _Reject(400, "prompt: Required")
    n = body.get("n", 1)
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 10:
        raise _Reject(400, "n: Number must be between 1 and 10")
    if n > 1 and not model.startswith(_MULTI_IMAGE_PREFIXES):
        raise _Reject(400, f"{model} returns a single image per request; n must be 1")
    seed = body.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise _Reject(400, "seed: Expected integer")
    for reference in body.get("input_references") or []:
        url = reference.get("image_url", {}).get("url") if isinstance(reference, dict) else None
        if reference.get("type") != "image_url" or not isinstance(url, str):
            raise _Reject(400, "input_references: Expected {type: image_url, image_url: {url}}")
        _decode_data_url(url)
    ratio, tier = _ratio_tier(body.get("aspect_ratio"), body.get("resolution"))
    markers = _MARKER_RE.findall(prompt)
    await _common.hang_or_raise(
        request, markers, state.hang_s, lambda marker: _raise_for_marker(marker, model, state, key)
    )
    if "200-error-top" in markers:
        return _top_level_error_200()
    if "empty" in markers:
        return JSONResponse({"created": int(time.time()), "data": [], "usage": {}})
    data = []
    for index in range(n):
        url = await _image_url(request, state, f"{prompt}#{index}", ratio, tier, markers)
        match = _DATA_URL_RE.match(url)
        data.append({"b64_json": match.group(1)} if match else {"url": url})
    usage = {"prompt_tokens": 12, "completion_tokens": 1290 * n, "cost": 0.04 * n}
    return JSONResponse({"created": int(time.time()), "data": data, "usage": usage})


def _check_fields(body: dict[str, Any], known: frozenset[str]) -> None:
    for key in body:
        if key not in known:
            raise _Reject(400, f"Unrecognized key in body: '{key}'")


def _model_of(body: dict[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or "/" not in model:
        raise _Reject(400, f"{model!r} is not a valid model ID")
    return model


def _chat_prompt(messages: list[Any]) -> tuple[str, int]:
    """The user's text and the number of reference images, validating each content part."""
    texts: list[str] = []
    references = 0
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            texts.append(content)
            continue
        if not isinstance(content, list):
            raise _Reject(400, "messages: content must be a string or an array of parts")
        for part in content:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text" and isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif kind == "image_url" and isinstance(part.get("image_url"), dict):
                url = part["image_url"].get("url")
                if not isinstance(url, str):
                    raise _Reject(400, "image_url.url: Required")
                if url.startswith("data:"):
                    _decode_data_url(url)
                references += 1
            else:
                raise _Reject(400, f"messages: unsupported content part {kind!r}")
    return " ".join(texts), references


def _decode_data_url(url: str) -> bytes:
    match = _DATA_URL_RE.match(url)
    if match is None:
        raise _Reject(400, "image_url: expected a data:image/...;base64 URL")
    try:
        return base64.b64decode(match.group(1), validate=True)
    except (binascii.Error, ValueError):
        raise _Reject(400, "image_url: invalid base64 data") from None


def _ratio_tier(ratio: Any, tier: Any) -> tuple[str, str]:
    ratio = ratio or "1:1"
    tier = tier or "1K"
    if ratio not in SIZES_1K and ratio != "auto":
        raise _Reject(400, f"aspect_ratio: Invalid option {ratio!r}")
    if tier not in TIERS:
        raise _Reject(400, f"image_size: Invalid option {tier!r}; expected 1K, 2K or 4K")
    return ("1:1" if ratio == "auto" else ratio), tier


async def _image_url(
    request: Request,
    state: FakeOpenRouterState,
    prompt: str,
    ratio: str,
    tier: str,
    markers: list[str],
) -> str:
    width, height = (side * TIERS[tier] for side in SIZES_1K[ratio])
    if "garbage-image" in markers:
        return "data:image/png;base64," + base64.b64encode(b"<html>no</html>").decode()
    image = await asyncio.to_thread(render_image, prompt, width, height)
    if "url-result" in markers or "expired-url" in markers:
        expires_at = time.time() + (-1.0 if "expired-url" in markers else state.url_ttl_s)
        return _common.store_file(
            state.files, str(request.base_url), image, "image/png", expires_at
        )
    return "data:image/png;base64," + base64.b64encode(image).decode("ascii")


def _chat_answer(
    model: str,
    images: list[dict[str, Any]] | None,
    *,
    content: str = "",
    finish: str = "stop",
    native: str = "STOP",
    error: dict[str, Any] | None = None,
) -> JSONResponse:
    message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
    if images is not None:
        message["images"] = images
    choice: dict[str, Any] = {
        "logprobs": None,
        "finish_reason": finish,
        "native_finish_reason": native,
        "index": 0,
        "message": message,
    }
    if error is not None:
        choice["error"] = error
    return JSONResponse(
        {
            "id": f"gen-{uuid.uuid4().hex[:20]}",
            "provider": "Google",
            "model": model,
            "object": "chat.completion",
            "created": int(time.time()),
            "choices": [choice],
            "usage": {"prompt_tokens": 12, "completion_tokens": 1290, "total_tokens": 1302},
        }
    )


def _top_level_error_200() -> JSONResponse:
    return JSONResponse(
        {
            "error": {
                "code": 429,
                "message": "Provider returned error: upstream rate limited",
                "metadata": {"provider_name": "Google", "raw": "RESOURCE_EXHAUSTED"},
            }
        },
        status_code=200,
    )


def _raise_for_marker(marker: str, model: str, state: FakeOpenRouterState, key: str) -> None:
    """Raise the HTTP error a marker scripts; 200-shaped markers are left to the caller."""
    if marker in (
        "200-error",
        "200-error-top",
        "empty",
        "text-only",
        "content-filter",
        "url-result",
        "expired-url",
        "garbage-image",
    ):
        return
    provider = {"provider_name": "Google", "raw": "upstream error"}
    rejections: dict[str, _Reject] = {
        "400": _Reject(400, "Invalid request: image_config.aspect_ratio not supported"),
        "401": _Reject(401, "No auth credentials found"),
        "401-echo-key": _Reject(401, f"Invalid key {key} for this account"),
        "402": _Reject(402, "Insufficient credits. Add more using https://openrouter.ai/credits"),
        "403": _Reject(
            403,
            f'{model} requires moderation on Google. Your input was flagged for "violence".',
            metadata={
                "reasons": ["violence"],
                "flagged_input": "...",
                "provider_name": "Google",
                "model_slug": model,
            },
        ),
        "408": _Reject(408, "Request timed out"),
        "429": _Reject(
            429,
            "Rate limit exceeded: free-models-per-min.",
            headers={"retry-after": f"{state.retry_after_s:g}"},
        ),
        "429-reset": _Reject(
            429,
            "Rate limit exceeded: free-models-per-min.",
            metadata={
                "headers": {
                    "X-RateLimit-Limit": "20",
                    "X-RateLimit-Remaining": "0",
                    "X-RateLimit-Reset": str(int((time.time() + state.reset_in_s) * 1000)),
                }
            },
        ),
        "500": _Reject(500, "Internal Server Error"),
        "502": _Reject(502, "Provider returned error", metadata=provider),
        "503": _Reject(503, "No endpoints found that can handle the requested parameters."),
        "524": _Reject(524, "Provider timed out", metadata=provider),
        "529": _Reject(529, "Provider is overloaded", metadata=provider),
    }
    raise rejections.get(marker) or _Reject(400, f"fake OpenRouter: unknown marker {marker!r}")


def add_cli(fakes: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`python -m atelier_fakes openrouter ...`"""
    _common.add_fake_parser(
        fakes,
        "openrouter",
        help="fake OpenRouter (POST /api/v1/chat/completions and /api/v1/images)",
        description="Fake OpenRouter chat completions (image modalities) and images API.",
        markers=MARKERS,
        state=FakeOpenRouterState,
        serve=create_openrouter_fake,
        url_suffix="/api/v1",
        flags={"api_key": _common.API_KEY, "delay_s": _common.DELAY, "hang_s": _common.HANG},
    )
