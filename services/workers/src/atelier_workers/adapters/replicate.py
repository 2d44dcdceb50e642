"""Replicate predictions: create with `Prefer: wait`, then poll `urls.get` until it settles.

Wire format and failure modes: providers.md A.7 and A.11. `Prefer: wait=N` lets fast models
answer in the create call; slower ones come back `starting`/`processing` and are polled. The
prediction id and its URLs are saved in the task's `ResumeStore` as soon as the create call
answers and before any polling, so a restarted worker resumes the same prediction. The wait is
kept short by default because the id is unknown until the create call returns: a worker killed
inside that window cannot find its prediction again. Output URLs expire, so they are downloaded
at once. A poll's answer is any 2xx whose `status` is one Replicate documents; any other body
fails the poll.

Profile settings (`provider_config`), all optional:
- `input`: extra model inputs merged into `input` (Replicate inputs are per model).
- `size_field`: `"aspect_ratio"` (default, as the official FLUX/Imagen models take) or
  `"width_height"`.
- `reference_field`: where reference images go, as data URIs (default `"input_images"`, a
  list); `reference_as_list`: force a list (true) or the first image only (false); by default
  a name ending in `s` takes a list.
- `prefer_wait_s`: seconds for `Prefer: wait` (default 5, at most 60; 0 turns it off).
- `poll_interval_s`: seconds between polls (default 1).
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
from collections.abc import Callable
from typing import Any

import httpx

from atelier_contracts.errors import ErrorClass
from atelier_workers.adapters import _http
from atelier_workers.adapters.base import (
    GenerationOutput,
    ImageRequest,
    ProviderError,
)
from atelier_workers.adapters.sizes import WIDE_ASPECT_RATIOS, nearest_aspect_ratio

log = logging.getLogger("atelier.workers.replicate")

DEFAULT_PREFER_WAIT_S = 5
MAX_PREFER_WAIT_S = 60  # Replicate's own ceiling for `Prefer: wait=N`
DEFAULT_POLL_INTERVAL_S = 1.0
_VERSION_RE = re.compile(r"^[0-9a-f]{64}$")
_SEED_LOG_RE = re.compile(r"[Uu]sing seed:?\s*(\d+)")
_PERCENT_LOG_RE = re.compile(r"(\d{1,3})%\|")
_HANDLE_KEYS = ("id", "get_url", "cancel_url")
# `provider_config.size_field`: how a `WxH` size is sent.
_SIZE_FORMS: dict[str, Callable[[int, int], dict[str, Any]]] = {
    "aspect_ratio": lambda width, height: {
        "aspect_ratio": nearest_aspect_ratio(width, height, WIDE_ASPECT_RATIOS)
    },
    "width_height": lambda width, height: {"width": width, "height": height},
}
_NSFW_MARKERS = ("nsfw", "e005", "flagged as sensitive")
# Every status Replicate documents; `aborted`: its deadline passed before the model started.
_FAILED_STATUSES = frozenset({"failed", "canceled", "aborted"})
_STATUSES = frozenset({"starting", "processing", "succeeded"}) | _FAILED_STATUSES


class ReplicateAdapter(_http.HttpAdapter):
    awaited = "result"
    name: str = "replicate"

    async def cancel(
        self, request: ImageRequest, handle: dict[str, Any], client: httpx.AsyncClient
    ) -> None:
        """`POST urls.cancel`; a prediction that already finished is left as it is."""
        response = await _http.call_saved_url(
            request, client, "POST", handle.get("cancel_url"), _http.bearer(request)
        )
        if response is not None and response.status_code not in (200, 201, 202, 204, *_http.GONE):
            raise error_from_response(response, (request.api_key,))

    def build_call(self, request: ImageRequest) -> tuple[str, dict[str, Any]]:
        """The create URL and JSON body; raises `invalid_request` instead of sending a bad one."""
        self.check_request(request)
        base = self.base_url(request)
        body: dict[str, Any] = {
            "input": _http.model_inputs(
                request,
                size_forms=_SIZE_FORMS,
                default_size_form="aspect_ratio",
                options=self.passed_options(request),
                reference_field="input_images",
            )
        }
        model = request.model.strip()
        if ":" in model:
            body["version"] = model.rsplit(":", 1)[1]
            return f"{base}/predictions", body
        if _VERSION_RE.match(model):
            body["version"] = model
            return f"{base}/predictions", body
        parts = model.strip("/").split("/")
        if len(parts) != 2 or not all(parts):
            raise ProviderError.of(
                ErrorClass.INVALID_REQUEST,
                f"Replicate model {model!r} must be owner/name, owner/name:version or a version",
            )
        return f"{base}/models/{parts[0]}/{parts[1]}/predictions", body

    async def _generate(self, request: ImageRequest, client: httpx.AsyncClient) -> GenerationOutput:
        async def create() -> tuple[dict[str, Any], dict[str, Any]]:
            url, body = self.build_call(request)
            prediction = await self._create(request, url, body, client)
            handle = {
                "provider": self.name,
                "id": prediction["id"],
                "get_url": prediction["urls"]["get"],
                "cancel_url": prediction["urls"]["cancel"],
            }
            return handle, prediction

        async def settle(
            handle: dict[str, Any], prediction: dict[str, Any] | None
        ) -> GenerationOutput:
            return await self._settle(request, handle, prediction, client)

        return await _http.resume_or_submit(
            request,
            self.name,
            _HANDLE_KEYS,
            job="Replicate prediction",
            log=log,
            submit=create,
            follow=settle,
        )

    async def _create(
        self, request: ImageRequest, url: str, body: dict[str, Any], client: httpx.AsyncClient
    ) -> dict[str, Any]:
        headers = _http.bearer(request)
        wait_s = _prefer_wait(request)
        if wait_s:
            headers["Prefer"] = f"wait={wait_s}"
        secrets = (request.api_key,)
        response = await _http.send(
            lambda: client.post(url, json=body, headers=headers, timeout=request.timeout_s),
            secrets,
        )
        if response.status_code not in (200, 201, 202):
            raise error_from_response(response, secrets)
        prediction = _http.json_or_none(response)
        if not isinstance(prediction, dict) or not isinstance(prediction.get("id"), str):
            raise ProviderError.of(
                ErrorClass.PROVIDER_UNAVAILABLE,
                f"Replicate answered without a prediction id: {response.text[:200]!r}",
            )
        base = url.split("/models/", 1)[0].removesuffix("/predictions")
        root = f"{base}/predictions/{prediction['id']}"
        urls = prediction.get("urls")
        urls = urls if isinstance(urls, dict) else {}
        prediction["urls"] = {
            "get": urls["get"] if isinstance(urls.get("get"), str) else root,
            "cancel": urls["cancel"] if isinstance(urls.get("cancel"), str) else f"{root}/cancel",
        }
        return prediction

    async def _settle(
        self,
        request: ImageRequest,
        handle: dict[str, Any],
        prediction: dict[str, Any] | None,
        client: httpx.AsyncClient,
    ) -> GenerationOutput:
        """Poll until the prediction settles, then download its output or raise its failure."""
        # The prediction runs on regardless of a hiccup while polling it.
        poller = _http.StatusPoller(
            request,
            client,
            handle["get_url"],
            _http.bearer(request),
            default_interval=DEFAULT_POLL_INTERVAL_S,
            error=error_from_response,
            known_state=lambda prediction: prediction.get("status") in _STATUSES,
        )
        last_reported: str | None = None
        while True:
            if prediction is None:
                prediction = await poller.poll()
                if prediction is None:
                    continue
            status = prediction.get("status")
            if status == "succeeded":
                return await self._output(request, handle, prediction, client)
            if status in _FAILED_STATUSES:
                await request.resume.save({})  # final: a retry must create anew
                raise _failure(prediction, handle["id"], (request.api_key,))
            fraction, detail = _progress_of(prediction)
            if detail != last_reported:
                last_reported = detail
                await request.report_progress(fraction, detail)
            prediction = None
            await asyncio.sleep(poller.interval)

    async def _output(
        self,
        request: ImageRequest,
        handle: dict[str, Any],
        prediction: dict[str, Any],
        client: httpx.AsyncClient,
    ) -> GenerationOutput:
        raw = prediction.get("output")
        urls = [raw] if isinstance(raw, str) else raw if isinstance(raw, list) else []
        urls = [url for url in urls if isinstance(url, str) and url]
        if not urls:
            await request.resume.save({})
            raise ProviderError.of(
                ErrorClass.NO_IMAGE_RETURNED,
                f"prediction {handle['id']} succeeded without output",
            )
        seed = _seed_of(prediction, request.seed) if len(urls) == 1 else None
        images = [
            await _http.final_image(request, _http.download(url, client, request.timeout_s), seed)
            for url in urls
        ]
        metrics = prediction.get("metrics")
        usage: dict[str, Any] = {"images": len(images)}
        if isinstance(metrics, dict):
            usage.update({k: v for k, v in metrics.items() if isinstance(v, int | float)})
        return GenerationOutput(images=images, usage=usage, provider_request_id=handle["id"])


def error_from_response(response: httpx.Response, secrets: tuple[str | None, ...]) -> ProviderError:
    """Map an RFC 7807 problem (or any other non-2xx answer) onto the shared taxonomy."""
    status = response.status_code
    body = _http.json_or_none(response)
    problem = body if isinstance(body, dict) else {}
    parts = [f"HTTP {status}"]
    for key in ("title", "detail"):
        if problem.get(key):
            parts.append(f"{key}={problem[key]}")
    if not problem:
        parts.append(response.text[:300])
    detail = " ".join(parts)

    if status == 422 and any(marker in detail.lower() for marker in _NSFW_MARKERS):
        return ProviderError.of(ErrorClass.CONTENT_BLOCKED, detail, stage="input", secrets=secrets)
    return _http.error_for_status(status, response.headers, detail, secrets)


def _failure(
    prediction: dict[str, Any], prediction_id: str, secrets: tuple[str | None, ...]
) -> ProviderError:
    status = prediction.get("status")
    error = str(prediction.get("error") or "no error message")
    detail = f"prediction {prediction_id} {status}: {error}"
    if status == "canceled":
        return ProviderError.of(ErrorClass.CANCELLED, detail, secrets=secrets)
    if status == "aborted":
        return ProviderError.of(ErrorClass.TIMEOUT, detail, secrets=secrets)
    if any(marker in error.lower() for marker in _NSFW_MARKERS):
        # Replicate checks prompts before a model starts and outputs after it ran.
        started = prediction.get("started_at") is not None
        stage = "output" if started else "input"
        return ProviderError.of(ErrorClass.CONTENT_BLOCKED, detail, stage=stage, secrets=secrets)
    return ProviderError.of(ErrorClass.PROVIDER_UNAVAILABLE, detail, secrets=secrets)


def _progress_of(prediction: dict[str, Any]) -> tuple[float | None, str]:
    status = str(prediction.get("status") or "waiting")
    if status == "starting":
        return None, "starting (the model may be booting)"
    logs = prediction.get("logs")
    percents = _PERCENT_LOG_RE.findall(logs) if isinstance(logs, str) else []
    if percents:
        percent = min(int(percents[-1]), 100)
        return percent / 100, f"{status} {percent}%"
    return None, status


def _seed_of(prediction: dict[str, Any], asked: int | None) -> int | None:
    logs = prediction.get("logs")
    match = _SEED_LOG_RE.search(logs) if isinstance(logs, str) else None
    return int(match.group(1)) if match else asked


def _prefer_wait(request: ImageRequest) -> int:
    wait = _http.number_setting(request.provider_config, "prefer_wait_s", DEFAULT_PREFER_WAIT_S)
    # Never ask Replicate to hold the call longer than we will wait for it.
    return max(0, math.floor(min(wait, MAX_PREFER_WAIT_S, request.timeout_s)))
