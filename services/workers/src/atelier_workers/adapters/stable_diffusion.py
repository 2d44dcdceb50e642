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
import contextlib
import json
import logging
from dataclasses import dataclass
from typing import Any

import httpx

from atelier_contracts.errors import ErrorClass
from atelier_workers.adapters import _http
from atelier_workers.adapters.base import (
    GeneratedImageData,
    GenerationOutput,
    ImageRequest,
    ProviderError,
    parse_size,
)

log = logging.getLogger("atelier.workers.stable_diffusion")

DEFAULT_POLL_INTERVAL_S = 1.0
# img2img's own default: keeps the reference's composition while repainting details.
DEFAULT_DENOISING_STRENGTH = 0.75
# Model names that mean "whatever checkpoint the server has loaded".
_CURRENT_MODEL = frozenset({"", "default", "current"})


@dataclass
class _Watch:
    """What the progress poller saw while the generation ran."""

    interrupted: bool = False


class StableDiffusionAdapter(_http.HttpAdapter):
    awaited = "answer"
    name: str = "stable-diffusion"

    async def cancel(
        self, request: ImageRequest, handle: dict[str, Any], client: httpx.AsyncClient
    ) -> None:
        """`POST /sdapi/v1/interrupt`, only while our call is marked as running."""
        if handle.get("provider") != self.name or not handle.get("running"):
            return
        secrets = _http.key_secrets(request)
        response = await _http.send(
            lambda: client.post(
                f"{_base(request)}/sdapi/v1/interrupt",
                headers=_http.basic_or_bearer(request),
                timeout=30.0,
            ),
            secrets,
        )
        if response.status_code != 200:
            raise error_from_response(response, secrets)

    def build_call(self, request: ImageRequest) -> tuple[str, dict[str, Any]]:
        """The endpoint (`txt2img` or `img2img`) and JSON body; `invalid_request` instead of
        sending a bad one."""
        self.check_request(request)
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
        body.update(self.passed_options(request))
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
        secrets = _http.key_secrets(request)
        await request.resume.save({"provider": self.name, "running": True})
        watch = _Watch()
        poller = asyncio.create_task(self._watch_progress(request, client, watch))
        try:
            response = await _http.send(
                lambda: client.post(
                    url,
                    json=body,
                    headers=_http.basic_or_bearer(request),
                    timeout=request.timeout_s,
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
        # -1 (or any negative seed) asks A1111 for a random one: only `info` can tell it then.
        sent = request.seed if request.seed is not None and request.seed >= 0 else None
        return _output_from(response, request.n, sent)

    async def _watch_progress(
        self, request: ImageRequest, client: httpx.AsyncClient, watch: _Watch
    ) -> None:
        interval = _http.poll_interval(request.provider_config, DEFAULT_POLL_INTERVAL_S)
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
                await request.report_progress(float(fraction), detail)

    async def _progress(
        self, request: ImageRequest, client: httpx.AsyncClient
    ) -> dict[str, Any] | None:
        response = await _http.send(
            lambda: client.get(
                f"{_base(request)}/sdapi/v1/progress",
                params={"skip_current_image": "true"},
                headers=_http.basic_or_bearer(request),
                timeout=request.timeout_s,
            ),
            _http.key_secrets(request),
        )
        payload = _http.json_or_none(response) if response.status_code == 200 else None
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
    body = _http.json_or_none(response)
    detail = _detail(response, body)

    # 404 (unknown sampler, no init image) and 422 (validation) are invalid requests; a 429 comes
    # from a proxy in front.
    return _http.error_for_status(status, response.headers, detail, secrets)


def _output_from(response: httpx.Response, n: int, sent_seed: int | None) -> GenerationOutput:
    payload = _http.json_or_none(response)
    payload = payload if isinstance(payload, dict) else {}
    raw = payload.get("images")
    encoded = [item for item in raw if isinstance(item, str)] if isinstance(raw, list) else []
    if not encoded:
        raise ProviderError.of(ErrorClass.NO_IMAGE_RETURNED, "A1111 answered with no images")
    seeds = _seeds_of(payload.get("info"))
    # Extensions (ControlNet's detection maps, grids) may append extra pictures after the batch.
    images = [
        GeneratedImageData.decoded(
            _http.decode_b64(item.split(",", 1)[-1], None),
            # A fork that reports no seeds: the one sent reproduces a batch of one.
            seed=seeds[index] if index < len(seeds) else sent_seed if n == 1 else None,
        )
        for index, item in enumerate(encoded[:n])
    ]
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
    return _http.self_hosted_base(request, "A1111")
