"""OpenAI Images (and the many gateways that copy it): `POST /images/generations`, and
`POST /images/edits` (multipart, one `image[]` part per reference image) when a GPT-image model
is given reference images.

Wire format and failure modes: providers.md A.1 and A.11; every body we send must validate
against `CreateImageRequest` in shared/reference/openai-images-openapi.json, so options are
filtered per model family and checked against the schema's enums before anything is sent.
"""

from __future__ import annotations

from typing import Any

import httpx

from atelier_contracts.errors import ErrorClass
from atelier_contracts.providers import capabilities
from atelier_workers.adapters import _http
from atelier_workers.adapters.base import (
    GeneratedImageData,
    GenerationOutput,
    ImageRequest,
    ProviderError,
)

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

# Unknown models are usually OpenAI-compatible gateways; let them judge every option.
_ANY_MODEL_OPTIONS = frozenset(_ENUMS) | frozenset(_INT_OPTIONS)


def _options_for(model: str) -> frozenset[str]:
    """The options `model`'s family understands (the capability table's). The real API answers
    400 "Unknown parameter" to e.g. `response_format` on GPT-image models, so an option a
    profile set for another model is dropped rather than turned into a failed generation."""
    options = capabilities("openai", model).options
    return frozenset(options) if options is not None else _ANY_MODEL_OPTIONS


_REFERENCE_EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}


class OpenAIAdapter(_http.HttpAdapter):
    name: str = "openai"

    async def _generate(self, request: ImageRequest, client: httpx.AsyncClient) -> GenerationOutput:
        return await self._call(request, self.build_body(request), client)

    def build_body(self, request: ImageRequest) -> dict[str, Any]:
        """The JSON body for one call; raises `invalid_request` instead of sending a bad one.

        Seed and negative prompt are never sent: OpenAI has neither, and rejects unknown fields.
        """
        self.check_request(request)
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
        if _takes_response_format(request.model) and "response_format" not in body:
            # Ask for base64 (DALL·E): the default, `url`, costs a second round trip and expires.
            body["response_format"] = "b64_json"
        return body

    async def _call(
        self, request: ImageRequest, body: dict[str, Any], client: httpx.AsyncClient
    ) -> GenerationOutput:
        base = self.base_url(request)
        # No key means a keyless OpenAI-compatible gateway: send no header rather than "Bearer ".
        headers = _http.bearer(request)
        secrets = (request.api_key,)
        if request.reference_images and takes_reference_images(request.model):
            # Reference images go to the edits endpoint as files; other models get the prompt
            # alone (their profiles should say `max_reference_images: 0`).
            response = await _http.send(
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
            response = await _http.send(
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
        payload = _http.json_object(response, request_id)
        # One after another: only dall-e-2 returns several URLs, and a failed download should
        # stop the rest rather than leave them running.
        images = [
            await _image_from_item(item, client, request.timeout_s, request_id)
            for item in _data_items(payload, request_id)
        ]
        return GenerationOutput(images, _http.dict_of(payload.get("usage")), request_id)


def takes_reference_images(model: str) -> bool:
    """GPT-image models take up to 16 reference images on `/images/edits` (the capability
    table's); DALL·E 2's edit is an inpainting of one square PNG, not a reference, and DALL·E 3
    has no edit at all."""
    return bool(capabilities("openai", model).max_reference_images)


def edit_fields(body: dict[str, Any]) -> dict[str, str]:
    """A GPT-image generation body as `/images/edits` form fields (multipart sends text);
    the edits endpoint knows no `moderation`, everything else such a body holds it takes too."""
    return {key: str(value) for key, value in body.items() if key != "moderation"}


def reference_files(request: ImageRequest) -> list[tuple[str, tuple[str, bytes, str]]]:
    """One `image[]` part per reference image, in order, named so the type is plain (at most
    as many as the model takes)."""
    limit = capabilities("openai", request.model).max_reference_images
    return [
        (
            "image[]",
            (
                f"reference-{number}.{_REFERENCE_EXTENSIONS.get(image.content_type, 'png')}",
                image.data,
                image.content_type,
            ),
        )
        for number, image in enumerate(request.reference_images[:limit], start=1)
    ]


def error_from_response(response: httpx.Response, secrets: tuple[str | None, ...]) -> ProviderError:
    """Map a non-200 answer onto the shared taxonomy (providers.md A.1 and A.11)."""
    status = response.status_code
    body = _http.json_or_none(response)
    error = body.get("error") if isinstance(body, dict) else None
    error = error if isinstance(error, dict) else {}
    code, err_type = error.get("code"), error.get("type")
    detail = _detail(response, error)

    if code == "moderation_blocked" or _moderation_details(body, error):
        stage = _moderation_stage(body, error)
        categories = (_moderation_details(body, error) or {}).get("categories")
        return ProviderError.of(
            ErrorClass.CONTENT_BLOCKED,
            detail,
            stage=stage,
            category=categories if isinstance(categories, list) else None,
            secrets=secrets,
        )
    if code == "content_policy_violation":
        return ProviderError.of(ErrorClass.CONTENT_BLOCKED, detail, stage="input", secrets=secrets)
    if "insufficient_quota" in (code, err_type) and status not in (401, 403):
        return ProviderError.of(ErrorClass.QUOTA_EXHAUSTED, detail, secrets=secrets)
    return _http.error_for_status(status, response.headers, detail, secrets)


async def _image_from_item(
    item: dict[str, Any], client: httpx.AsyncClient, timeout_s: float, request_id: str | None
) -> GeneratedImageData:
    revised = item.get("revised_prompt")
    if isinstance(item.get("b64_json"), str):
        data = _http.decode_b64(item["b64_json"], request_id)
    elif isinstance(item.get("url"), str):
        data = await _http.download(item["url"], client, timeout_s)
    else:
        raise ProviderError.of(
            ErrorClass.NO_IMAGE_RETURNED,
            _http.with_id("item has neither b64_json nor url", request_id),
        )
    return GeneratedImageData.decoded(
        data, revised_prompt=revised if isinstance(revised, str) else None
    )


def _data_items(payload: dict[str, Any], request_id: str | None) -> list[dict[str, Any]]:
    data = payload.get("data")
    items = [item for item in data if isinstance(item, dict)] if isinstance(data, list) else []
    if not items:
        raise ProviderError.of(
            ErrorClass.NO_IMAGE_RETURNED, _http.with_id("200 with no images in `data`", request_id)
        )
    return items


def _detail(response: httpx.Response, error: dict[str, Any]) -> str:
    """Provider text for admins: status, type, code, param, message and request id."""
    parts = [f"HTTP {response.status_code}"]
    parts += [f"{key}={error[key]}" for key in ("type", "code", "param") if error.get(key)]
    message = error.get("message") if error else response.text[:300]
    if message:
        parts.append(f"message={message}")
    return _http.with_id(" ".join(parts), response.headers.get("x-request-id"))


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


def _takes_response_format(model: str) -> bool:
    options = capabilities("openai", model).options
    return options is not None and "response_format" in options


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
