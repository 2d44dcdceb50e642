"""Stability AI v2beta Stable Image: `POST /stable-image/generate/{core|ultra|sd3}`, multipart.

Wire format and failure modes: providers.md A.4 and A.11. One image per call, chosen by aspect
ratio; seed and negative prompt supported. We ask for raw bytes (`Accept: image/*`), so the
outcome travels in headers: a `finish-reason: CONTENT_FILTERED` answer is an HTTP 200 carrying a
blurred image, which must become `content_blocked` (output), never a landed image.

Models: `core`, `ultra` (or `stable-image-core`/`-ultra`), `sd3` and the SD3.5 ids
(`sd3.5-large`, `sd3.5-large-turbo`, `sd3.5-medium`), which use the sd3 endpoint's `model`
field. Ultra and SD3 take one reference image (image-to-image, with `strength`).
"""

from __future__ import annotations

from typing import Any

import httpx

from atelier_contracts.errors import ErrorClass
from atelier_contracts.providers import (
    STABILITY_ASPECT_RATIOS,
    STABILITY_MAX_SEED,
    STABILITY_SD3_MODELS,
    capabilities,
    stability_endpoint,
)
from atelier_workers.adapters import _http
from atelier_workers.adapters.base import (
    GeneratedImageData,
    GenerationOutput,
    ImageRequest,
    ProviderError,
    parse_size,
)
from atelier_workers.adapters.sizes import pinned_ratio

_OUTPUT_FORMATS = frozenset({"png", "jpeg", "webp"})
# Options with a form field of their own (checked or mapped first); the endpoint's other options
# (the capability table's) pass through as they are.
_OWN_FIELDS = frozenset({"aspect_ratio", "output_format"})
_DEFAULT_STRENGTH = "0.7"  # keep the reference recognisable while letting the prompt steer


class StabilityAdapter(_http.HttpAdapter):
    name: str = "stability"

    async def _generate(self, request: ImageRequest, client: httpx.AsyncClient) -> GenerationOutput:
        endpoint, fields = self.build_form(request)
        return await self._call(request, endpoint, fields, client)

    def build_form(self, request: ImageRequest) -> tuple[str, list[tuple[str, Any]]]:
        """(endpoint, multipart fields); raises `invalid_request` instead of sending a bad one.

        Every field goes as a multipart part, even without an image: the API takes nothing else.
        """
        self.check_request(request)
        endpoint = stability_endpoint(request.model)
        if endpoint is None:
            raise ProviderError.of(
                ErrorClass.INVALID_REQUEST,
                f"unknown stability model {request.model!r}; use core, ultra, sd3 or "
                + ", ".join(sorted(STABILITY_SD3_MODELS)),
            )
        references = request.reference_images
        if len(references) > (capabilities(self.name, request.model).max_reference_images or 0):
            raise ProviderError.of(
                ErrorClass.INVALID_REQUEST,
                f"stability {endpoint} takes {'no' if endpoint == 'core' else 'one'} reference "
                f"image, not {len(references)}",
            )
        output_format = request.options.get("output_format", "png")
        if output_format not in _OUTPUT_FORMATS:
            raise ProviderError.of(
                ErrorClass.INVALID_REQUEST,
                f"option output_format={output_format!r} must be one of: png, jpeg, webp",
            )
        fields: list[tuple[str, Any]] = [("prompt", (None, request.prompt))]
        if request.negative_prompt:
            fields.append(("negative_prompt", (None, request.negative_prompt)))
        if request.seed is not None:
            if not 0 <= request.seed <= STABILITY_MAX_SEED:
                raise ProviderError.of(
                    ErrorClass.INVALID_REQUEST,
                    f"seed must be 0..{STABILITY_MAX_SEED}, not {request.seed}",
                )
            fields.append(("seed", (None, str(request.seed))))
        fields.append(("output_format", (None, output_format)))
        if endpoint == "sd3" and request.model != "sd3":
            fields.append(("model", (None, request.model)))
        if references:
            ref = references[0]
            if endpoint == "sd3":
                fields.append(("mode", (None, "image-to-image")))
            filename = f"reference{_extension(ref.content_type)}"
            fields.append(("image", (filename, ref.data, ref.content_type)))
            if "strength" not in request.options:
                fields.append(("strength", (None, _DEFAULT_STRENGTH)))
        else:
            # aspect_ratio is only valid for text-to-image; image-to-image keeps the input's.
            width, height = parse_size(request.size)
            ratio = pinned_ratio(request.options, STABILITY_ASPECT_RATIOS, width, height)
            fields.append(("aspect_ratio", (None, ratio)))
        for key, value in self.passed_options(request).items():
            if key in _OWN_FIELDS or (key == "strength" and not references):
                continue  # own fields are set above; strength without an image is a 400
            fields.append((key, (None, str(value))))
        return endpoint, fields

    async def _call(
        self,
        request: ImageRequest,
        endpoint: str,
        fields: list[tuple[str, Any]],
        client: httpx.AsyncClient,
    ) -> GenerationOutput:
        base = self.base_url(request)
        url = f"{base}/stable-image/generate/{endpoint}"
        headers = {"Accept": "image/*", **_http.bearer(request)}
        client_id = request.provider_config.get("client_id")
        if isinstance(client_id, str) and client_id:
            headers["stability-client-id"] = client_id
        secrets = (request.api_key,)
        response = await _http.send(
            lambda: client.post(url, files=fields, headers=headers, timeout=request.timeout_s),
            secrets,
        )
        request_id = response.headers.get("x-request-id")
        if response.status_code != 200:
            raise error_from_response(response, secrets)
        data, finish_reason, seed = _image_and_outcome(response, request_id)
        if seed is None and request.seed:
            # The one the form carried; 0 asks Stability for a random seed, which only it knows.
            seed = request.seed
        if finish_reason == "CONTENT_FILTERED":
            # The bytes are a blurred placeholder: showing them would be showing nothing.
            raise ProviderError.of(
                ErrorClass.CONTENT_BLOCKED,
                _http.with_id(
                    "200 with finish-reason CONTENT_FILTERED (blurred output)", request_id
                ),
                stage="output",
            )
        return GenerationOutput(
            images=[GeneratedImageData.decoded(data, seed=seed)],
            usage={"images": 1, "endpoint": endpoint},
            provider_request_id=request_id,
        )


def _image_and_outcome(
    response: httpx.Response, request_id: str | None
) -> tuple[bytes, str | None, int | None]:
    """(bytes, finish reason, seed) from an `image/*` answer or, if a proxy turned our Accept
    into JSON, from `{image, finish_reason, seed}`."""
    content_type = response.headers.get("content-type", "")
    if content_type.startswith("application/json"):
        payload = _http.json_or_none(response)
        payload = payload if isinstance(payload, dict) else {}
        image = payload.get("image")
        if not isinstance(image, str):
            raise ProviderError.of(
                ErrorClass.NO_IMAGE_RETURNED, _http.with_id("200 JSON without `image`", request_id)
            )
        finish = payload.get("finish_reason")
        return (
            _http.decode_b64(image, request_id),
            finish if isinstance(finish, str) else None,
            _int_or_none(payload.get("seed")),
        )
    return (
        response.content,
        response.headers.get("finish-reason"),
        _int_or_none(response.headers.get("seed")),
    )


def error_from_response(response: httpx.Response, secrets: tuple[str | None, ...]) -> ProviderError:
    """Map a non-200 `{"id", "name", "errors": [...]}` onto the taxonomy (A.4)."""
    status = response.status_code
    body = _http.json_or_none(response)
    body = body if isinstance(body, dict) else {}
    name = body.get("name") if isinstance(body.get("name"), str) else None
    errors = body.get("errors")
    messages = [str(e) for e in errors] if isinstance(errors, list) else []
    if not messages and not body:
        messages = [response.text[:300]]
    parts = [f"HTTP {status}"] + ([f"name={name}"] if name else [])
    if messages:
        parts.append("errors=" + "; ".join(m[:200] for m in messages))
    request_id = body.get("id") if isinstance(body.get("id"), str) else None
    detail = _http.with_id(" ".join(parts), request_id or response.headers.get("x-request-id"))

    if name == "content_moderation" or status == 403:
        return ProviderError.of(ErrorClass.CONTENT_BLOCKED, detail, stage="input", secrets=secrets)
    return _http.error_for_status(status, response.headers, detail, secrets)


def _extension(content_type: str) -> str:
    return {"image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp"}.get(content_type, "")


def _int_or_none(raw: Any) -> int | None:
    try:
        return int(raw) if raw is not None and not isinstance(raw, bool) else None
    except (TypeError, ValueError):
        return None
