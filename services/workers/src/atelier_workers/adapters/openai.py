"""OpenAI Images (and the many gateways that copy it): `POST /images/generations`, and
`POST /images/edits` (multipart, one `image[]` part per reference image) when a GPT-image model
is given reference images.

Wire format and failure modes: providers.md A.1 and A.11; every body we send must validate
against `CreateImageRequest` in shared/reference/openai-images-openapi.json, so options are
filtered per model family and checked against the schema's enums before anything is sent.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import email.utils
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import httpx

from atelier_contracts.errors import ErrorClass
from atelier_workers.adapters.base import (
    GeneratedImageData,
    GenerationOutput,
    ImageRequest,
    ProviderError,
    image_size_of,
)

DEFAULT_BASE_URL = "https://api.openai.com/v1"
MAX_N = 10  # the schema's maximum for every model but dall-e-3
MAX_REFERENCE_IMAGES = 16  # CreateImageEditRequest: `image` takes at most 16 files

# Allowed values, copied from CreateImageRequest's enums; `None` means "any string".
_ENUMS: dict[str, frozenset[str] | None] = {
    "quality": frozenset({"standard", "hd", "low", "medium", "high", "auto"}),
    "style": frozenset({"vivid", "natural"}),
    "background": frozenset({"transparent", "opaque", "auto"}),
    "output_format": frozenset({"png", "jpeg", "webp"}),
    "moderation": frozenset({"low", "auto"}),
    "response_format": frozenset({"url", "b64_json"}),
    "user": None,
}
_INT_OPTIONS = {"output_compression": (0, 100)}

# Which options each model family understands. The real API answers 400 "Unknown parameter"
# to e.g. `response_format` on GPT-image models, so an option a profile set for another model is
# dropped rather than turned into a failed generation.
_GPT_IMAGE_OPTIONS = frozenset(
    {"quality", "background", "output_format", "output_compression", "moderation", "user"}
)
# `/images/edits` knows no `moderation`; everything else a GPT-image body holds it takes too.
_EDIT_FIELDS = frozenset({"model", "prompt", "n", "size"}) | (_GPT_IMAGE_OPTIONS - {"moderation"})
_REFERENCE_EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}
_DALLE3_OPTIONS = frozenset({"quality", "style", "response_format", "user"})
_DALLE2_OPTIONS = frozenset({"quality", "response_format", "user"})
# Unknown models are usually OpenAI-compatible gateways; let them judge every option.
_ANY_MODEL_OPTIONS = frozenset(_ENUMS) | frozenset(_INT_OPTIONS)

# Status codes of an expired or vanished result URL (DALL·E URLs live 60 minutes).
_GONE = (404, 410)


class OpenAIAdapter:
    name: str = "openai"

    def max_images_per_call(self, model: str) -> int:
        return 1 if model == "dall-e-3" else MAX_N

    async def generate(self, request: ImageRequest, client: httpx.AsyncClient) -> GenerationOutput:
        body = self.build_body(request)
        try:
            # httpx's timeout bounds each read or write; this bounds the whole call, downloads
            # included, so a server that trickles bytes cannot hold a worker forever.
            async with asyncio.timeout(request.timeout_s):
                return await self._call(request, body, client)
        except TimeoutError as exc:
            raise ProviderError.of(
                ErrorClass.TIMEOUT, f"no complete answer within {request.timeout_s:g} s"
            ) from exc

    def build_body(self, request: ImageRequest) -> dict[str, Any]:
        """The JSON body for one call; raises `invalid_request` instead of sending a bad one.

        Seed and negative prompt are never sent: OpenAI has neither, and rejects unknown fields.
        """
        limit = self.max_images_per_call(request.model)
        if not 1 <= request.n <= limit:
            raise ProviderError.of(
                ErrorClass.INVALID_REQUEST, f"{request.model} takes n from 1 to {limit}"
            )
        if not request.prompt:
            raise ProviderError.of(ErrorClass.INVALID_REQUEST, "prompt is empty")
        body: dict[str, Any] = {
            "model": request.model,
            "prompt": request.prompt,
            "n": request.n,
            "size": request.size,
        }
        allowed = _options_for(request.model)
        for key, value in request.options.items():
            if key in allowed and value is not None:
                body[key] = _checked_option(key, value)
        if _is_dalle(request.model) and "response_format" not in body:
            # Ask for base64: the default, `url`, costs a second round trip and expires.
            body["response_format"] = "b64_json"
        return body

    async def _call(
        self, request: ImageRequest, body: dict[str, Any], client: httpx.AsyncClient
    ) -> GenerationOutput:
        base = (request.base_url or DEFAULT_BASE_URL).rstrip("/")
        # No key means a keyless OpenAI-compatible gateway: send no header rather than "Bearer ".
        headers = {"Authorization": f"Bearer {request.api_key}"} if request.api_key else {}
        secrets = (request.api_key,)
        if request.reference_images and takes_reference_images(request.model):
            # Reference images go to the edits endpoint as files; other models get the prompt
            # alone (their profiles should say `max_reference_images: 0`).
            response = await _send(
                lambda: client.post(
                    f"{base}/images/edits",
                    data=edit_fields(body),
                    files=reference_files(request),
                    headers=headers,
                    timeout=request.timeout_s,
                ),
                secrets,
            )
        else:
            response = await _send(
                lambda: client.post(
                    f"{base}/images/generations",
                    json=body,
                    headers=headers,
                    timeout=request.timeout_s,
                ),
                secrets,
            )
        request_id = response.headers.get("x-request-id")
        if response.status_code != 200:
            raise error_from_response(response, secrets)
        payload = _json_object(response, request_id)
        # One after another: only dall-e-2 returns several URLs, and a failed download should
        # stop the rest rather than leave them running.
        images = [
            await _image_from_item(item, client, request.timeout_s, request_id)
            for item in _data_items(payload, request_id)
        ]
        usage = payload.get("usage")
        return GenerationOutput(
            images=images,
            usage=usage if isinstance(usage, dict) else {},
            provider_request_id=request_id,
        )


def takes_reference_images(model: str) -> bool:
    """GPT-image models take up to 16 reference images on `/images/edits`; DALL·E 2's edit is an
    inpainting of one square PNG, not a reference, and DALL·E 3 has no edit at all."""
    return model.startswith(("gpt-image", "chatgpt-image"))


def edit_fields(body: dict[str, Any]) -> dict[str, str]:
    """The generation body as `/images/edits` form fields (multipart sends text)."""
    return {key: str(value) for key, value in body.items() if key in _EDIT_FIELDS}


def reference_files(request: ImageRequest) -> list[tuple[str, tuple[str, bytes, str]]]:
    """One `image[]` part per reference image, in order, named so the type is plain."""
    return [
        (
            "image[]",
            (
                f"reference-{number}.{_REFERENCE_EXTENSIONS.get(image.content_type, 'png')}",
                image.data,
                image.content_type,
            ),
        )
        for number, image in enumerate(request.reference_images[:MAX_REFERENCE_IMAGES], start=1)
    ]


def error_from_response(response: httpx.Response, secrets: tuple[str | None, ...]) -> ProviderError:
    """Map a non-200 answer onto the shared taxonomy (providers.md A.1 and A.11)."""
    status = response.status_code
    body = _json_or_none(response)
    error = body.get("error") if isinstance(body, dict) else None
    error = error if isinstance(error, dict) else {}
    code, err_type = error.get("code"), error.get("type")
    detail = _detail(response, error)

    def fail(error_class: ErrorClass, **extra: Any) -> ProviderError:
        return ProviderError.of(error_class, detail, secrets=secrets, **extra)

    if code == "moderation_blocked" or _moderation_details(body, error):
        return fail(ErrorClass.CONTENT_BLOCKED, stage=_moderation_stage(body, error))
    if code == "content_policy_violation":
        return fail(ErrorClass.CONTENT_BLOCKED, stage="input")
    if status in (401, 403):
        return fail(ErrorClass.AUTH)
    if status == 402 or "insufficient_quota" in (code, err_type):
        return fail(ErrorClass.QUOTA_EXHAUSTED)
    if status == 429:
        return fail(ErrorClass.RATE_LIMITED, retry_after_s=retry_after_of(response.headers))
    if status == 408:
        return fail(ErrorClass.TIMEOUT)
    if status >= 500 or status == 409:
        # 409 is a lock conflict on OpenAI's side; its SDK retries it like a 5xx.
        return fail(ErrorClass.PROVIDER_UNAVAILABLE, retry_after_s=retry_after_of(response.headers))
    return fail(ErrorClass.INVALID_REQUEST)


def retry_after_of(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait, from `retry-after-ms` (preferred, finer) or `retry-after`."""
    millis = _float_or_none(headers.get("retry-after-ms"))
    if millis is not None and millis >= 0:
        return millis / 1000
    raw = headers.get("retry-after")
    if raw is None:
        return None
    seconds = _float_or_none(raw)
    if seconds is None:
        # RFC 9110 also allows an HTTP date.
        try:
            seconds = email.utils.parsedate_to_datetime(raw).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return max(seconds, 0.0)


async def _send(
    call: Callable[[], Awaitable[httpx.Response]], secrets: tuple[str | None, ...]
) -> httpx.Response:
    """Run one HTTP call, turning transport failures into `ProviderError`."""
    try:
        response = await call()
    except httpx.TimeoutException as exc:
        raise _transport_error(ErrorClass.TIMEOUT, exc, secrets) from exc
    except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
        # A malformed base_url is a configuration mistake: retrying cannot fix it.
        raise _transport_error(ErrorClass.INVALID_REQUEST, exc, secrets) from exc
    except httpx.HTTPError as exc:  # connection refused/reset, protocol errors, ...
        raise _transport_error(ErrorClass.PROVIDER_UNAVAILABLE, exc, secrets) from exc
    return response


def _transport_error(
    error_class: ErrorClass, exc: Exception, secrets: tuple[str | None, ...]
) -> ProviderError:
    return ProviderError.of(error_class, f"{type(exc).__name__}: {exc}", secrets=secrets)


async def _image_from_item(
    item: dict[str, Any], client: httpx.AsyncClient, timeout_s: float, request_id: str | None
) -> GeneratedImageData:
    revised = item.get("revised_prompt")
    if isinstance(item.get("b64_json"), str):
        data = _decode_b64(item["b64_json"], request_id)
    elif isinstance(item.get("url"), str):
        data = await _download(item["url"], client, timeout_s)
    else:
        raise ProviderError.of(
            ErrorClass.NO_IMAGE_RETURNED, _with_id("item has neither b64_json nor url", request_id)
        )
    content_type, width, height = image_size_of(data)
    return GeneratedImageData(
        data=data,
        content_type=content_type,
        width=width,
        height=height,
        seed=None,
        revised_prompt=revised if isinstance(revised, str) else None,
    )


async def _download(url: str, client: httpx.AsyncClient, timeout_s: float) -> bytes:
    """Fetch a result URL now, before it expires.

    No Authorization header: result URLs are pre-signed and usually on another host (blob
    storage), which must never see the API key. For the same reason following redirects is safe.
    """
    response = await _send(lambda: client.get(url, timeout=timeout_s, follow_redirects=True), ())
    shown = url.split("?", 1)[0]  # the query string is the signature; keep it out of logs
    if response.status_code in _GONE:
        raise ProviderError.of(
            ErrorClass.NO_IMAGE_RETURNED,
            f"result URL {shown} answered {response.status_code} (expired or removed)",
        )
    if response.status_code != 200:
        error_class = (
            ErrorClass.PROVIDER_UNAVAILABLE
            if response.status_code >= 500
            else ErrorClass.NO_IMAGE_RETURNED
        )
        raise ProviderError.of(error_class, f"result URL {shown} answered {response.status_code}")
    return response.content


def _data_items(payload: dict[str, Any], request_id: str | None) -> list[dict[str, Any]]:
    data = payload.get("data")
    items = [item for item in data if isinstance(item, dict)] if isinstance(data, list) else []
    if not items:
        raise ProviderError.of(
            ErrorClass.NO_IMAGE_RETURNED, _with_id("200 with no images in `data`", request_id)
        )
    return items


def _json_object(response: httpx.Response, request_id: str | None) -> dict[str, Any]:
    payload = _json_or_none(response)
    if not isinstance(payload, dict):
        raise ProviderError.of(
            ErrorClass.NO_IMAGE_RETURNED,
            _with_id(f"200 whose body is not a JSON object: {response.text[:200]!r}", request_id),
        )
    return payload


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None


def _decode_b64(text: str, request_id: str | None) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ProviderError.of(
            ErrorClass.NO_IMAGE_RETURNED, _with_id(f"b64_json is not base64: {exc}", request_id)
        ) from exc


def _detail(response: httpx.Response, error: dict[str, Any]) -> str:
    """Provider text for admins: status, type, code, param, message and request id."""
    parts = [f"HTTP {response.status_code}"]
    parts += [f"{key}={error[key]}" for key in ("type", "code", "param") if error.get(key)]
    message = error.get("message") if error else response.text[:300]
    if message:
        parts.append(f"message={message}")
    return _with_id(" ".join(parts), response.headers.get("x-request-id"))


def _with_id(text: str, request_id: str | None) -> str:
    return f"{text} (request_id={request_id})" if request_id else text


def _moderation_details(body: Any, error: dict[str, Any]) -> dict[str, Any] | None:
    # Seen inside `error` and, from some gateways, at the top level; accept both.
    for holder in (error, body if isinstance(body, dict) else {}):
        details = holder.get("moderation_details")
        if isinstance(details, dict):
            return details
    return None


def _moderation_stage(body: Any, error: dict[str, Any]) -> str:
    details = _moderation_details(body, error) or {}
    stage = details.get("moderation_stage")
    # Without a stage, assume the prompt: nothing was generated that we know of.
    return stage if stage in ("input", "output") else "input"


def _options_for(model: str) -> frozenset[str]:
    if model.startswith(("gpt-image", "chatgpt-image")):
        return _GPT_IMAGE_OPTIONS
    if model == "dall-e-3":
        return _DALLE3_OPTIONS
    if model == "dall-e-2":
        return _DALLE2_OPTIONS
    return _ANY_MODEL_OPTIONS


def _is_dalle(model: str) -> bool:
    return model in ("dall-e-2", "dall-e-3")


def _checked_option(key: str, value: Any) -> Any:
    if key in _INT_OPTIONS:
        low, high = _INT_OPTIONS[key]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ProviderError.of(
                ErrorClass.INVALID_REQUEST,
                f"option {key}={value!r} must be an integer {low}-{high}",
            )
        return value
    allowed = _ENUMS[key]
    if not isinstance(value, str) or (allowed is not None and value not in allowed):
        expected = ", ".join(sorted(allowed)) if allowed else "a string"
        raise ProviderError.of(
            ErrorClass.INVALID_REQUEST, f"option {key}={value!r} must be one of: {expected}"
        )
    return value


def _float_or_none(raw: str | None) -> float | None:
    if raw is None:
        return None
    try:
        return float(raw)
    except ValueError:
        return None
