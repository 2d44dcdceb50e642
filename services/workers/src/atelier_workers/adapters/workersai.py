"""Cloudflare Workers AI: `POST /accounts/{account_id}/ai/run/{model}`.

Wire format: providers.md A.12. The account id is part of the profile's provider configuration
(`provider_config["account_id"]`), not a secret. Most models take JSON and answer either raw
image bytes (SDXL, SD 1.5, DreamShaper) or `{result: {image: <b64>}, success, errors}` (FLUX.1
schnell, Lucid Origin, Phoenix); FLUX.2 models take `multipart/form-data` even for a bare prompt.
Errors come as `{success: false, errors: [{code, message}]}`, sometimes inside an HTTP 200.
"""

from __future__ import annotations

import asyncio
import base64
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
    _json_or_none,
    _send,
    _with_id,
    retry_after_of,
)

DEFAULT_BASE_URL = "https://api.cloudflare.com/client/v4"
MIN_SIDE, MAX_SIDE = 256, 2048
MAX_REFERENCES_MULTIPART = 4  # FLUX.2 on Workers AI takes up to four input images
MAX_REFERENCES_JSON = 1  # img2img models take one init image
# Options passed through when set; the model's own schema decides which it takes (steps for
# FLUX, num_steps for Stable Diffusion...).
_OPTIONS = frozenset({"num_steps", "steps", "guidance", "strength"})
# Cloudflare error codes with a meaning beyond the HTTP status.
_CODE_CAPACITY = 3040  # "Capacity temporarily exceeded": their side, retry later
_CODE_DAILY_LIMIT = 4006  # free daily neuron allocation used up
_CODE_RATE_LIMITED = 3036  # "Account limited: Rate limited"
_INPUT_CODES = range(5000, 6000)  # input validation errors ("required properties at '/'...")
_AUTH_CODES = frozenset({10000, 9109, 10001})


class WorkersAIAdapter:
    name: str = "workersai"

    def max_images_per_call(self, model: str) -> int:
        return 1  # every text-to-image model on Workers AI returns a single image

    async def generate(self, request: ImageRequest, client: httpx.AsyncClient) -> GenerationOutput:
        url = self.url_of(request)
        try:
            async with asyncio.timeout(request.timeout_s):
                return await self._call(request, url, client)
        except TimeoutError as exc:
            raise ProviderError.of(
                ErrorClass.TIMEOUT, f"no complete answer within {request.timeout_s:g} s"
            ) from exc

    def url_of(self, request: ImageRequest) -> str:
        account_id = request.provider_config.get("account_id")
        if not isinstance(account_id, str) or not account_id.strip():
            raise ProviderError.of(
                ErrorClass.INVALID_REQUEST,
                "workersai needs provider_config account_id (the Cloudflare account id)",
            )
        base = (request.base_url or DEFAULT_BASE_URL).rstrip("/")
        return f"{base}/accounts/{account_id.strip()}/ai/run/{request.model}"

    def uses_multipart(self, request: ImageRequest) -> bool:
        forced = request.provider_config.get("input")
        if forced in ("json", "multipart"):
            return bool(forced == "multipart")
        return "/flux-2" in request.model

    def build_json(self, request: ImageRequest) -> dict[str, Any]:
        self._check(request, MAX_REFERENCES_JSON)
        width, height = workersai_dimensions(request.size)
        body: dict[str, Any] = {"prompt": request.prompt, "width": width, "height": height}
        if request.negative_prompt:
            body["negative_prompt"] = request.negative_prompt
        if request.seed is not None:
            body["seed"] = request.seed
        if request.reference_images:
            # The img2img schema's base64 form of its init image.
            body["image_b64"] = base64.b64encode(request.reference_images[0].data).decode()
        for key, value in request.options.items():
            if key in _OPTIONS and value is not None:
                body[key] = value
        return body

    def build_form(self, request: ImageRequest) -> list[tuple[str, Any]]:
        """FLUX.2's multipart fields. No negative prompt: FLUX has none."""
        self._check(request, MAX_REFERENCES_MULTIPART)
        width, height = workersai_dimensions(request.size)
        fields: list[tuple[str, Any]] = [
            ("prompt", (None, request.prompt)),
            ("width", (None, str(width))),
            ("height", (None, str(height))),
        ]
        if request.seed is not None:
            fields.append(("seed", (None, str(request.seed))))
        for key, value in request.options.items():
            if key in _OPTIONS and value is not None:
                fields.append((key, (None, str(value))))
        for index, ref in enumerate(request.reference_images):
            fields.append((f"input_image_{index}", (f"ref{index}", ref.data, ref.content_type)))
        return fields

    def _check(self, request: ImageRequest, max_references: int) -> None:
        if request.n != 1:
            raise ProviderError.of(ErrorClass.INVALID_REQUEST, "workersai makes one image per call")
        if not request.prompt:
            raise ProviderError.of(ErrorClass.INVALID_REQUEST, "prompt is empty")
        if len(request.reference_images) > max_references:
            raise ProviderError.of(
                ErrorClass.INVALID_REQUEST,
                f"{request.model} takes at most {max_references} reference images here, "
                f"not {len(request.reference_images)}",
            )

    async def _call(
        self, request: ImageRequest, url: str, client: httpx.AsyncClient
    ) -> GenerationOutput:
        headers = {"Authorization": f"Bearer {request.api_key}"} if request.api_key else {}
        secrets = (request.api_key,)
        if self.uses_multipart(request):
            fields = self.build_form(request)
            response = await _send(
                lambda: client.post(url, files=fields, headers=headers, timeout=request.timeout_s),
                secrets,
            )
        else:
            body = self.build_json(request)
            response = await _send(
                lambda: client.post(url, json=body, headers=headers, timeout=request.timeout_s),
                secrets,
            )
        request_id = response.headers.get("cf-ray")
        content_type = response.headers.get("content-type", "")
        if response.status_code == 200 and content_type.startswith("image/"):
            data = response.content
        else:
            data = _image_from_json(response, request_id, secrets)
        content_type, width, height = image_size_of(data)
        image = GeneratedImageData(data, content_type, width, height, seed=request.seed)
        return GenerationOutput(images=[image], usage={"images": 1}, provider_request_id=request_id)


def workersai_dimensions(size: str) -> tuple[int, int]:
    """Width and height each clamped to 256-2048 and rounded to a multiple of 16, the grid
    every image model there accepts."""
    width, height = parse_size(size)
    return _snap(width), _snap(height)


def _snap(side: int) -> int:
    # Half up (1000 → 1008), not Python's half-to-even round().
    return min(MAX_SIDE, max(MIN_SIDE, (side + 8) // 16 * 16))


def _image_from_json(
    response: httpx.Response, request_id: str | None, secrets: tuple[str | None, ...]
) -> bytes:
    payload = _json_or_none(response)
    payload = payload if isinstance(payload, dict) else None
    if response.status_code != 200 or payload is None or payload.get("success") is False:
        raise error_from_response(response, payload, secrets)
    result = payload.get("result")
    image = result.get("image") if isinstance(result, dict) else None
    if not isinstance(image, str) or not image:
        raise ProviderError.of(
            ErrorClass.NO_IMAGE_RETURNED, _with_id("200 without result.image", request_id)
        )
    return _decode_b64(image, request_id)


def error_from_response(
    response: httpx.Response, payload: dict[str, Any] | None, secrets: tuple[str | None, ...]
) -> ProviderError:
    """Map `{success: false, errors: [{code, message}]}` (or a non-JSON failure)."""
    status = response.status_code
    errors = payload.get("errors") if payload else None
    errors = [e for e in errors if isinstance(e, dict)] if isinstance(errors, list) else []
    codes = {e.get("code") for e in errors}
    message = "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors)
    if not message:
        message = response.text[:300] if payload is None else "no errors listed"
    detail = _with_id(f"HTTP {status} errors={message[:400]}", response.headers.get("cf-ray"))
    lowered = message.lower()

    def fail(error_class: ErrorClass, **extra: Any) -> ProviderError:
        return ProviderError.of(error_class, detail, secrets=secrets, **extra)

    if "nsfw" in lowered:
        # Workers AI's safety checker names the stage in its message [U: wording varies].
        stage = "output" if "output" in lowered or "image contains" in lowered else "input"
        return fail(ErrorClass.CONTENT_BLOCKED, stage=stage)
    if status in (401, 403) or codes & _AUTH_CODES:
        return fail(ErrorClass.AUTH)
    if status == 402 or _CODE_DAILY_LIMIT in codes or "daily free allocation" in lowered:
        return fail(ErrorClass.QUOTA_EXHAUSTED)
    if _CODE_CAPACITY in codes:
        return fail(ErrorClass.PROVIDER_UNAVAILABLE, retry_after_s=retry_after_of(response.headers))
    if status == 429 or _CODE_RATE_LIMITED in codes:
        return fail(ErrorClass.RATE_LIMITED, retry_after_s=retry_after_of(response.headers))
    if status in (408, 504):
        return fail(ErrorClass.TIMEOUT)
    if any(isinstance(code, int) and code in _INPUT_CODES for code in codes):
        return fail(ErrorClass.INVALID_REQUEST)
    if status >= 500 or status == 200:
        # A 200 that says success:false without a code we know: their side failed.
        return fail(ErrorClass.PROVIDER_UNAVAILABLE, retry_after_s=retry_after_of(response.headers))
    return fail(ErrorClass.INVALID_REQUEST)
