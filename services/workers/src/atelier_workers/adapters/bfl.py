"""Black Forest Labs FLUX API: `POST /{model}` → `{id, polling_url}` → poll → download `sample`.

Wire format and failure modes: providers.md A.5 and A.11. Every submission is paid for, so the
provider's handle `{id, polling_url}` is saved in the task's `ResumeStore` *before* polling; a
worker that restarts mid-job finds it there and polls the same task instead of submitting a
second one. The `sample` URL expires after about ten minutes, so it is downloaded as soon as the
task is Ready.

FLUX.2 and FLUX 1.1 models take width/height (multiples of 16, at most 4 MP); Kontext and Ultra
take an aspect ratio. Seed is supported; there is no negative prompt and no cancel endpoint.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import math
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx

from atelier_contracts.errors import ErrorClass
from atelier_contracts.providers import BFL_MAX_PIXELS, bfl_sizes_by_ratio, capabilities
from atelier_workers.adapters import _http
from atelier_workers.adapters.base import (
    GenerationOutput,
    ImageRequest,
    ProviderError,
    parse_size,
)
from atelier_workers.adapters.sizes import WIDE_ASPECT_RATIOS, nearest_aspect_ratio

DEFAULT_POLL_INTERVAL_S = 0.5  # BFL's own examples poll twice a second
MAX_PIXELS = BFL_MAX_PIXELS
MIN_SIDE = 64
_PENDING = frozenset({"Pending", "Processing", "Queued"})
_TASK_NOT_FOUND = "Task not found"


class _TaskGone(Exception):
    """The provider no longer knows the task we hold a handle for."""


class BFLAdapter(_http.HttpAdapter):
    awaited = "finished image"
    name: str = "bfl"

    async def _generate(self, request: ImageRequest, client: httpx.AsyncClient) -> GenerationOutput:
        # On a timeout the handle stays saved: a retry of this task resumes polling the same job.
        return await self._run(request, self.build_body(request), client)

    def build_body(self, request: ImageRequest) -> dict[str, Any]:
        """The submission body; raises `invalid_request` instead of sending a bad one."""
        self.check_request(request, capabilities(self.name, request.model).max_reference_images)
        _http.poll_interval(request.provider_config, DEFAULT_POLL_INTERVAL_S)  # fail before we pay
        width, height = parse_size(request.size)
        body: dict[str, Any] = {"prompt": request.prompt}
        if bfl_sizes_by_ratio(request.model):
            body["aspect_ratio"] = nearest_aspect_ratio(width, height, WIDE_ASPECT_RATIOS)
        else:
            body["width"], body["height"] = flux_dimensions(width, height)
        if request.seed is not None:
            body["seed"] = request.seed
        for index, ref in enumerate(request.reference_images):
            key = "input_image" if index == 0 else f"input_image_{index + 1}"
            body[key] = base64.b64encode(ref.data).decode("ascii")
        body.update(self.passed_options(request))
        return body

    async def _run(
        self, request: ImageRequest, body: dict[str, Any], client: httpx.AsyncClient
    ) -> GenerationOutput:
        base = self.base_url(request)
        handle = await request.resume.load()
        if handle and isinstance(handle.get("polling_url"), str):
            try:
                return await self._finish(request, handle, base, client, usage={})
            except _TaskGone:
                # The task we paid for is gone (results are not kept forever): one fresh
                # submission is the only way to still deliver the image.
                await request.resume.save({})
        handle, usage = await self._submit(request, body, base, client)
        # Saved before the first poll: from here on a restart must not submit again.
        await request.resume.save(handle)
        try:
            return await self._finish(request, handle, base, client, usage=usage)
        except _TaskGone as exc:
            await request.resume.save({})
            raise ProviderError.of(
                ErrorClass.PROVIDER_UNAVAILABLE,
                _http.with_id("the task vanished while polling (Task not found)", handle["id"]),
            ) from exc

    async def _submit(
        self, request: ImageRequest, body: dict[str, Any], base: str, client: httpx.AsyncClient
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        url = f"{base}/{request.model}"
        secrets = (request.api_key,)
        response = await _http.send(
            lambda: client.post(url, json=body, headers=_key(request), timeout=request.timeout_s),
            secrets,
        )
        if response.status_code != 200:
            raise error_from_response(response, secrets)
        payload = _http.json_object(response, None)
        task_id = payload.get("id")
        if not isinstance(task_id, str) or not task_id:
            raise ProviderError.of(
                ErrorClass.PROVIDER_UNAVAILABLE, "submission answered 200 without a task id"
            )
        polling_url = payload.get("polling_url")
        if not isinstance(polling_url, str) or not polling_url:
            # Older API versions only had the global result endpoint.
            polling_url = f"{base}/get_result?id={task_id}"
        usage: dict[str, Any] = {
            key: payload[key] for key in ("cost", "input_mp", "output_mp") if key in payload
        }
        return {"id": task_id, "polling_url": urljoin(f"{base}/", polling_url)}, usage

    async def _finish(
        self,
        request: ImageRequest,
        handle: dict[str, Any],
        base: str,
        client: httpx.AsyncClient,
        *,
        usage: dict[str, Any],
    ) -> GenerationOutput:
        task_id = str(handle.get("id") or "")
        result = await self._poll(request, str(handle["polling_url"]), task_id, base, client)
        sample = result.get("sample")
        if not isinstance(sample, str) or not sample:
            await request.resume.save({})
            raise ProviderError.of(
                ErrorClass.NO_IMAGE_RETURNED, _http.with_id("Ready without a sample URL", task_id)
            )
        seed = result.get("seed")
        image = await _http.final_image(
            request,
            _http.download(sample, client, request.timeout_s),
            # BFL's own report of the seed, else the one the body carried (None if it had none).
            seed=seed if isinstance(seed, int) and not isinstance(seed, bool) else request.seed,
        )
        return GenerationOutput(images=[image], usage=usage, provider_request_id=task_id or None)

    async def _poll(
        self,
        request: ImageRequest,
        polling_url: str,
        task_id: str,
        base: str,
        client: httpx.AsyncClient,
    ) -> dict[str, Any]:
        """Poll until Ready (returning `result`) or a terminal failure (raised)."""
        if not _same_site(polling_url, base):
            # The key goes only to the API's own domain, never to a host an answer names.
            raise ProviderError.of(
                ErrorClass.INVALID_REQUEST,
                f"polling_url host {urlsplit(polling_url).hostname!r} is not the API's "
                f"({urlsplit(base).hostname!r}); refusing to send the key there",
            )
        interval = _http.poll_interval(request.provider_config, DEFAULT_POLL_INTERVAL_S)
        secrets = (request.api_key,)
        last_reported: str | None = None
        while True:
            try:
                payload = await self._poll_once(request, polling_url, secrets, client)
            except ProviderError as exc:
                if exc.error_class not in (
                    ErrorClass.RATE_LIMITED,
                    ErrorClass.PROVIDER_UNAVAILABLE,
                    ErrorClass.TIMEOUT,
                ):
                    raise
                # A hiccup while polling must not abandon a job already paid for; the overall
                # timeout still bounds how long we keep trying.
                await asyncio.sleep(max(interval, exc.info.retry_after_s or 0.0))
                continue
            status = payload.get("status")
            if status == "Ready":
                result = payload.get("result")
                return result if isinstance(result, dict) else {}
            if status == _TASK_NOT_FOUND:
                raise _TaskGone(task_id)
            if isinstance(status, str) and status not in _PENDING:
                await request.resume.save({})
                raise _status_error(status, payload, task_id, secrets)
            fraction, detail = _progress_of(status, payload)
            if detail != last_reported:
                last_reported = detail
                await request.report_progress(fraction, detail)
            await asyncio.sleep(interval)

    async def _poll_once(
        self,
        request: ImageRequest,
        polling_url: str,
        secrets: tuple[str | None, ...],
        client: httpx.AsyncClient,
    ) -> dict[str, Any]:
        response = await _http.send(
            lambda: client.get(polling_url, headers=_key(request), timeout=request.timeout_s),
            secrets,
        )
        if response.status_code == 404:
            return {"status": _TASK_NOT_FOUND}
        if response.status_code != 200:
            raise error_from_response(response, secrets)
        return _http.json_object(response, None)


def flux_dimensions(width: int, height: int) -> tuple[int, int]:
    """The nearest width/height FLUX accepts: multiples of 16, at most 4 MP, aspect kept."""
    scale = min(1.0, math.sqrt(MAX_PIXELS / (width * height)))
    # Half up, not Python's half-to-even: 1000 px becomes 1008, not 992.
    w = max(MIN_SIDE, math.floor(width * scale / 16 + 0.5) * 16)
    h = max(MIN_SIDE, math.floor(height * scale / 16 + 0.5) * 16)
    while w * h > MAX_PIXELS:  # rounding up can overshoot by a row of blocks
        if w >= h:
            w -= 16
        else:
            h -= 16
    return w, h


def error_from_response(response: httpx.Response, secrets: tuple[str | None, ...]) -> ProviderError:
    """Map a non-200 answer (FastAPI-style `{"detail": ...}` or plain text) onto the taxonomy."""
    status = response.status_code
    body = _http.json_or_none(response)
    detail_field = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail_field, list):
        shown = "; ".join(
            f"{'.'.join(str(p) for p in item.get('loc', []))}: {item.get('msg')}"
            if isinstance(item, dict)
            else str(item)
            for item in detail_field
        )
    elif detail_field is not None:
        shown = str(detail_field)
    else:
        shown = response.text[:300]
    detail = f"HTTP {status} detail={shown[:400]}"

    # A 429 is too many active tasks (24, or 6 for kontext-max); Retry-After is not always sent.
    return _http.error_for_status(status, response.headers, detail, secrets)


def _status_error(
    status: str, payload: dict[str, Any], task_id: str, secrets: tuple[str | None, ...]
) -> ProviderError:
    details = payload.get("details")
    shown = _http.with_id(f"status={status}" + (f" details={details}" if details else ""), task_id)
    if status == "Request Moderated":
        return ProviderError.of(ErrorClass.CONTENT_BLOCKED, shown, stage="input", secrets=secrets)
    if status == "Content Moderated":
        return ProviderError.of(ErrorClass.CONTENT_BLOCKED, shown, stage="output", secrets=secrets)
    # "Error" and anything new: the provider failed the task; a retry submits afresh.
    return ProviderError.of(ErrorClass.PROVIDER_UNAVAILABLE, shown, secrets=secrets)


def _progress_of(status: Any, payload: dict[str, Any]) -> tuple[float | None, str]:
    """A pending task's `progress` (0..1, when BFL sends one [U]) and a line saying so."""
    shown = status.lower() if isinstance(status, str) else "waiting"
    progress = payload.get("progress")
    if isinstance(progress, int | float) and not isinstance(progress, bool):
        return float(progress), f"{shown} {min(max(progress, 0), 1):.0%}"
    return None, shown


def _key(request: ImageRequest) -> dict[str, str]:
    return {"x-key": request.api_key} if request.api_key else {}


def _same_site(url: str, base: str) -> bool:
    """Whether `url` is on the API's host or a sibling of it (api.bfl.ai → api.eu1.bfl.ai)."""
    host, base_host = urlsplit(url).hostname, urlsplit(base).hostname
    if not host or not base_host:
        return False
    if host == base_host:
        return True
    try:
        ipaddress.ip_address(base_host)
        return False  # an IP has no parent domain to share
    except ValueError:
        pass
    labels = base_host.split(".")
    if len(labels) < 2:
        return False  # "localhost" and the like: only the exact host will do
    return host.endswith("." + ".".join(labels[-2:]))
