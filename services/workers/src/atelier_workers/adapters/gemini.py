"""Google Gemini image models ("Nano Banana"): `POST /models/{model}:generateContent`.

Wire format and failure modes: providers.md A.3 and A.11. Gemini takes an aspect ratio and a
1K/2K/4K tier instead of pixel sizes, up to 14 inline reference images, and no `n`, seed or
negative prompt. Safety outcomes arrive as HTTP 200 (`promptFeedback.blockReason`, a candidate
`finishReason` such as IMAGE_SAFETY, or an answer with text and no image), so a 200 is only a
success once an image part is found. Imagen's `:predict` is not served: Google is retiring it on
the Gemini Developer API (A.3).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Mapping
from typing import Any

import httpx

from atelier_contracts.errors import ErrorClass
from atelier_contracts.providers import GEMINI_MAX_REFERENCE_IMAGES, GEMINI_PERSON_GENERATION
from atelier_workers.adapters import _http
from atelier_workers.adapters.base import (
    GeneratedImageData,
    GenerationOutput,
    ImageRequest,
    ProviderError,
)
from atelier_workers.adapters.sizes import GEMINI_ASPECT_RATIOS, ratio_and_tier

# Candidate finish reasons that mean "the model made (or began) an image and a filter removed
# it": the prompt itself passed, so the block is at the output stage.
BLOCKED_OUTPUT_REASONS = frozenset(
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


class GeminiAdapter(_http.HttpAdapter):
    name: str = "gemini"

    async def _generate(self, request: ImageRequest, client: httpx.AsyncClient) -> GenerationOutput:
        return await self._call(request, self.build_body(request), client)

    def build_body(self, request: ImageRequest) -> dict[str, Any]:
        """The generateContent body; raises `invalid_request` instead of sending a bad one."""
        self.check_request(request, GEMINI_MAX_REFERENCE_IMAGES)
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
        ratio, tier = ratio_and_tier(request.size, GEMINI_ASPECT_RATIOS, request.options)
        image_config: dict[str, Any] = {"aspectRatio": ratio}
        # Gemini 2.5 Flash Image only makes ~1K images and predates `imageSize`; leave it out
        # there rather than risk an INVALID_ARGUMENT for a field the model never had.
        if not request.model.startswith("gemini-2.5"):
            image_config["imageSize"] = tier
        person = request.options.get("person_generation")
        if person is not None:
            if person not in GEMINI_PERSON_GENERATION:
                raise ProviderError.of(
                    ErrorClass.INVALID_REQUEST,
                    f"option person_generation={person!r} must be one of: "
                    + ", ".join(sorted(GEMINI_PERSON_GENERATION)),
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
        base = self.base_url(request)
        url = f"{base}/models/{request.model}:generateContent"
        # The header, never `?key=`: a query string ends up in proxy logs and exception texts.
        headers = {"x-goog-api-key": request.api_key} if request.api_key else {}
        secrets = (request.api_key,)
        response = await _http.post_json(request, client, url, body, headers, error_from_response)
        payload = _http.json_object(response, None)
        request_id = (
            payload.get("responseId") if isinstance(payload.get("responseId"), str) else None
        )
        images = images_from_candidates(payload, request_id, secrets)
        return GenerationOutput(images, _http.dict_of(payload.get("usageMetadata")), request_id)


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
                data = _http.decode_b64(inline["data"], request_id)
                images.append(GeneratedImageData.decoded(data))
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
            ErrorClass.CONTENT_BLOCKED,
            _http.with_id(detail, request_id),
            stage="input",
            category=[block],
            secrets=secrets,
        )
    blocked = [reason for reason in finish_reasons if reason in BLOCKED_OUTPUT_REASONS]
    shown = " ".join(
        [f"finishReason={','.join(finish_reasons) or 'none'}"]
        + [f"finishMessage={m[:200]}" for m in finish_messages]
        + ([f"text={' '.join(texts)[:200]!r}"] if texts else [])
    )
    shown = _http.with_id(shown, request_id)
    if blocked:
        raise ProviderError.of(
            ErrorClass.CONTENT_BLOCKED, shown, stage="output", category=blocked, secrets=secrets
        )
    # NO_IMAGE, IMAGE_OTHER, MAX_TOKENS, or STOP with only text: nothing to show, retry once.
    raise ProviderError.of(
        ErrorClass.NO_IMAGE_RETURNED, f"200 without an image part: {shown}", secrets=secrets
    )


def error_from_response(response: httpx.Response, secrets: tuple[str | None, ...]) -> ProviderError:
    """Map a non-200 `{"error": {code, message, status, details}}` onto the taxonomy."""
    status = response.status_code
    body = _http.json_or_none(response)
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

    retry_after = google_retry_delay(details)
    # A wrong key is a 400 INVALID_ARGUMENT with reason API_KEY_INVALID, not a 401.
    if "API_KEY_INVALID" in reasons or status_name in ("UNAUTHENTICATED", "PERMISSION_DENIED"):
        return ProviderError.of(ErrorClass.AUTH, detail, secrets=secrets)
    if status == 429 or status_name == "RESOURCE_EXHAUSTED":
        if _is_daily_quota(details):
            # Waiting seconds cannot help with a per-day quota: fall back or alert.
            return ProviderError.of(
                ErrorClass.QUOTA_EXHAUSTED,
                detail,
                retry_after_s=retry_after or _http.retry_after_of(response.headers),
                secrets=secrets,
            )
        status = 429
    elif status_name == "DEADLINE_EXCEEDED":
        status = 504
    return _http.error_for_status(
        status, response.headers, detail, secrets, retry_after_s=retry_after
    )


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
