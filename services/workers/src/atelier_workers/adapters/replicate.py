"""Replicate predictions: create with `Prefer: wait`, then poll `urls.get` until it settles.

Wire format and failure modes: providers.md A.7 and A.11. `Prefer: wait=N` lets fast models
answer in the create call; slower ones come back `starting`/`processing` and are polled. The
prediction id and its URLs are saved in the task's `ResumeStore` as soon as the create call
answers and before any polling, so a restarted worker resumes the same prediction. The wait is
kept short by default because the id is unknown until the create call returns: a worker killed
inside that window cannot find its prediction again. Output URLs expire, so they are downloaded
at once.

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
import base64
import binascii
import contextlib
import json
import logging
import math
import re
from collections.abc import Awaitable, Callable
from typing import Any

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

log = logging.getLogger("atelier.workers.replicate")

DEFAULT_BASE_URL = "https://api.replicate.com/v1"
DEFAULT_PREFER_WAIT_S = 5
MAX_PREFER_WAIT_S = 60  # Replicate's own ceiling for `Prefer: wait=N`
DEFAULT_POLL_INTERVAL_S = 1.0
MAX_POLL_FAILURES = 3
_OPTION_INPUTS = frozenset(
    {
        "num_inference_steps",
        "guidance",
        "guidance_scale",
        "output_format",
        "output_quality",
        "safety_tolerance",
        "go_fast",
        "megapixels",
        "prompt_upsampling",
        "prompt_strength",
    }
)
_ASPECT_RATIOS = ("21:9", "16:9", "3:2", "4:3", "5:4", "1:1", "4:5", "3:4", "2:3", "9:16", "9:21")
_VERSION_RE = re.compile(r"^[0-9a-f]{64}$")
_SEED_LOG_RE = re.compile(r"[Uu]sing seed:?\s*(\d+)")
_PERCENT_LOG_RE = re.compile(r"(\d{1,3})%\|")
_GONE = (404, 410)
_NSFW_MARKERS = ("nsfw", "e005", "flagged as sensitive")


class _PredictionGone(Exception):
    """Replicate no longer knows the saved prediction."""


class ReplicateAdapter:
    name: str = "replicate"

    def max_images_per_call(self, model: str) -> int:
        return images_per_call(self.name, model)

    async def generate(self, request: ImageRequest, client: httpx.AsyncClient) -> GenerationOutput:
        try:
            async with asyncio.timeout(request.timeout_s):
                return await self._generate(request, client)
        except TimeoutError as exc:
            # The handle stays saved: a retry resumes this prediction instead of paying again.
            raise ProviderError.of(
                ErrorClass.TIMEOUT, f"no result within {request.timeout_s:g} s"
            ) from exc

    async def cancel(
        self, request: ImageRequest, handle: dict[str, Any], client: httpx.AsyncClient
    ) -> None:
        """`POST urls.cancel`; a prediction that already finished is left as it is."""
        cancel_url = handle.get("cancel_url")
        if not isinstance(cancel_url, str):
            return
        secrets = (request.api_key,)
        response = await _send(
            lambda: client.post(cancel_url, headers=_auth(request), timeout=30.0), secrets
        )
        if response.status_code in (200, 201, 202, 204, *_GONE):
            return
        raise error_from_response(response, secrets)

    def build_call(self, request: ImageRequest) -> tuple[str, dict[str, Any]]:
        """The create URL and JSON body; raises `invalid_request` instead of sending a bad one."""
        limit = self.max_images_per_call(request.model)
        if not 1 <= request.n <= limit:
            raise ProviderError.of(
                ErrorClass.INVALID_REQUEST, f"Replicate takes n from 1 to {limit} per call"
            )
        if not request.prompt:
            raise ProviderError.of(ErrorClass.INVALID_REQUEST, "prompt is empty")
        base = (request.base_url or DEFAULT_BASE_URL).rstrip("/")
        body: dict[str, Any] = {"input": self._input(request)}
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

    def _input(self, request: ImageRequest) -> dict[str, Any]:
        width, height = parse_size(request.size)
        config = request.provider_config
        extra = config.get("input", {})
        if not isinstance(extra, dict):
            raise ProviderError.of(
                ErrorClass.INVALID_REQUEST, "provider_config.input must be a map"
            )
        values: dict[str, Any] = dict(extra)
        values["prompt"] = request.prompt
        size_field = config.get("size_field", "aspect_ratio")
        if size_field == "aspect_ratio":
            values["aspect_ratio"] = nearest_aspect_ratio(width, height)
        elif size_field == "width_height":
            values["width"], values["height"] = width, height
        else:
            raise ProviderError.of(
                ErrorClass.INVALID_REQUEST,
                f"provider_config.size_field={size_field!r}; use aspect_ratio or width_height",
            )
        if request.seed is not None:
            values["seed"] = request.seed
        if request.negative_prompt:
            values["negative_prompt"] = request.negative_prompt
        for key, value in request.options.items():
            if key in _OPTION_INPUTS and value is not None:
                values[key] = value
        if request.reference_images:
            field = config.get("reference_field", "input_images")
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
            values[field] = uris if as_list else uris[0]
        return values

    async def _generate(self, request: ImageRequest, client: httpx.AsyncClient) -> GenerationOutput:
        saved = _handle_of(await request.resume.load())
        if saved is not None:
            try:
                return await self._settle(request, saved, None, client)
            except _PredictionGone:
                log.info(
                    "saved Replicate prediction is gone; creating it again",
                    extra={"prediction_id": saved["id"]},
                )
        url, body = self.build_call(request)
        prediction = await self._create(request, url, body, client)
        handle = {
            "provider": self.name,
            "id": prediction["id"],
            "get_url": prediction["urls"]["get"],
            "cancel_url": prediction["urls"]["cancel"],
        }
        # Saved before polling or downloading: a worker killed from here on resumes it.
        await request.resume.save(handle)
        try:
            return await self._settle(request, handle, prediction, client)
        except _PredictionGone as exc:
            raise ProviderError.of(
                ErrorClass.PROVIDER_UNAVAILABLE,
                f"Replicate lost prediction {handle['id']} right after creating it",
            ) from exc

    async def _create(
        self, request: ImageRequest, url: str, body: dict[str, Any], client: httpx.AsyncClient
    ) -> dict[str, Any]:
        headers = _auth(request)
        wait_s = _prefer_wait(request)
        if wait_s:
            headers["Prefer"] = f"wait={wait_s}"
        secrets = (request.api_key,)
        response = await _send(
            lambda: client.post(url, json=body, headers=headers, timeout=request.timeout_s),
            secrets,
        )
        if response.status_code not in (200, 201, 202):
            raise error_from_response(response, secrets)
        prediction = _json_or_none(response)
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
        interval = _poll_interval(request.provider_config)
        last_reported: str | None = None
        failures = 0
        while True:
            if prediction is None:
                try:
                    prediction = await self._poll(request, handle, client)
                    failures = 0
                except ProviderError as exc:
                    # Ride out a few hiccups: the prediction itself runs on regardless.
                    failures += 1
                    if exc.error_class is not ErrorClass.PROVIDER_UNAVAILABLE:
                        raise
                    if failures >= MAX_POLL_FAILURES:
                        raise
                    await asyncio.sleep(interval)
                    continue
                if prediction is None:  # rate limited; _poll already waited
                    continue
            status = prediction.get("status")
            if status == "succeeded":
                return await self._output(request, handle, prediction, client)
            if status in ("failed", "canceled"):
                await request.resume.save({})  # final: a retry must create anew
                raise _failure(prediction, handle["id"], (request.api_key,))
            fraction, detail = _progress_of(prediction)
            if detail != last_reported:
                last_reported = detail
                await report_progress(request, fraction, detail)
            prediction = None
            await asyncio.sleep(interval)

    async def _poll(
        self, request: ImageRequest, handle: dict[str, Any], client: httpx.AsyncClient
    ) -> dict[str, Any] | None:
        secrets = (request.api_key,)
        response = await _send(
            lambda: client.get(
                handle["get_url"], headers=_auth(request), timeout=request.timeout_s
            ),
            secrets,
        )
        if response.status_code in _GONE:
            raise _PredictionGone
        if response.status_code == 429:
            wait = retry_after_of(response.headers) or 0.0
            await asyncio.sleep(max(wait, _poll_interval(request.provider_config)))
            return None
        if response.status_code != 200:
            raise error_from_response(response, secrets)
        payload = _json_or_none(response)
        return payload if isinstance(payload, dict) else {}

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
        images: list[GeneratedImageData] = []
        for url in urls:
            try:
                data = await _fetch_output(url, client, request.timeout_s)
                content_type, width, height = image_size_of(data)
            except ProviderError as exc:
                if exc.error_class is ErrorClass.NO_IMAGE_RETURNED:
                    await request.resume.save({})  # expired or broken: resuming cannot help
                raise
            images.append(
                GeneratedImageData(
                    data=data, content_type=content_type, width=width, height=height, seed=seed
                )
            )
        metrics = prediction.get("metrics")
        usage: dict[str, Any] = {"images": len(images)}
        if isinstance(metrics, dict):
            usage.update({k: v for k, v in metrics.items() if isinstance(v, int | float)})
        return GenerationOutput(images=images, usage=usage, provider_request_id=handle["id"])


def error_from_response(response: httpx.Response, secrets: tuple[str | None, ...]) -> ProviderError:
    """Map an RFC 7807 problem (or any other non-2xx answer) onto the shared taxonomy."""
    status = response.status_code
    body = _json_or_none(response)
    problem = body if isinstance(body, dict) else {}
    parts = [f"HTTP {status}"]
    for key in ("title", "detail"):
        if problem.get(key):
            parts.append(f"{key}={problem[key]}")
    if not problem:
        parts.append(response.text[:300])
    detail = " ".join(parts)

    def fail(error_class: ErrorClass, **extra: Any) -> ProviderError:
        return ProviderError.of(error_class, detail, secrets=secrets, **extra)

    if status == 422 and any(marker in detail.lower() for marker in _NSFW_MARKERS):
        return fail(ErrorClass.CONTENT_BLOCKED, stage="input")
    if status in (401, 403):
        return fail(ErrorClass.AUTH)
    if status == 402:
        return fail(ErrorClass.QUOTA_EXHAUSTED)
    if status == 429:
        return fail(ErrorClass.RATE_LIMITED, retry_after_s=retry_after_of(response.headers))
    if status in (408, 504):
        return fail(ErrorClass.TIMEOUT)
    if status >= 500 or status == 409:
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
    log.debug("replicate progress: %s", detail)
    hook = getattr(request, "on_progress", None)
    if hook is None:
        return
    try:
        await hook(fraction, detail)
    except Exception:  # progress is a nicety; it must never fail a generation
        log.warning("progress hook failed", exc_info=True)


def _failure(
    prediction: dict[str, Any], prediction_id: str, secrets: tuple[str | None, ...]
) -> ProviderError:
    status = prediction.get("status")
    error = str(prediction.get("error") or "no error message")
    detail = f"prediction {prediction_id} {status}: {error}"
    if status == "canceled":
        return ProviderError.of(ErrorClass.CANCELLED, detail, secrets=secrets)
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


async def _fetch_output(url: str, client: httpx.AsyncClient, timeout_s: float) -> bytes:
    """Download an output now (replicate.delivery links expire), or decode a data URI.

    No Authorization header: delivery URLs are public and must never see the token.
    """
    if url.startswith("data:"):
        try:
            return base64.b64decode(url.split(",", 1)[1], validate=True)
        except (IndexError, binascii.Error, ValueError) as exc:
            raise ProviderError.of(
                ErrorClass.NO_IMAGE_RETURNED, f"output data URI is not base64: {exc}"
            ) from exc
    response = await _send(lambda: client.get(url, timeout=timeout_s, follow_redirects=True), ())
    shown = url.split("?", 1)[0]
    if response.status_code in _GONE:
        raise ProviderError.of(
            ErrorClass.NO_IMAGE_RETURNED,
            f"output URL {shown} answered {response.status_code} (expired or removed)",
        )
    if response.status_code != 200:
        error_class = (
            ErrorClass.PROVIDER_UNAVAILABLE
            if response.status_code >= 500
            else ErrorClass.NO_IMAGE_RETURNED
        )
        raise ProviderError.of(error_class, f"output URL {shown} answered {response.status_code}")
    return response.content


def _handle_of(saved: dict[str, Any] | None) -> dict[str, Any] | None:
    if not saved or saved.get("provider") != "replicate":
        return None
    if not all(isinstance(saved.get(key), str) for key in ("id", "get_url", "cancel_url")):
        return None
    return saved


def _auth(request: ImageRequest) -> dict[str, str]:
    return {"Authorization": f"Bearer {request.api_key}"} if request.api_key else {}


def _prefer_wait(request: ImageRequest) -> int:
    raw = request.provider_config.get("prefer_wait_s", DEFAULT_PREFER_WAIT_S)
    try:
        wait = int(raw)
    except (TypeError, ValueError):
        raise ProviderError.of(
            ErrorClass.INVALID_REQUEST, f"provider_config.prefer_wait_s={raw!r} is not a number"
        ) from None
    # Never ask Replicate to hold the call longer than we will wait for it.
    return max(0, min(wait, MAX_PREFER_WAIT_S, math.floor(request.timeout_s)))


def _data_uri(data: bytes, content_type: str) -> str:
    return f"data:{content_type};base64,{base64.b64encode(data).decode('ascii')}"


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
