"""A fake OpenAI Images API that speaks the real wire format, failures included.

Bodies are validated against `CreateImageRequest` from OpenAI's own OpenAPI document (and
unknown parameters are refused, as the real API does), so a test passing against this fake
says the adapter sends what OpenAI accepts. `/v1/images/edits` (multipart, reference images as
`image[]`) is validated the same way against `CreateImageEditRequest`, and keeps every image it
received in `FakeOpenAIState.edits`. Failures are scripted by markers in the prompt,
e.g. "a cat [openai:429]"; see `MARKERS`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import logging
import re
import time
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from jsonschema import Draft202012Validator, ValidationError
from jsonschema.exceptions import best_match
from starlette.datastructures import FormData, UploadFile

from atelier_fakes import _common
from atelier_fakes._common import RecordedRequest, StoredFile
from atelier_fakes.images import CONTENT_TYPES, render_image

log = logging.getLogger(__name__)

# OpenAI's own OpenAPI document (cut to /images), kept with the fake so validation never depends
# on a checkout layout; shared/reference/ holds the original (ADR 0005).
DEFAULT_SPEC_PATH = Path(__file__).parent / "specs" / "openai-images-openapi.json"

MARKERS: dict[str, str] = {
    "401": "401 invalid_api_key, whatever the key",
    "401-echo-key": "401 whose message echoes the caller's full key (a leaky gateway)",
    "403": "403 organization must be verified",
    "429": "429 rate_limit_exceeded with `retry-after` (seconds)",
    "429-ms": "429 rate_limit_exceeded with `retry-after-ms` and `retry-after`",
    "insufficient-quota": "429 insufficient_quota",
    "500": "500 server_error",
    "503": "503 engine overloaded",
    "502-html": "502 with an HTML body, as a proxy in front would send",
    "moderation-input": "400 moderation_blocked, moderation_stage input",
    "moderation-output": "400 moderation_blocked, moderation_stage output",
    "content-policy": "400 content_policy_violation (DALL·E)",
    "bad-size": "400 invalid_value for param size",
    "empty": "200 with `data: []`",
    "garbage-image": "200 whose b64_json is not an image",
    "hang": _common.HANG_MARKER,
    "expired-url": "200 with a url that has already expired (GET → 410)",
}
_MARKER_RE = re.compile(r"\[openai:([a-z0-9\-]+)\]")

_GPT_IMAGE_SIZES = ("1024x1024", "1536x1024", "1024x1536", "auto")
_FIXED_SIZES = {
    "dall-e-2": ("256x256", "512x512", "1024x1024"),
    "dall-e-3": ("1024x1024", "1792x1024", "1024x1792"),
}
_PROMPT_LIMITS = {"dall-e-2": 1000, "dall-e-3": 4000}
_GPT_PROMPT_LIMIT = 32000
_SIZE_RE = re.compile(r"^(\d+)x(\d+)$")
# ImagesResponse only allows these values in its echo of size and quality.
_RESPONSE_SIZES = ("1024x1024", "1024x1536", "1536x1024")


@dataclass
class ReceivedImage:
    filename: str | None
    content_type: str | None
    data: bytes = field(repr=False)


@dataclass
class RecordedEdit:
    """One `POST /v1/images/edits`: its text fields (as sent) and the images it carried."""

    headers: dict[str, str]
    fields: dict[str, str]
    images: list[ReceivedImage]


@dataclass
class FakeOpenAIState(_common.FakeState):
    api_key: str = "sk-fake-openai-test-key-0000"
    spec_path: Path | None = DEFAULT_SPEC_PATH
    url_ttl_s: float = 3600.0  # DALL·E URLs live 60 minutes
    hang_s: float = 60.0
    retry_after_s: float = 2.0
    retry_after_ms: int = 1500
    downloads: list[RecordedRequest] = field(default_factory=list)  # GETs of result URLs
    files: dict[str, StoredFile] = field(default_factory=dict)
    edits: list[RecordedEdit] = field(default_factory=list)  # POSTs to /images/edits
    # How long each generation takes (a real one takes 10-60 s), and how many were being
    # answered at once: now and at most (what a provider's concurrency limit counts).
    generation_s: float = 0.0
    in_flight: int = 0
    peak_in_flight: int = 0


class _Reject(Exception):
    """An OpenAI-shaped error answer, raised from deep in validation."""

    def __init__(
        self,
        status: int,
        message: str,
        err_type: str = "invalid_request_error",
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error = {"message": message, "type": err_type, "param": param, "code": code}
        self.error.update(extra or {})
        self.headers = headers or {}


def create_openai_fake(state: FakeOpenAIState | None = None) -> FastAPI:
    """The fake as an ASGI app; serve it with `run_fake_in_thread` or uvicorn."""
    state = state or FakeOpenAIState()
    validator, known_params = load_request_schema(state.spec_path)
    edit_validator, edit_params = load_request_schema(state.spec_path, "CreateImageEditRequest")
    app = FastAPI(title="Fake OpenAI Images API", docs_url=None, redoc_url=None)
    app.state.fake = state

    @app.post("/v1/images/generations")
    async def create_image(request: Request) -> Response:
        request_id = f"req_{uuid.uuid4().hex}"
        body = await _common.json_body(request)
        state.requests.append(_common.record(request, body))
        state.in_flight += 1
        state.peak_in_flight = max(state.peak_in_flight, state.in_flight)
        try:
            _check_auth(request.headers.get("authorization"), state.api_key)
            checked = _validated(body, validator, known_params)
            if state.generation_s:
                await asyncio.sleep(state.generation_s)
            return await _answer(request, checked, state, request_id)
        except _Reject as reject:
            return _error_response(reject, request_id)
        finally:
            state.in_flight -= 1

    @app.post("/v1/images/edits")
    async def create_image_edit(request: Request) -> Response:
        request_id = f"req_{uuid.uuid4().hex}"
        try:
            if not request.headers.get("content-type", "").startswith("multipart/form-data"):
                # The JSON variant (images by URL or file id) is not served by this fake.
                raise _Reject(400, "The fake serves multipart/form-data edits only.")
            try:
                async with request.form(max_files=32, max_fields=64) as form:
                    fields, images = await _edit_form(form)
            except Exception as exc:  # malformed multipart
                raise _Reject(400, f"Could not parse multipart form: {exc}") from exc
            state.edits.append(RecordedEdit(dict(request.headers), fields, images))
            _check_auth(request.headers.get("authorization"), state.api_key)
            body = _validated(_edit_instance(fields, images), edit_validator, edit_params)
            _check_edit_images(str(body.get("model") or "dall-e-2"), images)
            return await _answer(request, body, state, request_id)
        except _Reject as reject:
            return _error_response(reject, request_id)

    _common.serve_files(
        app, state.files, state.downloads, missing="The specified blob does not exist."
    )
    return app


def load_request_schema(
    spec_path: Path | None, schema_name: str = "CreateImageRequest"
) -> tuple[Draft202012Validator | None, frozenset[str]]:
    """A validator for `schema_name` (`CreateImageRequest`, `CreateImageEditRequest`) and its
    property names, or `(None, ∅)` without the document (validation is then skipped, loudly)."""
    if spec_path is None or not spec_path.is_file():
        message = f"OpenAI OpenAPI document not found at {spec_path}; not validating bodies"
        warnings.warn(message, stacklevel=2)
        log.warning(message)
        return None, frozenset()
    document = json.loads(spec_path.read_text(encoding="utf-8"))
    components = _nullable_to_json_schema(document["components"])
    # Keep the components beside the root $ref so "#/components/..." pointers resolve.
    schema = {"$ref": f"#/components/schemas/{schema_name}", "components": components}
    validator = Draft202012Validator(schema)
    known = frozenset(components["schemas"][schema_name]["properties"])
    return validator, known


def _nullable_to_json_schema(node: Any) -> Any:
    """Rewrite OpenAPI's `nullable: true` (which this 3.1 document still uses, and JSON Schema
    ignores) into an explicit null alternative, so `"n": null` is accepted as OpenAI does."""
    if isinstance(node, list):
        return [_nullable_to_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _nullable_to_json_schema(value) for key, value in node.items()}
    if out.pop("nullable", False) is not True:
        return out
    if isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
        return out
    if isinstance(out.get("anyOf"), list):
        out["anyOf"] = [*out["anyOf"], {"type": "null"}]
        return out
    return {"anyOf": [out, {"type": "null"}]}


# Multipart sends every field as text; OpenAI reads these as numbers and booleans.
_EDIT_INTEGER_FIELDS = frozenset({"n", "output_compression", "partial_images"})
_EDIT_BOOLEAN_FIELDS = frozenset({"stream"})
_IMAGE_SIGNATURES = {
    b"\x89PNG\r\n\x1a\n": "png",
    b"\xff\xd8\xff": "jpeg",
}
_MAX_EDIT_IMAGE_BYTES = 50 * 1024 * 1024
_MAX_DALLE2_EDIT_BYTES = 4 * 1024 * 1024


async def _edit_form(form: FormData) -> tuple[dict[str, str], list[ReceivedImage]]:
    """Text fields, and the uploads under `image` / `image[]` (`mask` is kept as a field name)."""
    fields: dict[str, str] = {}
    images: list[ReceivedImage] = []
    for key, value in form.multi_items():
        if isinstance(value, UploadFile):
            if key in ("image", "image[]"):
                images.append(ReceivedImage(value.filename, value.content_type, await value.read()))
            else:
                fields[key] = "<binary>"
        else:
            fields[key] = value
    return fields, images


def _edit_instance(fields: dict[str, str], images: list[ReceivedImage]) -> dict[str, Any]:
    """The form as the JSON instance `CreateImageEditRequest` describes (files as placeholders)."""
    instance: dict[str, Any] = {}
    for key, value in fields.items():
        if key in _EDIT_INTEGER_FIELDS and value.lstrip("-").isdigit():
            instance[key] = int(value)
        elif key in _EDIT_BOOLEAN_FIELDS and value in ("true", "false"):
            instance[key] = value == "true"
        else:
            instance[key] = value
    if images:
        instance["image"] = ["<binary>"] * len(images) if len(images) > 1 else "<binary>"
    return instance


def _image_kind(data: bytes) -> str | None:
    for signature, kind in _IMAGE_SIGNATURES.items():
        if data.startswith(signature):
            return kind
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def _check_edit_images(model: str, images: list[ReceivedImage]) -> None:
    """The per-model input rules of `/images/edits` (file types, sizes, counts)."""
    if model == "dall-e-3":
        raise _Reject(
            400,
            "Invalid model dall-e-3. The model must be one of the GPT image models or dall-e-2.",
            param="model",
            code="invalid_value",
        )
    for number, image in enumerate(images, start=1):
        kind = _image_kind(image.data)
        if kind is None:
            raise _Reject(
                400,
                f"Invalid file 'image' (number {number}): unsupported file. Supported file "
                "formats are 'image/jpeg', 'image/png', and 'image/webp'.",
                param="image",
                code="invalid_image_file",
            )
        limit = _MAX_DALLE2_EDIT_BYTES if model == "dall-e-2" else _MAX_EDIT_IMAGE_BYTES
        if len(image.data) > limit:
            raise _Reject(400, f"Image {number} is larger than allowed.", param="image")
        if model == "dall-e-2" and kind != "png":
            raise _Reject(400, "dall-e-2 edits take a PNG image.", param="image")
    if model == "dall-e-2" and len(images) != 1:
        raise _Reject(400, "dall-e-2 edits take exactly one image.", param="image")


def _check_auth(header: str | None, api_key: str) -> None:
    if not header or not header.startswith("Bearer ") or not header[7:].strip():
        raise _Reject(
            401,
            "You didn't provide an API key. You need to provide your API key in an "
            "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
        )
    given = header[7:].strip()
    if given != api_key:
        raise _Reject(401, _incorrect_key_message(_mask(given)), code="invalid_api_key")


def _incorrect_key_message(shown_key: str) -> str:
    return (
        f"Incorrect API key provided: {shown_key}. You can find your API key at "
        "https://platform.openai.com/account/api-keys."
    )


def _mask(key: str) -> str:
    # What OpenAI shows of a wrong key: a few characters at each end.
    return f"{key[:3]}{'*' * max(len(key) - 7, 3)}{key[-4:]}" if len(key) > 8 else "***"


def _validated(
    body: Any, validator: Draft202012Validator | None, known_params: frozenset[str]
) -> dict[str, Any]:
    """The body as a dict, or a `_Reject` worded like OpenAI's own 400s."""
    if not isinstance(body, dict):
        raise _Reject(
            400,
            "We could not parse the JSON body of your request. (HINT: This likely means you "
            "aren't using your HTTP library correctly. The OpenAI API expects a JSON payload.)",
        )
    if validator is None:
        return body
    for key in body:
        if key not in known_params:
            raise _Reject(400, f"Unknown parameter: '{key}'.", param=key, code="unknown_parameter")
    error = best_match(validator.iter_errors(body))
    if error is not None:
        raise _schema_rejection(error)
    return body


# JSON Schema keyword → OpenAI's error code and message for a value that breaks it.
_SCHEMA_ERRORS = {
    "minimum": (
        "integer_below_min_value",
        "Invalid '{param}': integer below minimum value. Expected a value >= {limit}, but got "
        "{value} instead.",
    ),
    "maximum": (
        "integer_above_max_value",
        "Invalid '{param}': integer above maximum value. Expected a value <= {limit}, but got "
        "{value} instead.",
    ),
    "enum": ("invalid_value", "Invalid value: {value!r}. Supported values are: {supported}."),
    "type": (
        "invalid_type",
        "Invalid type for '{param}': expected {limit}, but got {kind} instead.",
    ),
}


def _schema_rejection(error: ValidationError) -> _Reject:
    param = ".".join(str(part) for part in error.absolute_path) or None
    if error.validator == "required":
        missing = next(k for k in error.validator_value if k not in error.instance)
        return _Reject(
            400,
            f"Missing required parameter: '{missing}'.",
            param=missing,
            code="missing_required_parameter",
        )
    code, template = _SCHEMA_ERRORS.get(
        str(error.validator), ("invalid_value", "Invalid '{param}': {message}")
    )
    limit = error.validator_value
    message = template.format(
        param=param,
        value=error.instance,
        limit=limit,
        kind=type(error.instance).__name__,
        supported=", ".join(repr(v) for v in limit if v is not None)
        if error.validator == "enum"
        else "",
        message=error.message,
    )
    return _Reject(400, message, param=param, code=code)


async def _answer(
    request: Request, body: dict[str, Any], state: FakeOpenAIState, request_id: str
) -> Response:
    prompt = str(body.get("prompt", ""))
    model = body.get("model") or "dall-e-2"  # OpenAI's default when model is omitted
    expire_now = False
    for marker in _MARKER_RE.findall(prompt):
        if marker == "hang":
            await _common.hang(request, state.hang_s)
        elif marker == "expired-url":
            expire_now = True
        else:
            return _scripted(marker, body, model, state, request, request_id)
    _check_model_rules(body, model)
    return await _success(request, body, model, state, request_id, expire_now=expire_now)


def _scripted(
    marker: str,
    body: dict[str, Any],
    model: str,
    state: FakeOpenAIState,
    request: Request,
    request_id: str,
) -> Response:
    """The canned answer for one failure marker (`hang`/`expired-url` are handled apart)."""
    if marker == "empty":
        return _json(200, {"created": int(time.time()), "data": []}, request_id)
    if marker == "garbage-image":
        garbage = base64.b64encode(b"<html>definitely not a png</html>").decode()
        return _json(
            200, {"created": int(time.time()), "data": [{"b64_json": garbage}]}, request_id
        )
    if marker == "502-html":
        html = "<html><body><h1>502 Bad Gateway</h1></body></html>"
        return Response(html, 502, {"x-request-id": request_id}, media_type="text/html")
    raise _scripted_rejection(marker, body, model, state, request, request_id)


def _scripted_rejection(
    marker: str,
    body: dict[str, Any],
    model: str,
    state: FakeOpenAIState,
    request: Request,
    request_id: str,
) -> _Reject:
    retry_after = {"retry-after": f"{state.retry_after_s:g}"}
    if marker == "401":
        return _Reject(401, _incorrect_key_message("sk-****"), code="invalid_api_key")
    if marker == "401-echo-key":
        given = (request.headers.get("authorization") or "")[7:].strip()
        return _Reject(401, _incorrect_key_message(given), code="invalid_api_key")
    if marker == "403":
        return _Reject(
            403,
            f"Your organization must be verified to use the model `{model}`. Please go to: "
            "https://platform.openai.com/settings/organization/general and click on Verify "
            "Organization.",
        )
    if marker in ("429", "429-ms"):
        headers = dict(retry_after)
        if marker == "429-ms":
            headers["retry-after-ms"] = str(state.retry_after_ms)
        return _Reject(
            429,
            f"Rate limit reached for {model} in organization org-fake on images per minute "
            "(IPM): Limit 5, Used 5, Requested 1. Please try again in a moment.",
            "requests",
            code="rate_limit_exceeded",
            headers=headers,
        )
    if marker == "insufficient-quota":
        return _Reject(
            429,
            "You exceeded your current quota, please check your plan and billing details.",
            "insufficient_quota",
            code="insufficient_quota",
        )
    if marker == "500":
        return _Reject(
            500,
            "The server had an error while processing your request. Sorry about that!",
            "server_error",
        )
    if marker == "503":
        return _Reject(
            503, "The engine is currently overloaded, please try again later.", "server_error"
        )
    if marker in ("moderation-input", "moderation-output"):
        stage = marker.removeprefix("moderation-")
        return _Reject(
            400,
            "Your request was rejected by the safety system. If you believe this is an error, "
            f"contact us at help.openai.com and include the request ID {request_id}.",
            "image_generation_user_error",
            code="moderation_blocked",
            extra={"moderation_details": {"moderation_stage": stage, "categories": ["violence"]}},
        )
    if marker == "content-policy":
        return _Reject(
            400,
            "Your request was rejected as a result of our safety system. Your prompt may contain "
            "text that is not allowed by our safety system.",
            code="content_policy_violation",
        )
    if marker == "bad-size":
        return _size_rejection(str(body.get("size")), _FIXED_SIZES.get(model, _GPT_IMAGE_SIZES))
    return _Reject(400, f"fake OpenAI: unknown marker [openai:{marker}]; see MARKERS")


def _check_model_rules(body: dict[str, Any], model: str) -> None:
    """Per-model rules the schema cannot express (providers.md A.1)."""
    gpt_image = model.startswith(("gpt-image", "chatgpt-image"))
    if gpt_image and body.get("response_format") is not None:
        raise _Reject(
            400,
            "Unknown parameter: 'response_format'.",
            param="response_format",
            code="unknown_parameter",
        )
    if model == "dall-e-3" and (body.get("n") or 1) != 1:
        raise _Reject(400, "You must provide n=1 for this model.", param="n")
    prompt = str(body.get("prompt", ""))
    limit = _PROMPT_LIMITS.get(model, _GPT_PROMPT_LIMIT)
    if len(prompt) > limit:
        raise _Reject(
            400,
            f"Invalid 'prompt': string too long. Expected a string with maximum length {limit}, "
            f"but got a string with length {len(prompt)} instead.",
            param="prompt",
            code="string_above_max_length",
        )
    size = _size_of(body, model)
    if not _size_allowed(model, size):
        raise _size_rejection(size, _FIXED_SIZES.get(model, _GPT_IMAGE_SIZES))


def _size_of(body: dict[str, Any], model: str) -> str:
    size = body.get("size")
    if size:
        return str(size)
    # Omitted: DALL·E models make 1024x1024; GPT-image models choose for themselves.
    return "1024x1024" if model in _FIXED_SIZES else "auto"


def _size_allowed(model: str, size: str) -> bool:
    if model in _FIXED_SIZES:
        return size in _FIXED_SIZES[model]
    if size == "auto":
        return True
    match = _SIZE_RE.match(size)
    if match is None:
        return False
    width, height = int(match.group(1)), int(match.group(2))
    if model.startswith("gpt-image-2"):
        # Free-form: sides divisible by 16, aspect within 1:3..3:1, at most 3840x2160.
        return (
            width % 16 == 0
            and height % 16 == 0
            and max(width, height) <= 3 * min(width, height)
            and max(width, height) <= 3840
            and width * height <= 3840 * 2160
        )
    if model.startswith(("gpt-image", "chatgpt-image")):
        return size in _GPT_IMAGE_SIZES
    return 0 < width <= 4096 and 0 < height <= 4096  # an unknown model behind a gateway


def _size_rejection(size: str, supported: tuple[str, ...]) -> _Reject:
    listed = ", ".join(f"'{value}'" for value in supported)
    return _Reject(
        400,
        f"Invalid value: '{size}'. Supported values are: {listed}.",
        param="size",
        code="invalid_value",
    )


async def _success(
    request: Request,
    body: dict[str, Any],
    model: str,
    state: FakeOpenAIState,
    request_id: str,
    *,
    expire_now: bool,
) -> Response:
    n = body.get("n") or 1
    size = _size_of(body, model)
    width, height = _dimensions(size)
    gpt_image = model.startswith(("gpt-image", "chatgpt-image"))
    output_format = (body.get("output_format") or "png") if gpt_image else "png"
    transparent = gpt_image and body.get("background") == "transparent"
    wants_url = expire_now or (
        not gpt_image and (body.get("response_format") or _default_format(model)) == "url"
    )
    prompt = str(body["prompt"])
    images = await asyncio.to_thread(
        lambda: [
            render_image(f"{prompt}#{i}", width, height, output_format, transparent=transparent)
            for i in range(n)
        ]
    )
    data = []
    for image in images:
        item: dict[str, Any] = {}
        if wants_url:
            expires_at = time.time() + (-1.0 if expire_now else state.url_ttl_s)
            item["url"] = _common.store_file(
                state.files,
                str(request.base_url),
                image,
                CONTENT_TYPES[output_format],
                expires_at,
            )
        else:
            item["b64_json"] = base64.b64encode(image).decode("ascii")
        if model == "dall-e-3":
            item["revised_prompt"] = f"A richly detailed illustration of: {prompt}"
        data.append(item)
    answer: dict[str, Any] = {"created": int(time.time()), "data": data}
    if gpt_image:
        answer.update(_gpt_image_extras(body, prompt, n, width, height, output_format))
    return _json(200, answer, request_id)


def _dimensions(size: str) -> tuple[int, int]:
    if size == "auto":
        return 1024, 1024  # what GPT-image models pick for a plain prompt
    width, height = size.split("x")
    return int(width), int(height)


def _default_format(model: str) -> str:
    # DALL·E defaults to url; a gateway serving some other model is assumed to return base64.
    return "url" if model in _FIXED_SIZES else "b64_json"


def _gpt_image_extras(
    body: dict[str, Any], prompt: str, n: int, width: int, height: int, output_format: str
) -> dict[str, Any]:
    """The echo of settings and token usage GPT-image models add to ImagesResponse."""
    quality = body.get("quality")
    size = f"{width}x{height}"
    text_tokens = len(prompt) // 4 + 1
    output_tokens = n * max(1, width * height // 1000)
    extras: dict[str, Any] = {
        "background": "transparent" if body.get("background") == "transparent" else "opaque",
        "output_format": output_format,
        "quality": quality if quality in ("low", "medium", "high") else "medium",
        "usage": {
            "input_tokens": text_tokens,
            "input_tokens_details": {"text_tokens": text_tokens, "image_tokens": 0},
            "output_tokens": output_tokens,
            "total_tokens": text_tokens + output_tokens,
        },
    }
    if size in _RESPONSE_SIZES:
        extras["size"] = size
    return extras


def _json(status: int, payload: dict[str, Any], request_id: str) -> JSONResponse:
    return JSONResponse(payload, status_code=status, headers={"x-request-id": request_id})


def _error_response(reject: _Reject, request_id: str) -> JSONResponse:
    response = _json(reject.status, {"error": reject.error}, request_id)
    response.headers.update(reject.headers)
    return response


def add_cli(fakes: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`python -m atelier_fakes openai ...`"""
    _common.add_fake_parser(
        fakes,
        "openai",
        help="fake OpenAI Images API (POST /v1/images/generations)",
        description="Fake OpenAI Images API on /v1, validating bodies against OpenAI's "
        "OpenAPI document.",
        markers=MARKERS,
        state=FakeOpenAIState,
        serve=create_openai_fake,
        url_suffix="/v1",
        flags={
            "api_key": ("--api-key", "bearer key to accept"),
            "spec_path": ("--spec", "OpenAI OpenAPI document to validate bodies against"),
            "url_ttl_s": _common.URL_TTL,
            "hang_s": _common.HANG,
        },
    )
