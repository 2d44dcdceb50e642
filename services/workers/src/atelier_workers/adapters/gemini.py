"""Google Gemini image models ("Nano Banana"): `POST /models/{model}:generateContent`.

Wire format and failure modes: providers.md A.3 and A.11. Gemini takes an aspect ratio and a
1K/2K/4K tier instead of pixel sizes, up to 14 inline reference images, and no `n`, seed or
negative prompt. Safety outcomes arrive as HTTP 200 (`promptFeedback.blockReason`, a candidate
`finishReason` such as IMAGE_SAFETY, or an answer with text and no image), so a 200 is only a
success once an image part is found. Imagen's `:predict` is not served: Google is retiring it on
the Gemini Developer API (A.3).
"""

from __future__ import annotations

import asyncio
import base64
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

import httpx

from atelier_contracts.errors import ErrorClass
from atelier_workers.adapters.base import (
    GeneratedImageData,
    GenerationOutput,
    ImageRequest,
    ProviderError,
    image_size_of,
    parse_size,
)
from atelier_workers.adapters.openai import (
    _decode_b64,
    _json_object,
    _json_or_none,
    _send,
    _with_id,
    retry_after_of,
)

DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com/v1beta"
ASPECT_RATIOS = ("1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9")
IMAGE_SIZES = ("1K", "2K", "4K")
MAX_REFERENCE_IMAGES = 14  # Gemini 3 Pro image; smaller models accept fewer in practice
_PERSON_GENERATION = frozenset({"ALLOW_ALL", "ALLOW_ADULT", "ALLOW_NONE"})

# Candidate finish reasons that mean "the model made (or began) an image and a filter removed
# it": the prompt itself passed, so the block is at the output stage.
_BLOCKED_OUTPUT = frozenset(
    {
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
        "IMAGE_RECITATION",
        "SAFETY",
        "PROHIBITED_CONTENT",
        "RECITATION",
        "BLOCKLIST",
        "SPII",
    }
)
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")
_RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"
_QUOTA_FAILURE = "type.googleapis.com/google.rpc.QuotaFailure"
_ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"


class GeminiAdapter:
    name: str = "gemini"

    def max_images_per_call(self, model: str) -> int:
        # Gemini has no `n` and "won't always follow the exact number of image outputs" (A.3):
        # one image per call is the only count we can promise, so dispatch splits larger jobs.
        return 1

    async def generate(self, request: ImageRequest, client: httpx.AsyncClient) -> GenerationOutput:
        body = self.build_body(request)
        try:
            async with asyncio.timeout(request.timeout_s):
                return await self._call(request, body, client)
        except TimeoutError as exc:
            raise ProviderError.of(
                ErrorClass.TIMEOUT, f"no complete answer within {request.timeout_s:g} s"
            ) from exc

    def build_body(self, request: ImageRequest) -> dict[str, Any]:
        """The generateContent body; raises `invalid_request` instead of sending a bad one."""
        if request.n != 1:
            raise ProviderError.of(ErrorClass.INVALID_REQUEST, "gemini makes one image per call")
        if not request.prompt:
            raise ProviderError.of(ErrorClass.INVALID_REQUEST, "prompt is empty")
        if len(request.reference_images) > MAX_REFERENCE_IMAGES:
            raise ProviderError.of(
                ErrorClass.INVALID_REQUEST,
                f"gemini takes at most {MAX_REFERENCE_IMAGES} reference images, "
                f"not {len(request.reference_images)}",
            )
        parts: list[dict[str, Any]] = [{"text": request.prompt}]
        parts += [
            {
                "inline_data": {
                    "mime_type": ref.content_type,
                    "data": base64.b64encode(ref.data).decode("ascii"),
                }
            }
            for ref in request.reference_images
        ]
        ratio, tier = ratio_and_tier(request.size, ASPECT_RATIOS, request.options)
        image_config: dict[str, Any] = {"aspectRatio": ratio}
        # Gemini 2.5 Flash Image only makes ~1K images and predates `imageSize`; leave it out
        # there rather than risk an INVALID_ARGUMENT for a field the model never had.
        if not request.model.startswith("gemini-2.5"):
            image_config["imageSize"] = tier
        person = request.options.get("person_generation")
        if person is not None:
            if person not in _PERSON_GENERATION:
                raise ProviderError.of(
                    ErrorClass.INVALID_REQUEST,
                    f"option person_generation={person!r} must be one of: "
                    + ", ".join(sorted(_PERSON_GENERATION)),
                )
            image_config["personGeneration"] = person
        modalities = request.provider_config.get("response_modalities") or ["TEXT", "IMAGE"]
        body: dict[str, Any] = {
            "contents": [{"role": "user", "parts": parts}],
            "generationConfig": {
                "responseModalities": list(modalities),
                "imageConfig": image_config,
            },
        }
        safety = request.provider_config.get("safety_settings")
        if isinstance(safety, list) and safety:
            body["safetySettings"] = safety
        return body

    async def _call(
        self, request: ImageRequest, body: dict[str, Any], client: httpx.AsyncClient
    ) -> GenerationOutput:
        base = (request.base_url or DEFAULT_BASE_URL).rstrip("/")
        url = f"{base}/models/{request.model}:generateContent"
        # The header, never `?key=`: a query string ends up in proxy logs and exception texts.
        headers = {"x-goog-api-key": request.api_key} if request.api_key else {}
        secrets = (request.api_key,)
        response = await _send(
            lambda: client.post(url, json=body, headers=headers, timeout=request.timeout_s),
            secrets,
        )
        if response.status_code != 200:
            raise error_from_response(response, secrets)
        payload = _json_object(response, None)
        request_id = (
            payload.get("responseId") if isinstance(payload.get("responseId"), str) else None
        )
        images = images_from_candidates(payload, request_id, secrets)
        usage = payload.get("usageMetadata")
        return GenerationOutput(
            images=images,
            usage=usage if isinstance(usage, dict) else {},
            provider_request_id=request_id,
        )


def images_from_candidates(
    payload: dict[str, Any], request_id: str | None, secrets: tuple[str | None, ...] = ()
) -> list[GeneratedImageData]:
    """The final image parts of a 200 answer, or the `ProviderError` its safety fields mean."""
    images: list[GeneratedImageData] = []
    texts: list[str] = []
    finish_reasons: list[str] = []
    finish_messages: list[str] = []
    candidates = payload.get("candidates")
    for candidate in candidates if isinstance(candidates, list) else []:
        if not isinstance(candidate, dict):
            continue
        if isinstance(candidate.get("finishReason"), str):
            finish_reasons.append(candidate["finishReason"])
        if isinstance(candidate.get("finishMessage"), str):
            finish_messages.append(candidate["finishMessage"])
        content = candidate.get("content")
        parts = content.get("parts") if isinstance(content, dict) else None
        for part in parts if isinstance(parts, list) else []:
            if not isinstance(part, dict) or part.get("thought"):
                # Gemini 3 Pro shows interim "thinking" images; only the final ones count.
                continue
            inline = part.get("inlineData") or part.get("inline_data")
            if isinstance(inline, dict) and isinstance(inline.get("data"), str):
                data = _decode_b64(inline["data"], request_id)
                content_type, width, height = image_size_of(data)
                images.append(GeneratedImageData(data, content_type, width, height))
            elif isinstance(part.get("text"), str):
                texts.append(part["text"])
    if images:
        return images

    feedback = payload.get("promptFeedback")
    block = feedback.get("blockReason") if isinstance(feedback, dict) else None
    if block:
        message = feedback.get("blockReasonMessage") if isinstance(feedback, dict) else None
        detail = f"promptFeedback.blockReason={block}" + (f" {message}" if message else "")
        raise ProviderError.of(
            ErrorClass.CONTENT_BLOCKED, _with_id(detail, request_id), stage="input", secrets=secrets
        )
    blocked = [reason for reason in finish_reasons if reason in _BLOCKED_OUTPUT]
    shown = " ".join(
        [f"finishReason={','.join(finish_reasons) or 'none'}"]
        + [f"finishMessage={m[:200]}" for m in finish_messages]
        + ([f"text={' '.join(texts)[:200]!r}"] if texts else [])
    )
    if blocked:
        raise ProviderError.of(
            ErrorClass.CONTENT_BLOCKED,
            _with_id(shown, request_id),
            stage="output",
            secrets=secrets,
        )
    # NO_IMAGE, IMAGE_OTHER, MAX_TOKENS, or STOP with only text: nothing to show, retry once.
    raise ProviderError.of(
        ErrorClass.NO_IMAGE_RETURNED,
        _with_id(f"200 without an image part: {shown}", request_id),
        secrets=secrets,
    )


def error_from_response(response: httpx.Response, secrets: tuple[str | None, ...]) -> ProviderError:
    """Map a non-200 `{"error": {code, message, status, details}}` onto the taxonomy."""
    status = response.status_code
    body = _json_or_none(response)
    error = body.get("error") if isinstance(body, dict) else None
    error = error if isinstance(error, dict) else {}
    status_name = error.get("status") if isinstance(error.get("status"), str) else None
    details = [d for d in error.get("details") or [] if isinstance(d, dict)]
    reasons = {d.get("reason") for d in details if d.get("@type") == _ERROR_INFO}
    parts = [f"HTTP {status}"] + ([f"status={status_name}"] if status_name else [])
    parts += [f"reason={reason}" for reason in sorted(r for r in reasons if isinstance(r, str))]
    message = error.get("message") if error else response.text[:300]
    if message:
        parts.append(f"message={message}")
    detail = " ".join(parts)

    def fail(error_class: ErrorClass, **extra: Any) -> ProviderError:
        return ProviderError.of(error_class, detail, secrets=secrets, **extra)

    retry_after = google_retry_delay(details)
    if retry_after is None:
        retry_after = retry_after_of(response.headers)
    # A wrong key is a 400 INVALID_ARGUMENT with reason API_KEY_INVALID, not a 401.
    if (
        "API_KEY_INVALID" in reasons
        or status in (401, 403)
        or status_name in ("UNAUTHENTICATED", "PERMISSION_DENIED")
    ):
        return fail(ErrorClass.AUTH)
    if status == 429 or status_name == "RESOURCE_EXHAUSTED":
        if _is_daily_quota(details):
            # Waiting seconds cannot help with a per-day quota: fall back or alert.
            return fail(ErrorClass.QUOTA_EXHAUSTED, retry_after_s=retry_after)
        return fail(ErrorClass.RATE_LIMITED, retry_after_s=retry_after)
    if status == 504 or status_name == "DEADLINE_EXCEEDED":
        return fail(ErrorClass.TIMEOUT)
    if status >= 500:
        return fail(ErrorClass.PROVIDER_UNAVAILABLE, retry_after_s=retry_after)
    return fail(ErrorClass.INVALID_REQUEST)


def google_retry_delay(details: Iterable[Mapping[str, Any]]) -> float | None:
    """Seconds from a `google.rpc.RetryInfo` detail (`{"retryDelay": "37s"}`), if any."""
    for detail in details:
        if detail.get("@type") != _RETRY_INFO:
            continue
        delay = detail.get("retryDelay")
        if isinstance(delay, str) and (match := _DURATION_RE.match(delay)):
            return float(match.group(1))
        if isinstance(delay, Mapping):  # the proto3 object form {seconds, nanos}
            seconds = delay.get("seconds", 0)
            nanos = delay.get("nanos", 0)
            try:
                return float(seconds) + float(nanos) / 1e9
            except (TypeError, ValueError):
                return None
    return None


def _is_daily_quota(details: Iterable[Mapping[str, Any]]) -> bool:
    for detail in details:
        if detail.get("@type") != _QUOTA_FAILURE:
            continue
        for violation in detail.get("violations") or []:
            if isinstance(violation, Mapping) and "PerDay" in str(violation.get("quotaId", "")):
                return True
    return False


# --- sizes → aspect ratio and resolution tier (also used by providers that copy Gemini) ------


def nearest_aspect_ratio(width: int, height: int, ratios: Iterable[str]) -> str:
    """The ratio from `ratios` ("W:H") closest to width/height, compared on a log scale so
    that 2:1 and 1:2 are equally far from 1:1."""
    target = math.log(width / height)

    def distance(ratio: str) -> float:
        w, h = ratio.split(":")
        return abs(math.log(int(w) / int(h)) - target)

    return min(ratios, key=distance)


def resolution_tier(width: int, height: int) -> str:
    """1K, 2K or 4K, whichever pixel count (1024², 2048², 4096²) is nearest on a log scale."""
    pixels = width * height
    if pixels <= 2 * 1024 * 1024:
        return "1K"
    if pixels <= 8 * 1024 * 1024:
        return "2K"
    return "4K"


def ratio_and_tier(
    size: str,
    ratios: tuple[str, ...],
    options: Mapping[str, Any],
    *,
    ratio_option: str = "aspect_ratio",
    tier_option: str = "image_size",
) -> tuple[str, str]:
    """Map a "WxH" size to (nearest ratio, nearest tier); a profile may pin either through
    the options, as long as the value is one the provider takes."""
    width, height = parse_size(size)
    ratio = options.get(ratio_option) or nearest_aspect_ratio(width, height, ratios)
    tier = options.get(tier_option) or resolution_tier(width, height)
    if ratio not in ratios:
        raise ProviderError.of(
            ErrorClass.INVALID_REQUEST,
            f"option {ratio_option}={ratio!r} must be one of: {', '.join(ratios)}",
        )
    if tier not in IMAGE_SIZES:
        raise ProviderError.of(
            ErrorClass.INVALID_REQUEST,
            f"option {tier_option}={tier!r} must be one of: {', '.join(IMAGE_SIZES)}",
        )
    return str(ratio), str(tier)
