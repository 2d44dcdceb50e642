"""fal.ai queue API: submit → status → result, following the URLs the submit answer returns.

Wire format and failure modes: providers.md A.6 and A.11. The request id and its status,
response and cancel URLs are saved in the task's `ResumeStore` before the first status poll, so
a restarted worker picks the same request up again; results are kept only minutes (6 for
anything of 10 KB or more), so they are fetched and their image URLs downloaded at once.

Profile settings (`provider_config`), all optional:
- `input`: extra model inputs merged into the body (`num_inference_steps`, `loras`, ...).
- `size_field`: `"image_size"` (default; sent as `{width, height}`) or `"aspect_ratio"`.
- `reference_field`: where reference images go, as data URIs (default `"image_urls"`, a
  list); `reference_as_list`: force a list (true) or the first image only (false); by default
  a name ending in `s` takes a list and one such as `"image_url"` the first image.
- `poll_interval_s`: seconds between status polls (default 1).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import httpx

from atelier_contracts.errors import ErrorClass
from atelier_contracts.providers import images_per_call
from atelier_workers.adapters.base import (
    GeneratedImageData,
    GenerationOutput,
    ImageRequest,
    ProviderError,
    image_size_of,
    parse_size,
)
from atelier_workers.adapters.openai import retry_after_of

log = logging.getLogger("atelier.workers.falai")

DEFAULT_BASE_URL = "https://queue.fal.run"
DEFAULT_POLL_INTERVAL_S = 1.0
# A few failed polls in a row (a 502 from fal's edge, a reset connection) are ridden out; the
# request itself is safe on fal's side and its handle is saved, so giving up early only costs
# a retry.
MAX_POLL_FAILURES = 3
# Inputs most fal image apps share; anything else goes through `provider_config["input"]`.
_OPTION_INPUTS = frozenset(
    {
        "num_inference_steps",
        "guidance_scale",
        "enable_safety_checker",
        "safety_tolerance",
        "output_format",
        "acceleration",
        "strength",
    }
)
_ASPECT_RATIOS = ("21:9", "16:9", "3:2", "4:3", "5:4", "1:1", "4:5", "3:4", "2:3", "9:16", "9:21")
_GONE = (404, 410)


class _RequestGone(Exception):
    """fal no longer knows the saved request (unknown id, or its result already expired)."""


class FalAdapter:
    name: str = "falai"

    def max_images_per_call(self, model: str) -> int:
        return images_per_call(self.name, model)

    async def generate(self, request: ImageRequest, client: httpx.AsyncClient) -> GenerationOutput:
        try:
            async with asyncio.timeout(request.timeout_s):
                return await self._generate(request, client)
        except TimeoutError as exc:
            # The handle stays saved: a retry resumes this request instead of paying again.
            raise ProviderError.of(
                ErrorClass.TIMEOUT, f"no result within {request.timeout_s:g} s"
            ) from exc

    async def cancel(
        self, request: ImageRequest, handle: dict[str, Any], client: httpx.AsyncClient
    ) -> None:
        """`PUT cancel_url`; fal stops requests still queued, finished ones stay finished."""
        cancel_url = handle.get("cancel_url")
        if not isinstance(cancel_url, str):
            return
        secrets = (request.api_key,)
        response = await _send(
            lambda: client.put(cancel_url, headers=_auth(request), timeout=30.0), secrets
        )
        if response.status_code in (200, 202):
            return
        body = _json_or_none(response)
        status = body.get("status") if isinstance(body, dict) else None
        if response.status_code == 400 and status == "ALREADY_COMPLETED":
            return  # nothing left to stop
        if response.status_code in _GONE:
            return
        raise error_from_response(response, secrets)

    def build_body(self, request: ImageRequest) -> dict[str, Any]:
        limit = self.max_images_per_call(request.model)
        if not 1 <= request.n <= limit:
            raise ProviderError.of(
                ErrorClass.INVALID_REQUEST, f"fal takes n from 1 to {limit} per call"
            )
        if not request.prompt:
            raise ProviderError.of(ErrorClass.INVALID_REQUEST, "prompt is empty")
        width, height = parse_size(request.size)
        config = request.provider_config
        body: dict[str, Any] = dict(_dict_setting(config, "input"))
        body["prompt"] = request.prompt
        body["num_images"] = request.n
        size_field = config.get("size_field", "image_size")
        if size_field == "aspect_ratio":
            body["aspect_ratio"] = nearest_aspect_ratio(width, height)
        elif size_field == "image_size":
            body["image_size"] = {"width": width, "height": height}
        else:
            raise ProviderError.of(
                ErrorClass.INVALID_REQUEST,
                f"provider_config.size_field={size_field!r}; use image_size or aspect_ratio",
            )
        if request.seed is not None:
            body["seed"] = request.seed
        if request.negative_prompt:
            body["negative_prompt"] = request.negative_prompt
        for key, value in request.options.items():
            if key in _OPTION_INPUTS and value is not None:
                body[key] = value
        if request.reference_images:
            field = config.get("reference_field", "image_urls")
            if not isinstance(field, str) or not field:
                raise ProviderError.of(
                    ErrorClass.INVALID_REQUEST, "provider_config.reference_field must be a name"
                )
            as_list = config.get("reference_as_list", field.endswith("s"))
            uris = [_data_uri(ref.data, ref.content_type) for ref in request.reference_images]
            if not as_list and len(uris) > 1:
                raise ProviderError.of(
                    ErrorClass.INVALID_REQUEST,
                    f"{field} takes one reference image, not {len(uris)}",
                )
            body[field] = uris if as_list else uris[0]
        return body

    async def _generate(self, request: ImageRequest, client: httpx.AsyncClient) -> GenerationOutput:
        saved = _handle_of(await request.resume.load())
        if saved is not None:
            try:
                return await self._finish(request, saved, client)
            except _RequestGone:
                log.info(
                    "saved fal request is gone; submitting again",
                    extra={"request_id": saved["request_id"]},
                )
        handle = await self._submit(request, self.build_body(request), client)
        # Saved before waiting: a worker killed from here on resumes this very request.
        await request.resume.save(handle)
        try:
            return await self._finish(request, handle, client)
        except _RequestGone as exc:
            raise ProviderError.of(
                ErrorClass.PROVIDER_UNAVAILABLE,
                f"fal lost request {handle['request_id']} right after accepting it",
            ) from exc

    async def _submit(
        self, request: ImageRequest, body: dict[str, Any], client: httpx.AsyncClient
    ) -> dict[str, Any]:
        base = (request.base_url or DEFAULT_BASE_URL).rstrip("/")
        model = request.model.strip("/")
        if not model:
            raise ProviderError.of(ErrorClass.INVALID_REQUEST, "no fal app id (owner/app) given")
        secrets = (request.api_key,)
        response = await _send(
            lambda: client.post(
                f"{base}/{model}", json=body, headers=_auth(request), timeout=request.timeout_s
            ),
            secrets,
        )
        if response.status_code not in (200, 201, 202):
            raise error_from_response(response, secrets)
        payload = _json_or_none(response)
        request_id = payload.get("request_id") if isinstance(payload, dict) else None
        if not isinstance(payload, dict) or not isinstance(request_id, str):
            raise ProviderError.of(
                ErrorClass.PROVIDER_UNAVAILABLE,
                f"fal accepted the request without a request_id: {response.text[:200]!r}",
            )
        # fal's own URLs are authoritative (they drop the app's subpath); built ones are only a
        # fallback for gateways that omit them.
        app_base = f"{base}/{'/'.join(model.split('/')[:2])}/requests/{request_id}"
        return {
            "provider": self.name,
            "request_id": request_id,
            "status_url": _url_or(payload.get("status_url"), f"{app_base}/status"),
            "response_url": _url_or(payload.get("response_url"), app_base),
            "cancel_url": _url_or(payload.get("cancel_url"), f"{app_base}/cancel"),
        }

    async def _finish(
        self, request: ImageRequest, handle: dict[str, Any], client: httpx.AsyncClient
    ) -> GenerationOutput:
        await self._wait_until_completed(request, handle, client)
        result = await self._fetch_result(request, handle, client)
        try:
            return await _output_from(result, request, client, handle["request_id"])
        except ProviderError as exc:
            if exc.error_class in (ErrorClass.CONTENT_BLOCKED, ErrorClass.NO_IMAGE_RETURNED):
                # The request ended for good; a retry must submit anew, not resume it. (A 5xx
                # while downloading keeps the handle: the result is still there to fetch.)
                await request.resume.save({})
            raise

    async def _wait_until_completed(
        self, request: ImageRequest, handle: dict[str, Any], client: httpx.AsyncClient
    ) -> None:
        interval = _poll_interval(request.provider_config)
        last_reported: str | None = None
        failures = 0
        while True:
            try:
                payload = await self._poll_status(request, handle, client)
                failures = 0
            except ProviderError as exc:
                # Ride out a few hiccups of fal's edge: the request itself is safe over there.
                failures += 1
                if exc.error_class is not ErrorClass.PROVIDER_UNAVAILABLE:
                    raise
                if failures >= MAX_POLL_FAILURES:
                    raise
                await asyncio.sleep(interval)
                continue
            if payload is None:  # rate limited; _poll_status already waited
                continue
            status = str(payload.get("status", ""))
            if status == "COMPLETED":
                return
            if "CANCEL" in status:
                await request.resume.save({})
                raise ProviderError.of(ErrorClass.CANCELLED, f"fal request {status.lower()}")
            detail = _progress_detail(status, payload)
            if detail != last_reported:
                last_reported = detail
                await report_progress(request, None, detail)
            await asyncio.sleep(interval)

    async def _poll_status(
        self, request: ImageRequest, handle: dict[str, Any], client: httpx.AsyncClient
    ) -> dict[str, Any] | None:
        """One status poll: the status object, or None after waiting out a 429."""
        secrets = (request.api_key,)
        response = await _send(
            lambda: client.get(
                handle["status_url"], headers=_auth(request), timeout=request.timeout_s
            ),
            secrets,
        )
        if response.status_code in _GONE:
            raise _RequestGone
        if response.status_code == 429:
            interval = _poll_interval(request.provider_config)
            await asyncio.sleep(max(retry_after_of(response.headers) or 0.0, interval))
            return None
        if response.status_code != 200:
            raise error_from_response(response, secrets)
        payload = _json_or_none(response)
        return payload if isinstance(payload, dict) else {}

    async def _fetch_result(
        self, request: ImageRequest, handle: dict[str, Any], client: httpx.AsyncClient
    ) -> dict[str, Any]:
        secrets = (request.api_key,)
        response = await _send(
            lambda: client.get(
                handle["response_url"], headers=_auth(request), timeout=request.timeout_s
            ),
            secrets,
        )
        if response.status_code in _GONE:
            raise _RequestGone
        if response.status_code != 200:
            # The model's own failure (or a cancellation): final, so forget the handle.
            await request.resume.save({})
            raise error_from_response(response, secrets, after_run=True)
        payload = _json_or_none(response)
        if not isinstance(payload, dict):
            raise ProviderError.of(
                ErrorClass.NO_IMAGE_RETURNED,
                f"fal result is not a JSON object: {response.text[:200]!r}",
            )
        return payload


def error_from_response(
    response: httpx.Response, secrets: tuple[str | None, ...], *, after_run: bool = False
) -> ProviderError:
    """Map a fal answer other than success onto the shared taxonomy.

    `after_run` marks a result fetch: fal returns the model's own status there, so a 5xx means
    the model run failed rather than fal's front door.
    """
    status = response.status_code
    body = _json_or_none(response)
    detail_field = body.get("detail") if isinstance(body, dict) else None
    error_types = _error_types(detail_field)
    text = _detail_text(response, detail_field)

    def fail(error_class: ErrorClass, **extra: Any) -> ProviderError:
        return ProviderError.of(error_class, text, secrets=secrets, **extra)

    if "content_policy_violation" in error_types:
        return fail(ErrorClass.CONTENT_BLOCKED, stage="input")
    if "no_media_generated" in error_types:
        return fail(ErrorClass.NO_IMAGE_RETURNED)
    lowered = text.lower()
    if status == 402 or "exhausted balance" in lowered or "user is locked" in lowered:
        return fail(ErrorClass.QUOTA_EXHAUSTED)
    if status in (401, 403):
        return fail(ErrorClass.AUTH)
    if status == 429:
        return fail(ErrorClass.RATE_LIMITED, retry_after_s=retry_after_of(response.headers))
    if after_run and "cancel" in lowered:
        return fail(ErrorClass.CANCELLED)
    if status in (408, 504):
        return fail(ErrorClass.TIMEOUT)
    if status >= 500:
        return fail(ErrorClass.PROVIDER_UNAVAILABLE, retry_after_s=retry_after_of(response.headers))
    return fail(ErrorClass.INVALID_REQUEST)


def nearest_aspect_ratio(width: int, height: int) -> str:
    """The common `W:H` ratio closest to the requested size (compared on a log scale)."""
    target = math.log(width / height)

    def distance(ratio: str) -> float:
        w, h = ratio.split(":")
        return abs(math.log(int(w) / int(h)) - target)

    return min(_ASPECT_RATIOS, key=distance)


async def report_progress(request: ImageRequest, fraction: float | None, detail: str) -> None:
    """Hand provider progress to the worker, if it listens (an `on_progress` coroutine
    function on the request); otherwise it only reaches the debug log."""
    log.debug("fal progress: %s", detail)
    hook = getattr(request, "on_progress", None)
    if hook is None:
        return
    try:
        await hook(fraction, detail)
    except Exception:  # progress is a nicety; it must never fail a generation
        log.warning("progress hook failed", exc_info=True)


async def _output_from(
    result: dict[str, Any], request: ImageRequest, client: httpx.AsyncClient, request_id: str
) -> GenerationOutput:
    items = _image_items(result)
    flags = result.get("has_nsfw_concepts")
    flags = flags if isinstance(flags, list) else []
    kept = [item for index, item in enumerate(items) if not (index < len(flags) and flags[index])]
    if items and not kept:
        raise ProviderError.of(
            ErrorClass.CONTENT_BLOCKED,
            f"fal's safety checker flagged every image (request_id={request_id})",
            stage="output",
        )
    if not kept:
        raise ProviderError.of(
            ErrorClass.NO_IMAGE_RETURNED, f"fal result has no images (request_id={request_id})"
        )
    if len(kept) < len(items):
        log.warning(
            "fal flagged some images; returning the rest",
            extra={"request_id": request_id, "flagged": len(items) - len(kept)},
        )
    seed = result.get("seed")
    # fal reports one seed per call; it reproduces an image only when the call made one.
    image_seed = seed if isinstance(seed, int) and request.n == 1 else None
    images: list[GeneratedImageData] = []
    for item in kept:
        data = await _fetch_image(item["url"], client, request.timeout_s)
        content_type, width, height = image_size_of(data)
        images.append(
            GeneratedImageData(
                data=data, content_type=content_type, width=width, height=height, seed=image_seed
            )
        )
    timings = result.get("timings")
    usage: dict[str, Any] = {"images": len(images)}
    if isinstance(timings, dict):
        usage["timings"] = timings
    return GenerationOutput(images=images, usage=usage, provider_request_id=request_id)


def _image_items(result: dict[str, Any]) -> list[dict[str, Any]]:
    raw = result.get("images")
    if raw is None and isinstance(result.get("image"), dict):
        raw = [result["image"]]  # some apps return a single `image`
    if not isinstance(raw, list):
        return []
    return [item for item in raw if isinstance(item, dict) and isinstance(item.get("url"), str)]


async def _fetch_image(url: str, client: httpx.AsyncClient, timeout_s: float) -> bytes:
    """Download a result image now (or decode it, when `sync_mode` made it a data URI).

    No Authorization header: fal's media URLs are public CDN links that must never see the key.
    """
    if url.startswith("data:"):
        try:
            return base64.b64decode(url.split(",", 1)[1], validate=True)
        except (IndexError, binascii.Error, ValueError) as exc:
            raise ProviderError.of(
                ErrorClass.NO_IMAGE_RETURNED, f"fal image data URI is not base64: {exc}"
            ) from exc
    response = await _send(lambda: client.get(url, timeout=timeout_s, follow_redirects=True), ())
    shown = url.split("?", 1)[0]
    if response.status_code in _GONE:
        raise ProviderError.of(
            ErrorClass.NO_IMAGE_RETURNED,
            f"image URL {shown} answered {response.status_code} (expired or removed)",
        )
    if response.status_code != 200:
        error_class = (
            ErrorClass.PROVIDER_UNAVAILABLE
            if response.status_code >= 500
            else ErrorClass.NO_IMAGE_RETURNED
        )
        raise ProviderError.of(error_class, f"image URL {shown} answered {response.status_code}")
    return response.content


def _progress_detail(status: str, payload: dict[str, Any]) -> str:
    if status == "IN_QUEUE":
        position = payload.get("queue_position")
        return f"queued at position {position}" if isinstance(position, int) else "queued"
    if status == "IN_PROGRESS":
        return "running"
    return status.lower() or "waiting"


def _handle_of(saved: dict[str, Any] | None) -> dict[str, Any] | None:
    if not saved or saved.get("provider") != "falai":
        return None
    keys = ("request_id", "status_url", "response_url", "cancel_url")
    if not all(isinstance(saved.get(key), str) for key in keys):
        return None
    return saved


def _auth(request: ImageRequest) -> dict[str, str]:
    return {"Authorization": f"Key {request.api_key}"} if request.api_key else {}


def _url_or(value: Any, fallback: str) -> str:
    if isinstance(value, str) and urlsplit(value).scheme in ("http", "https"):
        return value
    return fallback


def _error_types(detail_field: Any) -> set[str]:
    if not isinstance(detail_field, list):
        return set()
    return {str(item["type"]) for item in detail_field if isinstance(item, dict) and "type" in item}


def _detail_text(response: httpx.Response, detail_field: Any) -> str:
    parts = [f"HTTP {response.status_code}"]
    if isinstance(detail_field, list):
        for item in detail_field[:5]:
            if isinstance(item, dict):
                loc = ".".join(str(part) for part in item.get("loc", []) if part != "body")
                parts.append(f"[{item.get('type', '?')}] {loc}: {item.get('msg', '')}".strip())
    elif detail_field is not None:
        parts.append(str(detail_field)[:300])
    else:
        parts.append(response.text[:300])
    request_id = response.headers.get("x-fal-request-id")
    text = " ".join(part for part in parts if part)
    return f"{text} (request_id={request_id})" if request_id else text


def _data_uri(data: bytes, content_type: str) -> str:
    return f"data:{content_type};base64,{base64.b64encode(data).decode('ascii')}"


def _dict_setting(config: dict[str, Any], key: str) -> dict[str, Any]:
    value = config.get(key, {})
    if not isinstance(value, dict):
        raise ProviderError.of(ErrorClass.INVALID_REQUEST, f"provider_config.{key} must be a map")
    return value


def _poll_interval(config: dict[str, Any]) -> float:
    raw = config.get("poll_interval_s", DEFAULT_POLL_INTERVAL_S)
    with contextlib.suppress(TypeError, ValueError):
        value = float(raw)
        if value > 0:
            return value
    raise ProviderError.of(
        ErrorClass.INVALID_REQUEST, f"provider_config.poll_interval_s={raw!r} must be > 0"
    )


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None


async def _send(
    call: Callable[[], Awaitable[httpx.Response]], secrets: tuple[str | None, ...]
) -> httpx.Response:
    """Run one HTTP call, turning transport failures into `ProviderError`."""
    try:
        return await call()
    except httpx.TimeoutException as exc:
        raise ProviderError.of(
            ErrorClass.TIMEOUT, f"{type(exc).__name__}: {exc}", secrets=secrets
        ) from exc
    except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
        raise ProviderError.of(
            ErrorClass.INVALID_REQUEST, f"{type(exc).__name__}: {exc}", secrets=secrets
        ) from exc
    except httpx.HTTPError as exc:
        raise ProviderError.of(
            ErrorClass.PROVIDER_UNAVAILABLE, f"{type(exc).__name__}: {exc}", secrets=secrets
        ) from exc
