"""A fake AUTOMATIC1111 / Forge web UI API: txt2img, img2img, progress, interrupt.

It follows providers.md A.9: one generation at a time (a lock, like A1111's `queue_lock`),
`sampling_steps` steps of `step_s` each with `/sdapi/v1/progress` reporting them, `info` as a
JSON *string* with `all_seeds` (seed, seed+1, ... for a batch), an interrupt that ends the run
early yet still answers 200 with the unfinished images (as A1111 does), HTTP Basic auth when
`credentials` is set (`--api-auth`), and A1111's error shapes: 401 `{detail}`, 404 for an
unknown sampler or a missing init image, FastAPI's 422 `{detail: [...]}`, and 500
`{error, detail, body, errors}`. Failures are scripted by markers in the prompt, e.g.
"a cat [stable-diffusion:oom]"; see `MARKERS`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import random
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from atelier_fakes import _common
from atelier_fakes._common import RecordedRequest
from atelier_fakes.images import render_image

MARKERS: dict[str, str] = {
    "oom": "500 `{error: OutOfMemoryError, ...}` (CUDA out of memory)",
    "500-html": "500 with a plain-text body (a crashed server or its proxy)",
    "empty": "200 with `images: []`",
    "garbage-image": "200 whose images are not base64 PNGs",
    "extra-images": "200 with one extra picture after the batch (a ControlNet detection map)",
}
_MARKER_RE = re.compile(r"\[stable-diffusion:([a-z0-9\-]+)\]")
_SAMPLERS = ("Euler a", "Euler", "DPM++ 2M", "DPM++ 2M Karras", "DDIM", "UniPC")
_MAX_SEED = 2**32 - 1


@dataclass
class FakeA1111State(_common.FakeState):
    credentials: str | None = None  # "user:pass" turns on HTTP Basic auth, like --api-auth
    step_s: float = 0.02
    default_steps: int = 20
    checkpoints: tuple[str, ...] = ("v1-5-pruned-emaonly.safetensors", "sd_xl_base_1.0")
    current_checkpoint: str = "v1-5-pruned-emaonly.safetensors"
    # Live generation state, as /sdapi/v1/progress shows it.
    job_count: int = 0
    sampling_step: int = 0
    sampling_steps: int = 0
    interrupted: bool = False
    started_at: float = 0.0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def generations(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.endswith(("/txt2img", "/img2img"))]

    def reset(self) -> None:
        self.requests.clear()
        self.job_count = self.sampling_step = self.sampling_steps = 0
        self.interrupted = False
        self.lock = asyncio.Lock()


def create_stable_diffusion_fake(state: FakeA1111State | None = None) -> FastAPI:
    """The fake as an ASGI app; serve it with `run_fake_in_thread` or uvicorn."""
    state = state or FakeA1111State()
    app = FastAPI(title="Fake AUTOMATIC1111 API", docs_url=None, redoc_url=None)
    app.state.fake = state

    async def generate(request: Request, mode: str) -> Response:
        body = await _common.json_body(request)
        state.requests.append(_common.record(request, body))
        if (denied := _check_auth(request, state)) is not None:
            return denied
        if not isinstance(body, dict):
            return _common.unprocessable("body", "Input should be a valid dictionary", "dict_type")
        if (invalid := _validate(body, mode)) is not None:
            return invalid
        markers = frozenset(_MARKER_RE.findall(str(body.get("prompt", ""))))
        if "oom" in markers:
            return JSONResponse(
                {
                    "error": "OutOfMemoryError",
                    "detail": "",
                    "body": "",
                    "errors": "CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 7.79 GiB "
                    "total capacity; 5.10 GiB already allocated)",
                },
                status_code=500,
            )
        if "500-html" in markers:
            return Response("Internal Server Error", status_code=500, media_type="text/plain")
        async with state.lock:
            return await _run(state, body, mode, markers)

    @app.post("/sdapi/v1/txt2img")
    async def txt2img(request: Request) -> Response:
        return await generate(request, "txt2img")

    @app.post("/sdapi/v1/img2img")
    async def img2img(request: Request) -> Response:
        return await generate(request, "img2img")

    @app.get("/sdapi/v1/progress")
    async def progress(request: Request, skip_current_image: bool = False) -> Response:
        state.requests.append(_common.record(request))
        if (denied := _check_auth(request, state)) is not None:
            return denied
        steps = state.sampling_steps or 1
        fraction = state.sampling_step / steps if state.job_count else 0.0
        elapsed = time.monotonic() - state.started_at
        eta = elapsed / fraction - elapsed if fraction > 0 else 0.0
        return JSONResponse(
            {
                "progress": fraction,
                "eta_relative": eta,
                "state": {
                    "skipped": False,
                    "interrupted": state.interrupted,
                    "job": "",
                    "job_count": state.job_count,
                    "job_timestamp": "20261125120000",
                    "job_no": 0,
                    "sampling_step": state.sampling_step,
                    "sampling_steps": state.sampling_steps,
                },
                "current_image": None,
                "textinfo": None,
            }
        )

    @app.post("/sdapi/v1/interrupt")
    async def interrupt(request: Request) -> Response:
        state.requests.append(_common.record(request))
        if (denied := _check_auth(request, state)) is not None:
            return denied
        if state.job_count:
            state.interrupted = True
        return JSONResponse({})

    @app.get("/sdapi/v1/sd-models")
    async def sd_models(request: Request) -> Response:
        if (denied := _check_auth(request, state)) is not None:
            return denied
        return JSONResponse(
            [{"title": name, "model_name": name.rsplit(".", 1)[0]} for name in state.checkpoints]
        )

    @app.get("/sdapi/v1/samplers")
    async def samplers(request: Request) -> Response:
        if (denied := _check_auth(request, state)) is not None:
            return denied
        return JSONResponse([{"name": name, "aliases": [], "options": {}} for name in _SAMPLERS])

    return app


def _check_auth(request: Request, state: FakeA1111State) -> Response | None:
    if state.credentials is None:
        return None
    expected = "Basic " + base64.b64encode(state.credentials.encode()).decode()
    given = request.headers.get("authorization", "")
    if not secrets.compare_digest(given, expected):
        return JSONResponse(
            {"detail": "Incorrect username or password"},
            status_code=401,
            headers={"WWW-Authenticate": "Basic"},
        )
    return None


def _validate(body: dict[str, Any], mode: str) -> Response | None:
    for key in ("width", "height", "batch_size", "n_iter", "steps", "seed"):
        value = body.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            return _common.unprocessable(key, "Input should be a valid integer", "int_type")
    prompt = body.get("prompt", "")
    if not isinstance(prompt, str):
        return _common.unprocessable("prompt", "Input should be a valid string", "string_type")
    sampler = body.get("sampler_name")
    if sampler is not None and sampler not in _SAMPLERS:
        return JSONResponse({"detail": "Sampler not found"}, status_code=404)
    if mode == "img2img":
        init_images = body.get("init_images")
        if not init_images:
            return JSONResponse({"detail": "Init image not found"}, status_code=404)
        for item in init_images:
            try:
                base64.b64decode(str(item).split(",", 1)[-1], validate=True)
            except ValueError:
                return JSONResponse(
                    {"error": "Error", "detail": "", "body": "", "errors": "Invalid encoded image"},
                    status_code=500,
                )
    return None


async def _run(
    state: FakeA1111State, body: dict[str, Any], mode: str, markers: frozenset[str]
) -> Response:
    width, height = body.get("width", 512), body.get("height", 512)
    batch = body.get("batch_size", 1) * body.get("n_iter", 1)
    steps = body.get("steps", state.default_steps)
    seed = body.get("seed", -1)
    seed = seed if isinstance(seed, int) and seed >= 0 else random.randint(0, _MAX_SEED)
    checkpoint = (body.get("override_settings") or {}).get("sd_model_checkpoint")
    model = checkpoint if checkpoint in state.checkpoints else state.current_checkpoint
    state.job_count, state.sampling_steps, state.sampling_step = 1, steps, 0
    state.interrupted = False
    state.started_at = time.monotonic()
    try:
        for step in range(1, steps + 1):
            await asyncio.sleep(state.step_s)
            state.sampling_step = step
            if state.interrupted:
                break
    finally:
        state.job_count = 0
    seeds = [seed + index for index in range(batch)]
    prompt = str(body.get("prompt", ""))
    images = await asyncio.to_thread(
        lambda: [render_image(f"{mode}#{prompt}#{s}", width, height, "png") for s in seeds]
    )
    encoded = [base64.b64encode(image).decode("ascii") for image in images]
    if "empty" in markers:
        encoded = []
    elif "garbage-image" in markers:
        encoded = [base64.b64encode(b"<html>nope</html>").decode("ascii")] * len(encoded)
    elif "extra-images" in markers:
        detection_map = render_image("detection map", 64, 64, "png")
        encoded.append(base64.b64encode(detection_map).decode("ascii"))
    info = {
        "prompt": prompt,
        "all_prompts": [prompt] * batch,
        "negative_prompt": body.get("negative_prompt", ""),
        "all_negative_prompts": [body.get("negative_prompt", "")] * batch,
        "seed": seeds[0],
        "all_seeds": seeds,
        "subseed": seeds[0] + 1,
        "all_subseeds": [s + 1 for s in seeds],
        "width": width,
        "height": height,
        "sampler_name": body.get("sampler_name", "Euler a"),
        "cfg_scale": body.get("cfg_scale", 7.0),
        "steps": steps,
        "batch_size": batch,
        "sd_model_name": model,
        "infotexts": [f"{prompt}\nSteps: {steps}, Seed: {s}, Model: {model}" for s in seeds],
        "job_timestamp": "20261125120000",
    }
    parameters = {k: v for k, v in body.items() if k != "init_images"}
    return JSONResponse({"images": encoded, "parameters": parameters, "info": json.dumps(info)})


def add_cli(fakes: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`python -m atelier_fakes stable-diffusion ...`"""
    _common.add_fake_parser(
        fakes,
        "stable-diffusion",
        help="fake AUTOMATIC1111/Forge API (/sdapi/v1/txt2img, img2img, progress, interrupt)",
        description="Fake A1111 web UI API: one generation at a time, progress polling, "
        "interrupt, optional HTTP Basic auth.",
        markers=MARKERS,
        state=FakeA1111State,
        serve=create_stable_diffusion_fake,
        url_suffix="",
        flags={
            "credentials": ("--api-auth", "USER:PASS: require HTTP Basic auth"),
            "step_s": ("--step-time", "seconds per step"),
        },
    )
