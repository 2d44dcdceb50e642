"""A fake Cloudflare Workers AI: `POST /client/v4/accounts/{account_id}/ai/run/{model}`.

Like the real one (providers.md A.12): most models take JSON and answer raw image bytes (Stable
Diffusion family) or `{result: {image: <b64>}, success, errors, messages}` (FLUX.1 schnell,
Lucid Origin, Phoenix); FLUX.2 models take `multipart/form-data` only. Errors are
`{success: false, errors: [{code, message}]}`. Failures are scripted by prompt markers such as
"a cat [workersai:capacity]"; see `MARKERS`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import io
import re
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from PIL import Image, UnidentifiedImageError
from starlette.datastructures import UploadFile

from atelier_fakes import _common
from atelier_fakes.images import render_image

MARKERS: dict[str, str] = {
    "401-echo-key": "401 whose message echoes the caller's token (a leaky proxy)",
    "429": "429 code 3036 rate limited, with `retry-after`",
    "capacity": "429 code 3040 capacity temporarily exceeded",
    "daily-limit": "429 code 4006 daily free allocation used up",
    "nsfw-input": "400 code 3030 input prompt contains NSFW content",
    "nsfw-output": "400 code 3030 output image contains NSFW content",
    "bad-input": "400 code 5006 input validation error",
    "500": "500 code 3043 internal server error",
    "200-failure": "200 with success:false and code 3043",
    "empty": "200 JSON with success:true and no result.image",
    "garbage-image": "200 image/png whose bytes are not an image",
    "hang": _common.HANG_MARKER,
}
_MARKER_RE = re.compile(r"\[workersai:([a-z0-9\-]+)\]")
# Models whose answer is JSON with a base64 image; the others send raw bytes.
_JSON_ANSWER = ("flux-1-schnell", "lucid-origin", "phoenix", "flux-2")
_JSON_FIELDS = frozenset(
    {
        "prompt",
        "negative_prompt",
        "width",
        "height",
        "num_steps",
        "steps",
        "guidance",
        "strength",
        "seed",
        "image",
        "image_b64",
        "mask",
    }
)
_FORM_FIELDS = frozenset({"prompt", "width", "height", "steps", "guidance", "seed"}) | {
    f"input_image_{index}" for index in range(4)
}


@dataclass
class FakeWorkersAIState(_common.FakeState):
    api_key: str = "cf-fake-workers-ai-token-0000000000000"
    account_id: str = "0123456789abcdef0123456789abcdef"
    hang_s: float = 60.0
    delay_s: float = 0.0
    retry_after_s: float = 2.0
    # JSON bodies as parsed; multipart ones as their fields (files as (name, type, size)).


class _Reject(Exception):
    def __init__(
        self, status: int, code: int, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}


def create_workersai_fake(state: FakeWorkersAIState | None = None) -> FastAPI:
    """The fake as an ASGI app; serve it with `run_fake_in_thread` or uvicorn."""
    state = state or FakeWorkersAIState()
    app = FastAPI(title="Fake Cloudflare Workers AI", docs_url=None, redoc_url=None)
    app.state.fake = state

    @app.post("/client/v4/accounts/{account_id}/ai/run/{model:path}")
    async def run(account_id: str, model: str, request: Request) -> Response:
        recorded = _common.record(request)
        state.requests.append(recorded)
        try:
            token = _check_auth(request.headers.get("authorization"), state.api_key)
            if account_id != state.account_id:
                raise _Reject(
                    400,
                    7003,
                    f"Could not route to /client/v4/accounts/{account_id}/ai/run, perhaps your "
                    "object identifier is invalid?",
                )
            multipart = request.headers.get("content-type", "").startswith("multipart/form-data")
            if "/flux-2" in model:
                if not multipart:
                    raise _Reject(400, 5006, "this model takes multipart/form-data input")
                fields, recorded.body = await _form(request)
            else:
                if multipart:
                    raise _Reject(400, 5006, "this model takes a JSON body")
                fields = _json_fields(await _common.json_body(request))
                recorded.body = fields
            width, height = _dimensions(fields)
            if state.delay_s > 0:
                await asyncio.sleep(state.delay_s)
            return await _answer(request, model, fields, width, height, state, token)
        except _Reject as reject:
            return _error(reject)

    return app


def _check_auth(header: str | None, token: str) -> str:
    if not header or not header.startswith("Bearer ") or header[7:].strip() != token:
        raise _Reject(401, 10000, "Authentication error")
    return header[7:].strip()


def _json_fields(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise _Reject(400, 5006, "Error: Type mismatch of '/', 'string' not in 'object'")
    for key in body:
        if key not in _JSON_FIELDS:
            raise _Reject(400, 5006, f"Error: additional property '{key}' not allowed at '/'")
    if not isinstance(body.get("prompt"), str) or not body["prompt"]:
        raise _Reject(400, 5006, "Error: required properties at '/' are 'prompt'")
    if "image_b64" in body:
        _check_image(_b64(body["image_b64"]))
    return body


async def _form(request: Request) -> tuple[dict[str, Any], dict[str, Any]]:
    form = await request.form()
    fields: dict[str, Any] = {}
    shown: dict[str, Any] = {}
    for name, value in form.multi_items():
        if name not in _FORM_FIELDS:
            raise _Reject(400, 5006, f"Error: unknown form field '{name}'")
        if isinstance(value, UploadFile):
            data = await value.read()
            _check_image(data)
            fields[name] = data
            shown[name] = (value.filename, value.content_type, len(data))
        else:
            fields[name] = shown[name] = value
    if not fields.get("prompt"):
        raise _Reject(400, 5006, "Error: required properties at '/' are 'prompt'")
    return fields, shown


def _b64(value: Any) -> bytes:
    try:
        return base64.b64decode(value, validate=True) if isinstance(value, str) else b""
    except (binascii.Error, ValueError):
        raise _Reject(400, 5006, "Error: image_b64 is not base64") from None


def _check_image(data: bytes) -> None:
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.verify()
    except (UnidentifiedImageError, OSError):
        raise _Reject(400, 5006, "Error: input image could not be decoded") from None


def _dimensions(fields: dict[str, Any]) -> tuple[int, int]:
    sides = []
    for name in ("width", "height"):
        try:
            side = int(fields.get(name, 1024))
        except (TypeError, ValueError):
            raise _Reject(400, 5006, f"Error: '{name}' must be an integer") from None
        if not 256 <= side <= 2048:
            raise _Reject(400, 5006, f"Error: '{name}' must be between 256 and 2048")
        sides.append(side)
    return sides[0], sides[1]


async def _answer(
    request: Request,
    model: str,
    fields: dict[str, Any],
    width: int,
    height: int,
    state: FakeWorkersAIState,
    token: str,
) -> Response:
    prompt = str(fields["prompt"])
    for marker in _MARKER_RE.findall(prompt):
        if marker == "hang":
            await _common.hang(request, state.hang_s)
        elif marker == "empty":
            return JSONResponse({"result": {}, "success": True, "errors": [], "messages": []})
        elif marker == "garbage-image":
            return Response(b"<html>no</html>", media_type="image/png")
        elif marker == "200-failure":
            return _error(_Reject(200, 3043, "Internal server error"))
        else:
            raise _scripted_rejection(marker, state, token)
    json_answer = any(name in model for name in _JSON_ANSWER)
    output_format = "jpeg" if json_answer else "png"
    image = await asyncio.to_thread(
        render_image, f"{model}:{prompt}:{fields.get('seed')}", width, height, output_format
    )
    if json_answer:
        return JSONResponse(
            {
                "result": {"image": base64.b64encode(image).decode("ascii")},
                "success": True,
                "errors": [],
                "messages": [],
            },
            headers={"cf-ray": "8f00fake0000-AMS"},
        )
    return Response(image, media_type="image/png", headers={"cf-ray": "8f00fake0001-AMS"})


def _scripted_rejection(marker: str, state: FakeWorkersAIState, token: str) -> _Reject:
    rejections = {
        "401-echo-key": _Reject(401, 10000, f"Authentication error: token {token} is invalid"),
        "429": _Reject(
            429, 3036, "Account limited: Rate limited", {"retry-after": f"{state.retry_after_s:g}"}
        ),
        "capacity": _Reject(429, 3040, "Capacity temporarily exceeded, please try again."),
        "daily-limit": _Reject(
            429,
            4006,
            "you have used up your daily free allocation of 10,000 neurons, please upgrade to "
            "Cloudflare's Workers Paid plan if you would like to continue usage.",
        ),
        "nsfw-input": _Reject(400, 3030, "AiError: Input prompt contains NSFW content."),
        "nsfw-output": _Reject(400, 3030, "AiError: Output image contains NSFW content."),
        "bad-input": _Reject(400, 5006, "Error: required properties at '/' are 'prompt'"),
        "500": _Reject(500, 3043, "Internal server error"),
    }
    return rejections.get(marker) or _Reject(400, 5006, f"fake: unknown marker {marker!r}")


def _error(reject: _Reject) -> JSONResponse:
    return JSONResponse(
        {
            "result": None,
            "success": False,
            "errors": [{"code": reject.code, "message": reject.message}],
            "messages": [],
        },
        status_code=reject.status,
        headers=reject.headers,
    )


def add_cli(fakes: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`python -m atelier_fakes workersai ...`"""
    _common.add_fake_parser(
        fakes,
        "workersai",
        help="fake Cloudflare Workers AI (POST /client/v4/accounts/{id}/ai/run/{model})",
        description="Fake Workers AI text-to-image models (JSON and FLUX.2 multipart).",
        markers=MARKERS,
        state=FakeWorkersAIState,
        serve=create_workersai_fake,
        url_suffix="/client/v4",
        flags={
            "api_key": ("--api-key", "token to accept"),
            "account_id": ("--account-id", "account id to accept"),
            "delay_s": _common.DELAY,
            "hang_s": _common.HANG,
        },
    )
