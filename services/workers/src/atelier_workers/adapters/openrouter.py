"""OpenRouter: one key for Gemini image, FLUX.2, Seedream, GPT-image and more.

Two wire paths (providers.md A.2), chosen per profile with `provider_config["api"]`:
- `"chat"` (default): `POST /chat/completions` with `modalities` and `image_config`; images come
  back as data URLs in `choices[0].message.images`. Errors that happen after generation started
  arrive as **HTTP 200 with an error in the body**, so a 200 is read as carefully as a 4xx.
- `"images"`: the newer `POST /images` (`{created, data:[{b64_json}]}`), which also takes a seed
  and suits image-only models that fail on the chat path.
Both take an aspect ratio and a 1K/2K/4K tier, mapped from the requested size like Gemini's.
"""

from __future__ import annotations

import re
import time
from dataclasses import replace
from typing import Any

import httpx

from atelier_contracts.errors import ErrorClass
from atelier_workers.adapters import _http
from atelier_workers.adapters.base import (
    GeneratedImageData,
    GenerationOutput,
    ImageRequest,
    ProviderError,
    ReferenceImage,
)
from atelier_workers.adapters.gemini import BLOCKED_OUTPUT_REASONS
from atelier_workers.adapters.sizes import GEMINI_ASPECT_RATIOS, ratio_and_tier

APIS = ("chat", "images")
# Models that only output images reject `modalities: ["image", "text"]` (A.2).
_IMAGE_ONLY_PREFIXES = ("black-forest-labs/", "sourceful/")
# Finish reasons (OpenRouter's own, and the upstream's `native_finish_reason`) meaning a filter
# removed the output; Gemini's are passed through verbatim.
_BLOCKED_FINISH = frozenset({"content_filter"}) | BLOCKED_OUTPUT_REASONS
# Options the images API understands besides the ones we set ourselves.
_IMAGES_API_OPTIONS = frozenset({"quality", "background", "output_format", "output_compression"})
_DATA_URL_RE = re.compile(r"^data:(?P<type>[\w.+/-]+)?(?:;[\w=.+-]+)*;base64,(?P<data>.*)$", re.S)


class OpenRouterAdapter(_http.HttpAdapter):
    # One image per call (`images_per_call`): the chat path makes one, and on the images API
    # which upstreams reject n > 1 is not knowable from the model id.
    name: str = "openrouter"

    async def _generate(self, request: ImageRequest, client: httpx.AsyncClient) -> GenerationOutput:
        api = request.provider_config.get("api", "chat")
        if api not in APIS:
            raise ProviderError.of(
                ErrorClass.INVALID_REQUEST, f"provider_config api={api!r} must be chat or images"
            )
        body = self.build_images_body(request) if api == "images" else self.build_chat_body(request)
        return await self._call(request, api, body, client)

    def build_chat_body(self, request: ImageRequest) -> dict[str, Any]:
        """Chat completions with image output. No seed or negative prompt: not on this path."""
        self.check_request(request)
        ratio, tier = ratio_and_tier(request.size, GEMINI_ASPECT_RATIOS, request.options)
        content: list[dict[str, Any]] = [{"type": "text", "text": request.prompt}]
        content += [
            {"type": "image_url", "image_url": {"url": data_url(ref)}}
            for ref in request.reference_images
        ]
        modalities = request.provider_config.get("modalities") or (
            ["image"] if request.model.startswith(_IMAGE_ONLY_PREFIXES) else ["image", "text"]
        )
        body: dict[str, Any] = {
            "model": request.model,
            "messages": [{"role": "user", "content": content}],
            "modalities": list(modalities),
            "image_config": {"aspect_ratio": ratio, "image_size": tier},
        }
        _add_routing(body, request)
        return body

    def build_images_body(self, request: ImageRequest) -> dict[str, Any]:
        """The dedicated images API; takes a seed and reference images as `input_references`."""
        self.check_request(request)
        ratio, tier = ratio_and_tier(
            request.size, GEMINI_ASPECT_RATIOS, request.options, tier_option="resolution"
        )
        body: dict[str, Any] = {
            "model": request.model,
            "prompt": request.prompt,
            "n": 1,
            "aspect_ratio": ratio,
            "resolution": tier,
        }
        if request.seed is not None:
            body["seed"] = request.seed
        if request.reference_images:
            body["input_references"] = [
                {"type": "image_url", "image_url": {"url": data_url(ref)}}
                for ref in request.reference_images
            ]
        for key, value in request.options.items():
            if key in _IMAGES_API_OPTIONS and value is not None:
                body[key] = value
        _add_routing(body, request)
        return body

    async def _call(
        self, request: ImageRequest, api: str, body: dict[str, Any], client: httpx.AsyncClient
    ) -> GenerationOutput:
        base = self.base_url(request)
        url = f"{base}/images" if api == "images" else f"{base}/chat/completions"
        headers = _headers(request)
        secrets = (request.api_key,)
        response = await _http.post_json(request, client, url, body, headers, error_from_response)
        payload = _http.json_object(response, None)
        request_id = payload.get("id") if isinstance(payload.get("id"), str) else None
        # Both paths may carry a top-level error in a 200 (the stream broke after headers).
        if isinstance(payload.get("error"), dict):
            raise error_from_body(payload["error"], response.headers, secrets, request_id)
        if api == "images":
            urls = _images_api_items(payload, request_id)
        else:
            urls = _chat_image_urls(payload, request_id, secrets)
        images = [await _image_from(item, client, request.timeout_s, request_id) for item in urls]
        if api == "images" and request.seed is not None:
            # Only the images API was sent the seed (and makes one image a call).
            images = [replace(image, seed=request.seed) for image in images]
        return GenerationOutput(images, _http.dict_of(payload.get("usage")), request_id)


def data_url(ref: ReferenceImage) -> str:
    return _http.data_uri(ref.data, ref.content_type)


def error_from_response(response: httpx.Response, secrets: tuple[str | None, ...]) -> ProviderError:
    """Map a non-200 answer (`{"error": {code, message, metadata}}` or anything else)."""
    body = _http.json_or_none(response)
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        error = {"code": response.status_code, "message": response.text[:300]}
    return error_from_body(error, response.headers, secrets, None, http_status=response.status_code)


def error_from_body(
    error: dict[str, Any],
    headers: httpx.Headers,
    secrets: tuple[str | None, ...],
    request_id: str | None,
    *,
    http_status: int = 200,
) -> ProviderError:
    """OpenRouter's error object, whether it came with its own status or inside a 200: the
    `code` field is an HTTP status either way, and decides the class."""
    code = error.get("code")
    status = code if isinstance(code, int) and not isinstance(code, bool) else http_status
    if status == 200:  # an error object without a usable code: something broke upstream
        status = 502
    message = str(error.get("message") or "")
    raw_metadata = error.get("metadata")
    metadata: dict[str, Any] = raw_metadata if isinstance(raw_metadata, dict) else {}
    parts = [f"HTTP {http_status}"] + ([f"code={code}"] if code is not None else [])
    if isinstance(metadata.get("provider_name"), str):
        parts.append(f"provider={metadata['provider_name']}")
    if isinstance(metadata.get("reasons"), list):
        parts.append("reasons=" + ",".join(str(r) for r in metadata["reasons"]))
    if message:
        parts.append(f"message={message[:300]}")
    if isinstance(metadata.get("raw"), str):
        parts.append(f"raw={metadata['raw'][:200]}")
    detail = _http.with_id(" ".join(parts), request_id)

    def fail(error_class: ErrorClass, **extra: Any) -> ProviderError:
        return ProviderError.of(error_class, detail, secrets=secrets, **extra)

    lowered = message.lower()
    if status == 401:
        return fail(ErrorClass.AUTH)
    if status == 402:
        return fail(ErrorClass.QUOTA_EXHAUSTED)
    if status == 403:
        # 403 is OpenRouter's moderation refusal; a key over its spending limit also gets one.
        if "limit" in lowered and "flag" not in lowered:
            return fail(ErrorClass.QUOTA_EXHAUSTED)
        if "reasons" in metadata or "flag" in lowered or "moderat" in lowered:
            reasons = metadata.get("reasons")
            return fail(
                ErrorClass.CONTENT_BLOCKED,
                stage="input",
                category=reasons if isinstance(reasons, list) else None,
            )
        return fail(ErrorClass.AUTH)
    if status == 408:
        return fail(ErrorClass.TIMEOUT)
    if status == 429:
        return fail(ErrorClass.RATE_LIMITED, retry_after_s=_retry_after(headers, metadata))
    if status >= 500:
        return fail(ErrorClass.PROVIDER_UNAVAILABLE, retry_after_s=_http.retry_after_of(headers))
    return fail(ErrorClass.INVALID_REQUEST)


def _retry_after(headers: httpx.Headers, metadata: dict[str, Any]) -> float | None:
    """`Retry-After` when sent; otherwise the `X-RateLimit-Reset` (epoch milliseconds) that
    OpenRouter copies into `metadata.headers` of its own rate-limit errors."""
    hint = _http.retry_after_of(headers)
    if hint is not None:
        return hint
    limit_headers = metadata.get("headers")
    if isinstance(limit_headers, dict):
        reset = limit_headers.get("X-RateLimit-Reset") or limit_headers.get("x-ratelimit-reset")
        try:
            return max(float(reset) / 1000 - time.time(), 0.0) if reset is not None else None
        except (TypeError, ValueError):
            return None
    return None


def _add_routing(body: dict[str, Any], request: ImageRequest) -> None:
    # Provider routing preferences (order, allow_fallbacks, data_collection...) from the profile.
    routing = request.provider_config.get("provider")
    if isinstance(routing, dict) and routing:
        body["provider"] = routing


def _headers(request: ImageRequest) -> dict[str, str]:
    headers = _http.bearer(request)
    # OpenRouter's optional app attribution headers.
    referer = request.provider_config.get("http_referer")
    title = request.provider_config.get("app_title")
    if isinstance(referer, str) and referer:
        headers["HTTP-Referer"] = referer
    if isinstance(title, str) and title:
        headers["X-Title"] = title
    return headers


def _chat_image_urls(
    payload: dict[str, Any], request_id: str | None, secrets: tuple[str | None, ...]
) -> list[str]:
    """The image URLs of a chat answer, or the error its finish reason or text implies."""
    choices = payload.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices else None
    if not isinstance(choice, dict):
        raise ProviderError.of(
            ErrorClass.NO_IMAGE_RETURNED, _http.with_id("200 without choices", request_id)
        )
    if isinstance(choice.get("error"), dict):
        raise error_from_body(choice["error"], httpx.Headers(), secrets, request_id)
    raw_message = choice.get("message")
    message: dict[str, Any] = raw_message if isinstance(raw_message, dict) else {}
    urls: list[str] = []
    for item in message.get("images") or []:
        url = _image_url_of(item)
        if url:
            urls.append(url)
    if urls:
        return urls
    finish = choice.get("finish_reason")
    native = choice.get("native_finish_reason")
    text = str(message.get("content") or "")
    refusal = str(message.get("refusal") or "")
    shown = f"finish_reason={finish} native_finish_reason={native}"
    if text or refusal:
        shown += f" text={(refusal or text)[:200]!r}"
    shown = _http.with_id(shown, request_id)
    filtered = finish in _BLOCKED_FINISH or native in _BLOCKED_FINISH
    if filtered or refusal:
        # A filter removed the image (output), or the model refused the prompt (input).
        stage = "output" if filtered else "input"
        # The upstream model's own reason (Gemini's IMAGE_SAFETY...) is the category; OpenRouter's
        # normalized `content_filter` says nothing more than the block itself.
        category = [r for r in (native,) if isinstance(r, str) and r != "content_filter"]
        raise ProviderError.of(
            ErrorClass.CONTENT_BLOCKED,
            shown,
            stage=stage,
            category=category or None,
            secrets=secrets,
        )
    raise ProviderError.of(
        ErrorClass.NO_IMAGE_RETURNED, f"200 with no images: {shown}", secrets=secrets
    )


def _image_url_of(item: Any) -> str | None:
    if isinstance(item, str):
        return item
    if not isinstance(item, dict):
        return None
    inner = item.get("image_url")
    if isinstance(inner, dict) and isinstance(inner.get("url"), str):
        return str(inner["url"])
    if isinstance(inner, str):
        return inner
    return str(item["url"]) if isinstance(item.get("url"), str) else None


def _images_api_items(payload: dict[str, Any], request_id: str | None) -> list[str]:
    """`data[]` of the images API as data URLs or plain URLs, one kind of list for both paths."""
    data = payload.get("data")
    out: list[str] = []
    for item in data if isinstance(data, list) else []:
        if not isinstance(item, dict):
            continue
        if isinstance(item.get("b64_json"), str):
            out.append(f"data:;base64,{item['b64_json']}")
        elif isinstance(item.get("url"), str):
            out.append(item["url"])
    if not out:
        raise ProviderError.of(
            ErrorClass.NO_IMAGE_RETURNED, _http.with_id("200 with no images in `data`", request_id)
        )
    return out


async def _image_from(
    url: str, client: httpx.AsyncClient, timeout_s: float, request_id: str | None
) -> GeneratedImageData:
    match = _DATA_URL_RE.match(url)
    if match is not None:
        data = _http.decode_b64(match.group("data"), request_id)
    elif url.startswith(("http://", "https://")):
        # Some upstreams hand back a short-lived link instead of a data URL: fetch it now.
        data = await _http.download(url, client, timeout_s)
    else:
        raise ProviderError.of(
            ErrorClass.NO_IMAGE_RETURNED,
            _http.with_id(f"image url is neither a data URL nor http(s): {url[:40]!r}", request_id),
        )
    return GeneratedImageData.decoded(data)
