"""Cloudflare Workers AI: `POST /accounts/{account_id}/ai/run/{model}`.

Wire format: providers.md A.12. The account id is part of the profile's provider configuration
(`provider_config["account_id"]`), not a secret. Most models take JSON and answer either raw
image bytes (SDXL, SD 1.5, DreamShaper) or `{result: {image: <b64>}, success, errors}` (FLUX.1
schnell, Lucid Origin, Phoenix); FLUX.2 models take `multipart/form-data` even for a bare prompt.
Errors come as `{success: false, errors: [{code, message}]}`, sometimes inside an HTTP 200.
"""

from __future__ import annotations

import base64
from typing import Any

import httpx

from atelier_contracts.errors import ErrorClass
from atelier_contracts.providers import WORKERSAI_MAX_SIDE
from atelier_workers.adapters import _http
from atelier_workers.adapters.base import (
    GeneratedImageData,
    GenerationOutput,
    ImageRequest,
    ProviderError,
    parse_size,
)

MIN_SIDE, MAX_SIDE = 256, WORKERSAI_MAX_SIDE
MAX_REFERENCES_MULTIPART = 4  # FLUX.2 on Workers AI takes up to four input images
MAX_REFERENCES_JSON = 1  # img2img models take one init image
# Cloudflare error codes with a meaning beyond the HTTP status.
_CODE_CAPACITY = 3040  # "Capacity temporarily exceeded": their side, retry later
_CODE_DAILY_LIMIT = 4006  # free daily neuron allocation used up
_CODE_RATE_LIMITED = 3036  # "Account limited: Rate limited"
_INPUT_CODES = range(5000, 6000)  # input validation errors ("required properties at '/'...")
_AUTH_CODES = frozenset({10000, 9109, 10001})


class WorkersAIAdapter(_http.HttpAdapter):
    name: str = "workersai"

    async def _generate(self, request: ImageRequest, client: httpx.AsyncClient) -> GenerationOutput:
        return await self._call(request, self.url_of(request), client)

    def url_of(self, request: ImageRequest) -> str:
        account_id = request.provider_config.get("account_id")
        if not isinstance(account_id, str) or not account_id.strip():
            raise ProviderError.of(
                ErrorClass.INVALID_REQUEST,
                "workersai needs provider_config account_id (the Cloudflare account id)",
            )
        base = self.base_url(request)
        return f"{base}/accounts/{account_id.strip()}/ai/run/{request.model}"

    def uses_multipart(self, request: ImageRequest) -> bool:
        forced = request.provider_config.get("input")
        if forced in ("json", "multipart"):
            return bool(forced == "multipart")
        return "/flux-2" in request.model

    def build_json(self, request: ImageRequest) -> dict[str, Any]:
        self.check_request(request, MAX_REFERENCES_JSON)
        width, height = workersai_dimensions(request.size)
        body: dict[str, Any] = {"prompt": request.prompt, "width": width, "height": height}
        if request.negative_prompt:
            body["negative_prompt"] = request.negative_prompt
        if request.seed is not None:
            body["seed"] = request.seed
        if request.reference_images:
            # The img2img schema's base64 form of its init image.
            body["image_b64"] = base64.b64encode(request.reference_images[0].data).decode()
        body.update(self.passed_options(request))
        return body

    def build_form(self, request: ImageRequest) -> list[tuple[str, Any]]:
        """FLUX.2's multipart fields. No negative prompt: FLUX has none."""
        self.check_request(request, MAX_REFERENCES_MULTIPART)
        width, height = workersai_dimensions(request.size)
        fields: list[tuple[str, Any]] = [
            ("prompt", (None, request.prompt)),
            ("width", (None, str(width))),
            ("height", (None, str(height))),
        ]
        if request.seed is not None:
            fields.append(("seed", (None, str(request.seed))))
        fields += [(key, (None, str(value))) for key, value in self.passed_options(request).items()]
        for index, ref in enumerate(request.reference_images):
            fields.append((f"input_image_{index}", (f"ref{index}", ref.data, ref.content_type)))
        return fields

    async def _call(
        self, request: ImageRequest, url: str, client: httpx.AsyncClient
    ) -> GenerationOutput:
        payload: dict[str, Any] = (
            {"files": self.build_form(request)}
            if self.uses_multipart(request)
            else {"json": self.build_json(request)}
        )
        secrets = (request.api_key,)
        response = await _http.send(
            lambda: client.post(
                url, headers=_http.bearer(request), timeout=request.timeout_s, **payload
            ),
            secrets,
        )
        request_id = response.headers.get("cf-ray")
        content_type = response.headers.get("content-type", "")
        if response.status_code == 200 and content_type.startswith("image/"):
            data = response.content
        else:
            data = _image_from_json(response, request_id, secrets)
        image = GeneratedImageData.decoded(data, seed=request.seed)
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
    payload = _http.json_or_none(response)
    payload = payload if isinstance(payload, dict) else None
    if response.status_code != 200 or payload is None or payload.get("success") is False:
        raise error_from_response(response, payload, secrets)
    result = payload.get("result")
    image = result.get("image") if isinstance(result, dict) else None
    if not isinstance(image, str) or not image:
        raise ProviderError.of(
            ErrorClass.NO_IMAGE_RETURNED, _http.with_id("200 without result.image", request_id)
        )
    return _http.decode_b64(image, request_id)


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
    detail = _http.with_id(f"HTTP {status} errors={message[:400]}", response.headers.get("cf-ray"))
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
        return fail(
            ErrorClass.PROVIDER_UNAVAILABLE, retry_after_s=_http.retry_after_of(response.headers)
        )
    if status == 429 or _CODE_RATE_LIMITED in codes:
        return fail(ErrorClass.RATE_LIMITED, retry_after_s=_http.retry_after_of(response.headers))
    if status not in (408, 504) and any(
        isinstance(code, int) and code in _INPUT_CODES for code in codes
    ):
        return fail(ErrorClass.INVALID_REQUEST)
    # A 200 that says success:false without a code we know: their side failed.
    return _http.error_for_status(
        status if status != 200 else 502, response.headers, detail, secrets
    )
