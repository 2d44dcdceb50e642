"""fal.ai queue API: submit → status → result, following the URLs the submit answer returns.

Wire format and failure modes: providers.md A.6 and A.11. The request id and its status,
response and cancel URLs are saved in the task's `ResumeStore` before the first status poll, so
a restarted worker picks the same request up again; results are kept only minutes (6 for
anything of 10 KB or more), so they are fetched and their image URLs downloaded at once. A
status answer is any 2xx (fal may answer 202 while a request waits) naming a state fal
documents; any other body fails the poll.

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
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import httpx

from atelier_contracts.errors import ErrorClass
from atelier_workers.adapters import _http
from atelier_workers.adapters.base import (
    GeneratedImageData,
    GenerationOutput,
    ImageRequest,
    ProviderError,
)
from atelier_workers.adapters.sizes import WIDE_ASPECT_RATIOS, nearest_aspect_ratio

log = logging.getLogger("atelier.workers.falai")

DEFAULT_POLL_INTERVAL_S = 1.0
_HANDLE_KEYS = ("request_id", "status_url", "response_url", "cancel_url")
_STATUSES = frozenset({"IN_QUEUE", "IN_PROGRESS", "COMPLETED"})
# `provider_config.size_field`: how a `WxH` size is sent.
_SIZE_FORMS: dict[str, Callable[[int, int], dict[str, Any]]] = {
    "image_size": lambda width, height: {"image_size": {"width": width, "height": height}},
    "aspect_ratio": lambda width, height: {
        "aspect_ratio": nearest_aspect_ratio(width, height, WIDE_ASPECT_RATIOS)
    },
}


class FalAdapter(_http.HttpAdapter):
    awaited = "result"
    name: str = "falai"

    async def cancel(
        self, request: ImageRequest, handle: dict[str, Any], client: httpx.AsyncClient
    ) -> None:
        """`PUT cancel_url`; fal stops requests still queued, finished ones stay finished."""
        response = await _http.call_saved_url(
            request, client, "PUT", handle.get("cancel_url"), _auth(request)
        )
        if response is None or response.status_code in (200, 202, *_http.GONE):
            return
        body = _http.json_or_none(response)
        status = body.get("status") if isinstance(body, dict) else None
        if response.status_code == 400 and status == "ALREADY_COMPLETED":
            return  # nothing left to stop
        raise error_from_response(response, (request.api_key,))

    def build_body(self, request: ImageRequest) -> dict[str, Any]:
        self.check_request(request)
        body = _http.model_inputs(
            request,
            size_forms=_SIZE_FORMS,
            default_size_form="image_size",
            options=self.passed_options(request),
            reference_field="image_urls",
        )
        body["num_images"] = request.n
        return body

    async def _generate(self, request: ImageRequest, client: httpx.AsyncClient) -> GenerationOutput:
        async def submit() -> tuple[dict[str, Any], None]:
            return await self._submit(request, self.build_body(request), client), None

        async def finish(handle: dict[str, Any], _: None) -> GenerationOutput:
            return await self._finish(request, handle, client)

        return await _http.resume_or_submit(
            request,
            self.name,
            _HANDLE_KEYS,
            job="fal request",
            log=log,
            submit=submit,
            follow=finish,
        )

    async def _submit(
        self, request: ImageRequest, body: dict[str, Any], client: httpx.AsyncClient
    ) -> dict[str, Any]:
        base = self.base_url(request)
        model = request.model.strip("/")
        if not model:
            raise ProviderError.of(ErrorClass.INVALID_REQUEST, "no fal app id (owner/app) given")
        secrets = (request.api_key,)
        response = await _http.send(
            lambda: client.post(
                f"{base}/{model}", json=body, headers=_auth(request), timeout=request.timeout_s
            ),
            secrets,
        )
        if response.status_code not in (200, 201, 202):
            raise error_from_response(response, secrets)
        payload = _http.json_or_none(response)
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
        # fal's edge may hiccup (a 502, a reset connection): the request itself is safe there.
        poller = _http.StatusPoller(
            request,
            client,
            handle["status_url"],
            _auth(request),
            default_interval=DEFAULT_POLL_INTERVAL_S,
            error=error_from_response,
            known_state=_known_status,
        )
        last_reported: str | None = None
        while True:
            payload = await poller.poll()
            if payload is None:
                continue
            status = str(payload["status"])
            if status == "COMPLETED":
                return
            if _cancelled(status):
                await request.resume.save({})
                raise ProviderError.of(ErrorClass.CANCELLED, f"fal request {status.lower()}")
            detail = _progress_detail(status, payload)
            if detail != last_reported:
                last_reported = detail
                await request.report_progress(None, detail)
            await asyncio.sleep(poller.interval)

    async def _fetch_result(
        self, request: ImageRequest, handle: dict[str, Any], client: httpx.AsyncClient
    ) -> dict[str, Any]:
        secrets = (request.api_key,)
        response = await _http.send(
            lambda: client.get(
                handle["response_url"], headers=_auth(request), timeout=request.timeout_s
            ),
            secrets,
        )
        if response.status_code in _http.GONE:
            raise _http.JobGone
        if response.status_code != 200:
            # The model's own failure (or a cancellation): final, so forget the handle.
            await request.resume.save({})
            raise error_from_response(response, secrets, after_run=True)
        payload = _http.json_or_none(response)
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
    body = _http.json_or_none(response)
    detail_field = body.get("detail") if isinstance(body, dict) else None
    error_types = _error_types(detail_field)
    text = _detail_text(response, detail_field)

    if "content_policy_violation" in error_types:
        return ProviderError.of(ErrorClass.CONTENT_BLOCKED, text, stage="input", secrets=secrets)
    if "no_media_generated" in error_types:
        return ProviderError.of(ErrorClass.NO_IMAGE_RETURNED, text, secrets=secrets)
    lowered = text.lower()
    if "exhausted balance" in lowered or "user is locked" in lowered:
        return ProviderError.of(ErrorClass.QUOTA_EXHAUSTED, text, secrets=secrets)
    if after_run and "cancel" in lowered and status not in (401, 402, 403, 429):
        return ProviderError.of(ErrorClass.CANCELLED, text, secrets=secrets)
    return _http.error_for_status(status, response.headers, text, secrets)


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
    if not isinstance(seed, int) or isinstance(seed, bool):
        seed = request.seed  # the one the body carried, if any
    # fal reports one seed per call; it reproduces an image only when the call made one.
    image_seed = seed if request.n == 1 else None
    images = [
        GeneratedImageData.decoded(
            await _http.download(item["url"], client, request.timeout_s), seed=image_seed
        )
        for item in kept
    ]
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


def _known_status(payload: dict[str, Any]) -> bool:
    """A status fal's queue documents (its own client refuses any other), or a cancellation."""
    status = payload.get("status")
    return isinstance(status, str) and (status in _STATUSES or _cancelled(status))


def _cancelled(status: str) -> bool:
    return "CANCEL" in status


def _progress_detail(status: str, payload: dict[str, Any]) -> str:
    if status == "IN_QUEUE":
        position = payload.get("queue_position")
        return f"queued at position {position}" if isinstance(position, int) else "queued"
    return "running"  # IN_PROGRESS, the only other state still on its way


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
