"""A fake Gemini API (`POST /v1beta/models/{model}:generateContent`) for image models.

It answers like the Gemini Developer API (providers.md A.3): inline image parts on success,
safety outcomes as HTTP 200 (`promptFeedback.blockReason`, candidate `finishReason`s, text-only
answers), and `{"error": {code, message, status, details}}` with Google's `RetryInfo` and
`QuotaFailure` details on failure. Unknown fields are refused as Google's JSON parser refuses
them. Failures are scripted by prompt markers such as "a cat [gemini:image-safety]"; see
`MARKERS`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import re
import uuid
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from atelier_fakes import _common
from atelier_fakes.images import render_image

MARKERS: dict[str, str] = {
    "block-prompt": "200 with promptFeedback.blockReason PROHIBITED_CONTENT and no candidates",
    "image-safety": "200, candidate finishReason IMAGE_SAFETY and no image",
    "image-prohibited": "200, candidate finishReason IMAGE_PROHIBITED_CONTENT and no image",
    "recitation": "200, candidate finishReason IMAGE_RECITATION and no image",
    "no-image": "200, candidate finishReason NO_IMAGE",
    "image-other": "200, candidate finishReason IMAGE_OTHER",
    "text-only": "200, finishReason STOP with a text part and no image",
    "thought-image": "success, with an interim `thought: true` image before the final one",
    "429": "429 RESOURCE_EXHAUSTED with RetryInfo retryDelay (`retry_delay_s`)",
    "429-daily": "429 RESOURCE_EXHAUSTED for a per-day quota (QuotaFailure ...PerDay...)",
    "400": "400 INVALID_ARGUMENT",
    "403": "403 PERMISSION_DENIED",
    "401-echo-key": "400 API_KEY_INVALID whose message echoes the caller's key (a leaky proxy)",
    "500": "500 INTERNAL",
    "503": "503 UNAVAILABLE (model overloaded)",
    "504": "504 DEADLINE_EXCEEDED",
    "garbage-image": "200 whose inlineData is not an image",
    "hang": _common.HANG_MARKER,
}
_MARKER_RE = re.compile(r"\[gemini:([a-z0-9\-]+)\]")

# Gemini's output sizes at 1K; 2K and 4K are exactly twice and four times these.
SIZES_1K: dict[str, tuple[int, int]] = {
    "1:1": (1024, 1024),
    "2:3": (832, 1248),
    "3:2": (1248, 832),
    "3:4": (864, 1184),
    "4:3": (1184, 864),
    "4:5": (896, 1152),
    "5:4": (1152, 896),
    "9:16": (768, 1344),
    "16:9": (1344, 768),
    "21:9": (1536, 672),
}
TIERS = {"1K": 1, "2K": 2, "4K": 4}
_TOP_LEVEL = frozenset(
    {"contents", "generationConfig", "safetySettings", "systemInstruction", "tools"}
)
_GENERATION_CONFIG = frozenset(
    {"responseModalities", "imageConfig", "temperature", "topP", "topK", "candidateCount"}
)
_IMAGE_CONFIG = frozenset({"aspectRatio", "imageSize", "personGeneration"})
_ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"


@dataclass
class FakeGeminiState(_common.FakeState):
    api_key: str = "AIzaFakeGeminiKey-000000000000000000"
    hang_s: float = 60.0
    delay_s: float = 0.0  # added before every answer, to model generation time
    retry_delay_s: float = 2.0
    max_reference_images: int = 14


class _Reject(Exception):
    def __init__(
        self, code: int, status: str, message: str, details: list[dict[str, Any]] | None = None
    ) -> None:
        super().__init__(message)
        self.code, self.status, self.message = code, status, message
        self.details = details or []


def create_gemini_fake(state: FakeGeminiState | None = None) -> FastAPI:
    """The fake as an ASGI app; serve it with `run_fake_in_thread` or uvicorn."""
    state = state or FakeGeminiState()
    app = FastAPI(title="Fake Gemini API", docs_url=None, redoc_url=None)
    app.state.fake = state

    @app.post("/v1beta/models/{model_and_method}")
    async def generate_content(model_and_method: str, request: Request) -> Response:
        body = await _common.json_body(request)
        state.requests.append(_common.record(request, body))
        try:
            model, _, method = model_and_method.partition(":")
            if method != "generateContent":
                raise _Reject(404, "NOT_FOUND", f"Method {method!r} not found.")
            key = request.headers.get("x-goog-api-key") or request.query_params.get("key")
            _check_auth(key, state.api_key)
            checked = _validated(body, model, state)
            if state.delay_s > 0:
                await asyncio.sleep(state.delay_s)
            return await _answer(request, checked, model, state, key or "")
        except _Reject as reject:
            return _error(reject)

    return app


def _check_auth(key: str | None, expected: str) -> None:
    if not key:
        raise _Reject(
            403,
            "PERMISSION_DENIED",
            "Method doesn't allow unregistered callers (callers without established identity). "
            "Please use API Key or other form of API consumer identity to call this API.",
        )
    if key != expected:
        raise _bad_key("API key not valid. Please pass a valid API key.")


def _bad_key(message: str) -> _Reject:
    return _Reject(
        400,
        "INVALID_ARGUMENT",
        message,
        [
            {
                "@type": _ERROR_INFO,
                "reason": "API_KEY_INVALID",
                "domain": "googleapis.com",
                "metadata": {"service": "generativelanguage.googleapis.com"},
            }
        ],
    )


def _unknown(name: str, where: str) -> _Reject:
    return _Reject(
        400,
        "INVALID_ARGUMENT",
        f"Invalid JSON payload received. Unknown name \"{name}\" at '{where}': Cannot find field.",
    )


def _validated(body: Any, model: str, state: FakeGeminiState) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise _Reject(400, "INVALID_ARGUMENT", "Invalid JSON payload received.")
    for key in body:
        if key not in _TOP_LEVEL:
            raise _unknown(key, "")
    if "image" not in model:
        raise _Reject(
            400,
            "INVALID_ARGUMENT",
            "Model does not support the requested response modalities: image,text",
        )
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        raise _Reject(
            400, "INVALID_ARGUMENT", "* GenerateContentRequest.contents: contents is not specified"
        )
    images = 0
    for content in contents:
        parts = content.get("parts") if isinstance(content, dict) else None
        if not isinstance(parts, list) or not parts:
            raise _Reject(
                400,
                "INVALID_ARGUMENT",
                "* GenerateContentRequest.contents[0].parts: contents.parts must not be empty.",
            )
        for part in parts:
            inline = (
                part.get("inline_data") or part.get("inlineData")
                if isinstance(part, dict)
                else None
            )
            if inline is not None:
                _check_inline(inline)
                images += 1
            elif not (isinstance(part, dict) and isinstance(part.get("text"), str)):
                raise _Reject(
                    400,
                    "INVALID_ARGUMENT",
                    "Unable to submit request because it has an empty part.",
                )
    if images > state.max_reference_images:
        raise _Reject(
            400,
            "INVALID_ARGUMENT",
            f"Too many images: at most {state.max_reference_images} are supported.",
        )
    config = body.get("generationConfig") or {}
    if not isinstance(config, dict):
        raise _Reject(400, "INVALID_ARGUMENT", "Invalid value at 'generation_config'")
    for key in config:
        if key not in _GENERATION_CONFIG:
            raise _unknown(key, "generation_config")
    image_config = config.get("imageConfig") or {}
    for key in image_config:
        if key not in _IMAGE_CONFIG:
            raise _unknown(key, "generation_config.image_config")
    ratio = image_config.get("aspectRatio", "1:1")
    if ratio not in SIZES_1K:
        raise _Reject(400, "INVALID_ARGUMENT", f"Unsupported aspect ratio: {ratio}")
    tier = image_config.get("imageSize", "1K")
    if tier not in TIERS:
        raise _Reject(400, "INVALID_ARGUMENT", f"Unsupported image size: {tier}")
    return body


def _check_inline(inline: Any) -> None:
    if not isinstance(inline, dict):
        raise _Reject(400, "INVALID_ARGUMENT", "Invalid value at 'inline_data'")
    mime = inline.get("mime_type") or inline.get("mimeType")
    data = inline.get("data")
    if not isinstance(mime, str) or not mime.startswith("image/") or not isinstance(data, str):
        raise _Reject(400, "INVALID_ARGUMENT", "Unsupported MIME type or missing data.")
    try:
        base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise _Reject(
            400, "INVALID_ARGUMENT", "Invalid value at 'inline_data.data' (TYPE_BYTES)"
        ) from None


def _prompt_of(body: dict[str, Any]) -> str:
    return " ".join(
        part["text"]
        for content in body["contents"]
        for part in content.get("parts", [])
        if isinstance(part, dict) and isinstance(part.get("text"), str)
    )


async def _answer(
    request: Request, body: dict[str, Any], model: str, state: FakeGeminiState, key: str
) -> Response:
    prompt = _prompt_of(body)
    thought = False
    for marker in _MARKER_RE.findall(prompt):
        if marker == "hang":
            await _common.hang(request, state.hang_s)
        elif marker == "thought-image":
            thought = True
        else:
            return _scripted(marker, model, state, key)
    config = body.get("generationConfig") or {}
    modalities = config.get("responseModalities") or ["TEXT"]
    if "IMAGE" not in modalities:
        return _candidate_answer(model, [{"text": f"I would draw: {prompt}"}], "STOP")
    image_config = config.get("imageConfig") or {}
    ratio = image_config.get("aspectRatio", "1:1")
    tier = image_config.get("imageSize", "1K")
    width, height = (side * TIERS[tier] for side in SIZES_1K[ratio])
    parts: list[dict[str, Any]] = []
    if "TEXT" in modalities:
        parts.append({"text": "Here is the image you asked for."})
    if thought:
        draft = await asyncio.to_thread(render_image, f"draft {prompt}", 64, 64)
        parts.append({"inlineData": _inline(draft), "thought": True})
    image = await asyncio.to_thread(render_image, prompt, width, height)
    parts.append({"inlineData": _inline(image)})
    return _candidate_answer(model, parts, "STOP")


def _inline(data: bytes, mime: str = "image/png") -> dict[str, str]:
    return {"mimeType": mime, "data": base64.b64encode(data).decode("ascii")}


def _candidate_answer(
    model: str, parts: list[dict[str, Any]] | None, finish_reason: str
) -> JSONResponse:
    candidate: dict[str, Any] = {"finishReason": finish_reason, "index": 0}
    if parts is not None:
        candidate["content"] = {"role": "model", "parts": parts}
    return JSONResponse(
        {
            "candidates": [candidate],
            "usageMetadata": {
                "promptTokenCount": 12,
                "candidatesTokenCount": 1290 if parts else 0,
                "totalTokenCount": 1302 if parts else 12,
            },
            "modelVersion": model,
            "responseId": uuid.uuid4().hex[:22],
        }
    )


def _scripted(marker: str, model: str, state: FakeGeminiState, key: str) -> Response:
    finish = {
        "image-safety": "IMAGE_SAFETY",
        "image-prohibited": "IMAGE_PROHIBITED_CONTENT",
        "recitation": "IMAGE_RECITATION",
        "no-image": "NO_IMAGE",
        "image-other": "IMAGE_OTHER",
    }
    if marker in finish:
        return _candidate_answer(model, None, finish[marker])
    if marker == "block-prompt":
        return JSONResponse(
            {
                "promptFeedback": {"blockReason": "PROHIBITED_CONTENT"},
                "usageMetadata": {"promptTokenCount": 12, "totalTokenCount": 12},
                "modelVersion": model,
                "responseId": uuid.uuid4().hex[:22],
            }
        )
    if marker == "text-only":
        text = "I can't generate that image, but I can describe it: a quiet harbour at dawn."
        return _candidate_answer(model, [{"text": text}], "STOP")
    if marker == "garbage-image":
        return _candidate_answer(model, [{"inlineData": _inline(b"<html>nope</html>")}], "STOP")
    raise _scripted_rejection(marker, model, state, key)


def _scripted_rejection(marker: str, model: str, state: FakeGeminiState, key: str) -> _Reject:
    if marker in ("429", "429-daily"):
        per = "PerDay" if marker == "429-daily" else "PerMinute"
        return _Reject(
            429,
            "RESOURCE_EXHAUSTED",
            "You exceeded your current quota, please check your plan and billing details. "
            f"Please retry in {state.retry_delay_s:g}s.",
            [
                {
                    "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                    "violations": [
                        {
                            "quotaMetric": "generativelanguage.googleapis.com/"
                            "generate_content_free_tier_requests",
                            "quotaId": f"GenerateRequests{per}PerProjectPerModel-FreeTier",
                            "quotaDimensions": {"location": "global", "model": model},
                            "quotaValue": "10",
                        }
                    ],
                },
                {
                    "@type": "type.googleapis.com/google.rpc.Help",
                    "links": [{"description": "Learn more about Gemini API quotas"}],
                },
                {
                    "@type": "type.googleapis.com/google.rpc.RetryInfo",
                    "retryDelay": f"{state.retry_delay_s:g}s",
                },
            ],
        )
    if marker == "400":
        return _Reject(400, "INVALID_ARGUMENT", "Request contains an invalid argument.")
    if marker == "403":
        return _Reject(403, "PERMISSION_DENIED", "The caller does not have permission")
    if marker == "401-echo-key":
        return _bad_key(f"API key not valid: {key}. Please pass a valid API key.")
    if marker == "500":
        return _Reject(500, "INTERNAL", "An internal error has occurred.")
    if marker == "503":
        return _Reject(503, "UNAVAILABLE", "The model is overloaded. Please try again later.")
    if marker == "504":
        return _Reject(
            504, "DEADLINE_EXCEEDED", "Deadline expired before operation could complete."
        )
    return _Reject(400, "INVALID_ARGUMENT", f"fake Gemini: unknown marker [gemini:{marker}]")


def _error(reject: _Reject) -> JSONResponse:
    error: dict[str, Any] = {
        "code": reject.code,
        "message": reject.message,
        "status": reject.status,
    }
    if reject.details:
        error["details"] = reject.details
    return JSONResponse({"error": error}, status_code=reject.code)


def add_cli(fakes: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`python -m atelier_fakes gemini ...`"""
    _common.add_fake_parser(
        fakes,
        "gemini",
        help="fake Gemini API (POST /v1beta/models/{model}:generateContent)",
        description="Fake Gemini generateContent for image models, safety outcomes included.",
        markers=MARKERS,
        state=FakeGeminiState,
        serve=create_gemini_fake,
        url_suffix="/v1beta",
        flags={"api_key": _common.API_KEY, "delay_s": _common.DELAY, "hang_s": _common.HANG},
    )
