"""AUTOMATIC1111 / Forge web UI API: `/sdapi/v1/txt2img`, or `img2img` with reference images.

Wire format and failure modes: providers.md A.9 and A.11. The call is synchronous: the images
come back base64-encoded in the answer, with each image's seed in `info` (a JSON *string*).
While it runs, `/sdapi/v1/progress` is polled and reported as job progress. The server runs one
generation at a time (its `queue_lock`) and `/sdapi/v1/progress` and `/sdapi/v1/interrupt`
concern whatever it is running, so give each A1111 server one worker slot.

There is no provider job to resume: a restarted worker simply asks again. The adapter still
saves a small handle while the call runs, so the worker can `cancel` it (an interrupt), and
clears it when the call ends so a late cancel never interrupts somebody else's generation.

Authentication: `api_key` "user:pass" is sent as HTTP Basic (the server's `--api-auth`); any
other key as a bearer token, for a proxy in front.

Profile settings (`provider_config`), all optional:
- `payload`: extra fields merged into the body (`alwayson_scripts`, `enable_hr`, ...).
- `poll_interval_s`: seconds between progress polls (default 1).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
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

log = logging.getLogger("atelier.workers.stable_diffusion")

DEFAULT_POLL_INTERVAL_S = 1.0
# img2img's own default: keeps the reference's composition while repainting details.
DEFAULT_DENOISING_STRENGTH = 0.75
# Request fields a profile or user may set through `options` (A1111's StableDiffusion*Processing
# API models); everything else belongs in `provider_config["payload"]`.
_OPTION_FIELDS = frozenset(
    {
        "steps",
        "cfg_scale",
        "sampler_name",
        "scheduler",
        "denoising_strength",
        "subseed",
        "subseed_strength",
        "restore_faces",
        "tiling",
        "enable_hr",
        "hr_scale",
        "hr_upscaler",
        "hr_second_pass_steps",
        "distilled_cfg_scale",
    }
)
# Model names that mean "whatever checkpoint the server has loaded".
_CURRENT_MODEL = frozenset({"", "default", "current"})


@dataclass
class _Watch:
    """What the progress poller saw while the generation ran."""

    interrupted: bool = False


class StableDiffusionAdapter:
    name: str = "stable-diffusion"

    def max_images_per_call(self, model: str) -> int:
        return images_per_call(self.name, model)

    async def generate(self, request: ImageRequest, client: httpx.AsyncClient) -> GenerationOutput:
        try:
            async with asyncio.timeout(request.timeout_s):
                return await self._generate(request, client)
        except TimeoutError as exc:
            raise ProviderError.of(
                ErrorClass.TIMEOUT, f"no answer within {request.timeout_s:g} s"
            ) from exc

    async def cancel(
        self, request: ImageRequest, handle: dict[str, Any], client: httpx.AsyncClient
    ) -> None:
        """`POST /sdapi/v1/interrupt`, only while our call is marked as running."""
        if handle.get("provider") != self.name or not handle.get("running"):
            return
        secrets = _secrets(request)
        response = await _send(
            lambda: client.post(
                f"{_base(request)}/sdapi/v1/interrupt", headers=_auth(request), timeout=30.0
            ),
            secrets,
        )
        if response.status_code != 200:
            raise error_from_response(response, secrets)

    def build_call(self, request: ImageRequest) -> tuple[str, dict[str, Any]]:
        """The endpoint (`txt2img` or `img2img`) and JSON body; `invalid_request` instead of
        sending a bad one."""
        limit = self.max_images_per_call(request.model)
        if not 1 <= request.n <= limit:
            raise ProviderError.of(
                ErrorClass.INVALID_REQUEST, f"A1111 takes n from 1 to {limit} per call"
            )
        if not request.prompt:
            raise ProviderError.of(ErrorClass.INVALID_REQUEST, "prompt is empty")
        width, height = parse_size(request.size)
        extra = request.provider_config.get("payload", {})
        if not isinstance(extra, dict):
            raise ProviderError.of(
                ErrorClass.INVALID_REQUEST, "provider_config.payload must be a map"
            )
        body: dict[str, Any] = dict(extra)
        body.update(
            {
                "prompt": request.prompt,
                "negative_prompt": request.negative_prompt or "",
                "seed": request.seed if request.seed is not None else -1,
                "width": width,
                "height": height,
                "batch_size": request.n,
                "n_iter": 1,
                "send_images": True,
                "save_images": False,
            }
        )
        for key, value in request.options.items():
            if key in _OPTION_FIELDS and value is not None:
                body[key] = value
        if request.model.strip() not in _CURRENT_MODEL:
            override = dict(body.get("override_settings") or {})
            override["sd_model_checkpoint"] = request.model.strip()
            body["override_settings"] = override
        if not request.reference_images:
            return "txt2img", body
        if len(request.reference_images) > 1:
            # A1111 repaints one init image per batch; more than the batch is a 500 there.
            raise ProviderError.of(
                ErrorClass.INVALID_REQUEST,
                f"A1111 img2img takes one reference image, not {len(request.reference_images)}",
            )
        body["init_images"] = [base64.b64encode(request.reference_images[0].data).decode("ascii")]
        body.setdefault("denoising_strength", DEFAULT_DENOISING_STRENGTH)
        return "img2img", body

    async def _generate(self, request: ImageRequest, client: httpx.AsyncClient) -> GenerationOutput:
        endpoint, body = self.build_call(request)
        url = f"{_base(request)}/sdapi/v1/{endpoint}"
        secrets = _secrets(request)
        await request.resume.save({"provider": self.name, "running": True})
        watch = _Watch()
        poller = asyncio.create_task(self._watch_progress(request, client, watch))
        try:
            response = await _send(
                lambda: client.post(
                    url, json=body, headers=_auth(request), timeout=request.timeout_s
                ),
                secrets,
            )
        except ProviderError:
            await request.resume.save({})
            raise
        # A cancelled call keeps its handle: the server still runs it, and may be interrupted.
        finally:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller
        await request.resume.save({})  # finished: nothing left to interrupt
        if response.status_code != 200:
            raise error_from_response(response, secrets)
        if watch.interrupted or await self._was_interrupted(request, client):
            # A1111 answers an interrupted call with whatever it had: not a finished image.
            raise ProviderError.of(ErrorClass.CANCELLED, "the generation was interrupted")
        return _output_from(response, request.n)

    async def _watch_progress(
        self, request: ImageRequest, client: httpx.AsyncClient, watch: _Watch
    ) -> None:
        interval = _poll_interval(request.provider_config)
        last: str | None = None
        while True:
            await asyncio.sleep(interval)
            try:
                progress = await self._progress(request, client)
            except ProviderError:
                continue  # progress is a nicety; the call itself reports real failures
            if progress is None:
                continue
            raw_state = progress.get("state")
            state: dict[str, Any] = raw_state if isinstance(raw_state, dict) else {}
            if state.get("interrupted"):
                watch.interrupted = True
            fraction = progress.get("progress")
            if not isinstance(fraction, int | float) or not state.get("job_count"):
                continue
            step, steps = state.get("sampling_step"), state.get("sampling_steps")
            detail = f"step {step}/{steps}" if steps else "running"
            eta = progress.get("eta_relative")
            if isinstance(eta, int | float) and eta > 0:
                detail += f", about {eta:.0f} s left"
            if detail != last:
                last = detail
                await report_progress(request, min(max(float(fraction), 0.0), 1.0), detail)

    async def _progress(
        self, request: ImageRequest, client: httpx.AsyncClient
    ) -> dict[str, Any] | None:
        response = await _send(
            lambda: client.get(
                f"{_base(request)}/sdapi/v1/progress",
                params={"skip_current_image": "true"},
                headers=_auth(request),
                timeout=request.timeout_s,
            ),
            _secrets(request),
        )
        payload = _json_or_none(response) if response.status_code == 200 else None
        return payload if isinstance(payload, dict) else None

    async def _was_interrupted(self, request: ImageRequest, client: httpx.AsyncClient) -> bool:
        """The flag stays set until the server starts its next job; a fast call can finish
        between two progress polls, so look once more."""
        try:
            progress = await self._progress(request, client)
        except ProviderError:
            return False
        state = progress.get("state") if progress else None
        return isinstance(state, dict) and bool(state.get("interrupted"))


def error_from_response(response: httpx.Response, secrets: tuple[str | None, ...]) -> ProviderError:
    """Map an A1111 error (`{error, detail, body, errors}` or FastAPI's `{detail}`)."""
    status = response.status_code
    body = _json_or_none(response)
    detail = _detail(response, body)

    def fail(error_class: ErrorClass, **extra: Any) -> ProviderError:
        return ProviderError.of(error_class, detail, secrets=secrets, **extra)

    if status in (401, 403):
        return fail(ErrorClass.AUTH)
    if status == 429:  # a proxy in front
        return fail(ErrorClass.RATE_LIMITED, retry_after_s=retry_after_of(response.headers))
    if status in (408, 504):
        return fail(ErrorClass.TIMEOUT)
    if status >= 500:
        return fail(ErrorClass.PROVIDER_UNAVAILABLE)
    return fail(ErrorClass.INVALID_REQUEST)  # 404 unknown sampler/init image, 422 validation


async def report_progress(request: ImageRequest, fraction: float | None, detail: str) -> None:
    """Hand provider progress to the worker, if it listens (an `on_progress` coroutine
    function on the request); otherwise it only reaches the debug log."""
    log.debug("a1111 progress: %s", detail)
    hook = getattr(request, "on_progress", None)
    if hook is None:
        return
    try:
        await hook(fraction, detail)
    except Exception:  # progress is a nicety; it must never fail a generation
        log.warning("progress hook failed", exc_info=True)


def _output_from(response: httpx.Response, n: int) -> GenerationOutput:
    payload = _json_or_none(response)
    payload = payload if isinstance(payload, dict) else {}
    raw = payload.get("images")
    encoded = [item for item in raw if isinstance(item, str)] if isinstance(raw, list) else []
    if not encoded:
        raise ProviderError.of(ErrorClass.NO_IMAGE_RETURNED, "A1111 answered with no images")
    seeds = _seeds_of(payload.get("info"))
    images: list[GeneratedImageData] = []
    # Extensions (ControlNet's detection maps, grids) may append extra pictures after the batch.
    for index, item in enumerate(encoded[:n]):
        data = _decode(item)
        content_type, width, height = image_size_of(data)
        images.append(
            GeneratedImageData(
                data=data,
                content_type=content_type,
                width=width,
                height=height,
                seed=seeds[index] if index < len(seeds) else None,
            )
        )
    return GenerationOutput(images=images, usage={"images": len(images)})


def _seeds_of(info: Any) -> list[int]:
    """Each image's seed from `info`, a JSON string (some forks send the object itself)."""
    if isinstance(info, str):
        try:
            info = json.loads(info)
        except json.JSONDecodeError:
            return []
    if not isinstance(info, dict):
        return []
    seeds = info.get("all_seeds")
    if isinstance(seeds, list) and all(isinstance(s, int) for s in seeds):
        return list(seeds)
    seed = info.get("seed")
    return [seed] if isinstance(seed, int) else []


def _decode(item: str) -> bytes:
    if item.startswith("data:"):
        item = item.split(",", 1)[-1]
    try:
        return base64.b64decode(item, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ProviderError.of(
            ErrorClass.NO_IMAGE_RETURNED, f"A1111 image is not base64: {exc}"
        ) from exc


def _detail(response: httpx.Response, body: Any) -> str:
    parts = [f"HTTP {response.status_code}"]
    if isinstance(body, dict):
        for key in ("error", "detail", "errors"):
            value = body.get(key)
            if value:
                text = json.dumps(value) if not isinstance(value, str) else value
                parts.append(f"{key}={text[:300]}")
    else:
        parts.append(response.text[:300])
    return " ".join(parts)


def _base(request: ImageRequest) -> str:
    if not request.base_url:
        raise ProviderError.of(
            ErrorClass.INVALID_REQUEST, "A1111 needs the server's base_url in the profile"
        )
    return request.base_url.rstrip("/")


def _auth(request: ImageRequest) -> dict[str, str]:
    key = request.api_key
    if not key:
        return {}
    if ":" in key:
        return {"Authorization": "Basic " + base64.b64encode(key.encode()).decode("ascii")}
    return {"Authorization": f"Bearer {key}"}


def _secrets(request: ImageRequest) -> tuple[str | None, ...]:
    """What must never reach a log: the key, and the password half of a "user:pass" one."""
    key = request.api_key
    return (key, key.split(":", 1)[1]) if key and ":" in key else (key,)


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
