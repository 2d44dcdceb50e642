"""A fake ComfyUI server: `/prompt`, a queue run one prompt at a time, the websocket, history.

It reproduces the shapes a real ComfyUI 0.3.64 answered with (providers.md A.8 and A.13): the
400 validation bodies with `node_errors`, websocket events sent only to the socket whose
`clientId` matches the prompt's `client_id` (`execution_start` → `execution_cached` →
`executing`/`progress` per node → `executed` → `execution_success` → `executing {node: null}`),
binary preview frames, `/history/{id}` (`{}` for unknown ids), `/upload/image` renaming
different bytes under a taken name, `/view`, `/queue` with delete, and `/interrupt`. Every
route also answers under `/api`. Queue and history live in memory and `restart()` forgets them,
as the real server does.

A tiny node library stands in for models: it checks inputs like ComfyUI's validation does and
"renders" an image of the latent size. Failures are scripted by markers in any string input
(usually the prompt text), e.g. "a cat [comfyui:execution-error]"; see `MARKERS`.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import re
import struct
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse, Response
from PIL import Image
from starlette.datastructures import UploadFile

from atelier_fakes import _common
from atelier_fakes._common import RecordedRequest
from atelier_fakes.images import render_image

MARKERS: dict[str, str] = {
    "execution-error": "the sampler raises mid-run: `execution_error` (torch.OutOfMemoryError)",
    "no-output": "the prompt succeeds but its SaveImage node writes no files",
    "history-lag": "history shows the prompt only `history_lag_s` after `execution_success`",
    "missing-file": "the output files are gone before `/view` asks for them (404)",
    "500": "`POST /prompt` answers 500 with a plain-text body (a crashed server)",
}
_MARKER_RE = re.compile(r"\[comfyui:([a-z0-9\-]+)\]")

# class_type → (required inputs, output node?, reports progress?)
_NODES: dict[str, tuple[tuple[str, ...], bool, bool]] = {
    "CheckpointLoaderSimple": (("ckpt_name",), False, False),
    "CLIPTextEncode": (("text", "clip"), False, False),
    "EmptyLatentImage": (("width", "height", "batch_size"), False, False),
    "KSampler": (
        (
            "seed",
            "steps",
            "cfg",
            "sampler_name",
            "scheduler",
            "denoise",
            "model",
            "positive",
            "negative",
            "latent_image",
        ),
        False,
        True,
    ),
    "VAEDecode": (("samples", "vae"), False, False),
    "VAEEncode": (("pixels", "vae"), False, False),
    "LoadImage": (("image",), False, False),
    "EmptyImage": (("width", "height", "batch_size", "color"), False, False),
    "ImageInvert": (("image",), False, False),
    "ImageScale": (("image", "upscale_method", "width", "height", "crop"), False, False),
    "SaveImage": (("images", "filename_prefix"), True, False),
    "PreviewImage": (("images",), True, False),
}
_MAX_RESOLUTION = 16384
_MAX_SEED = 0xFFFF_FFFF_FFFF_FFFF


@dataclass
class QueuedPrompt:
    number: int
    prompt_id: str
    prompt: dict[str, Any]
    client_id: str | None
    outputs: list[str]
    markers: frozenset[str]


@dataclass
class FakeComfyUIState(_common.FakeState):
    node_s: float = 0.01  # time each node takes
    step_s: float = 0.02  # time each sampler step takes
    history_lag_s: float = 0.3
    checkpoints: tuple[str, ...] = ("sd_xl_base_1.0.safetensors", "flux1-dev-fp8.safetensors")
    websocket_enabled: bool = True
    ws_connections: list[str] = field(default_factory=list)  # clientIds, in connection order
    # Everything below is the server's in-memory world; `restart()` empties it.
    pending: list[QueuedPrompt] = field(default_factory=list)
    running: QueuedPrompt | None = None
    history: dict[str, dict[str, Any]] = field(default_factory=dict)
    inputs: dict[tuple[str, str], bytes] = field(default_factory=dict)  # (subfolder, name)
    outputs: dict[tuple[str, str, str], bytes] = field(default_factory=dict)  # (type, sub, name)
    interrupt_requested: bool = False
    counter: int = 0
    file_counter: int = 0
    sockets: dict[str, set[WebSocket]] = field(default_factory=dict)
    worker: asyncio.Task[None] | None = None

    @property
    def submissions(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == "POST" and r.path.endswith("/prompt")]

    def restart(self) -> None:
        """Forget the queue and history, as a restarted ComfyUI does (files stay on disk)."""
        self.pending.clear()
        self.running = None
        self.history.clear()

    def reset(self) -> None:
        self.restart()
        self.requests.clear()
        self.ws_connections.clear()
        self.inputs.clear()
        self.outputs.clear()
        self.interrupt_requested = False
        self.websocket_enabled = True


class _Invalid(Exception):
    def __init__(self, body: dict[str, Any]) -> None:
        super().__init__(str(body))
        self.body = body


def create_comfyui_fake(state: FakeComfyUIState | None = None) -> FastAPI:
    """The fake as an ASGI app; serve it with `run_fake_in_thread` or uvicorn."""
    state = state or FakeComfyUIState()
    app = FastAPI(title="Fake ComfyUI", docs_url=None, redoc_url=None)
    app.state.fake = state

    for prefix in ("", "/api"):
        _add_routes(app, state, prefix)

    @app.websocket("/ws")
    async def events(websocket: WebSocket) -> None:
        if not state.websocket_enabled:
            await websocket.close(code=1008)
            return
        client_id = websocket.query_params.get("clientId") or uuid.uuid4().hex
        await websocket.accept()
        state.ws_connections.append(client_id)
        state.sockets.setdefault(client_id, set()).add(websocket)
        try:
            await websocket.send_json(_status_message(state, sid=client_id))
            while True:
                await websocket.receive_text()  # clients never need to say anything
        except WebSocketDisconnect:
            pass
        finally:
            state.sockets.get(client_id, set()).discard(websocket)

    return app


def _add_routes(app: FastAPI, state: FakeComfyUIState, prefix: str) -> None:
    @app.post(f"{prefix}/prompt")
    async def post_prompt(request: Request) -> Response:
        raw = await request.body()
        try:
            body = await request.json()
        except ValueError:
            state.requests.append(_common.record(request, raw.decode("utf-8", errors="replace")))
            return Response("500: Internal Server Error", status_code=500)
        state.requests.append(_common.record(request, body))
        if not isinstance(body, dict) or "prompt" not in body:
            return JSONResponse(
                {
                    "error": {
                        "type": "no_prompt",
                        "message": "No prompt provided",
                        "details": "No prompt provided",
                        "extra_info": {},
                    },
                    "node_errors": {},
                },
                status_code=400,
            )
        graph = body["prompt"]
        markers = _markers(graph)
        if "500" in markers:
            return Response("500: Internal Server Error", status_code=500)
        try:
            outputs = _validate(graph, state)
        except _Invalid as invalid:
            return JSONResponse(invalid.body, status_code=400)
        state.counter += 1
        prompt_id = body.get("prompt_id")
        prompt_id = prompt_id if isinstance(prompt_id, str) and prompt_id else str(uuid.uuid4())
        client_id = body.get("client_id")
        state.pending.append(
            QueuedPrompt(
                number=state.counter,
                prompt_id=prompt_id,
                prompt=graph,
                client_id=client_id if isinstance(client_id, str) else None,
                outputs=outputs,
                markers=markers,
            )
        )
        if state.worker is None or state.worker.done():
            state.worker = asyncio.create_task(_run_queue(state))
        await _broadcast(state, _status_message(state))
        return JSONResponse({"prompt_id": prompt_id, "number": state.counter, "node_errors": {}})

    @app.get(f"{prefix}/history/{{prompt_id}}")
    async def get_history_entry(prompt_id: str, request: Request) -> Response:
        state.requests.append(_common.record(request))
        entry = state.history.get(prompt_id)
        if entry is None or time.time() < entry.get("_visible_at", 0):
            return JSONResponse({})
        return JSONResponse({prompt_id: _public(entry)})

    @app.get(f"{prefix}/history")
    async def get_history(request: Request, max_items: int | None = None) -> Response:
        state.requests.append(_common.record(request))
        now = time.time()
        items = [(k, v) for k, v in state.history.items() if now >= v.get("_visible_at", 0)]
        if max_items is not None:
            items = items[-max_items:]
        return JSONResponse({k: _public(v) for k, v in items})

    @app.get(f"{prefix}/queue")
    async def get_queue(request: Request) -> Response:
        state.requests.append(_common.record(request))
        running = [_queue_item(state.running)] if state.running else []
        return JSONResponse(
            {"queue_running": running, "queue_pending": [_queue_item(p) for p in state.pending]}
        )

    @app.post(f"{prefix}/queue")
    async def post_queue(request: Request) -> Response:
        body = await request.json()
        state.requests.append(_common.record(request, body))
        if isinstance(body, dict) and body.get("clear"):
            state.pending.clear()
        if isinstance(body, dict) and isinstance(body.get("delete"), list):
            doomed = set(body["delete"])
            state.pending[:] = [p for p in state.pending if p.prompt_id not in doomed]
        return Response(status_code=200)

    @app.post(f"{prefix}/interrupt")
    async def interrupt(request: Request) -> Response:
        raw = await request.body()
        body: Any = None
        if raw:
            try:
                body = await request.json()
            except ValueError:
                body = None
        state.requests.append(_common.record(request, body))
        wanted = body.get("prompt_id") if isinstance(body, dict) else None
        if state.running is not None and wanted in (None, state.running.prompt_id):
            state.interrupt_requested = True
        return Response(status_code=200)

    @app.post(f"{prefix}/upload/image")
    async def upload_image(request: Request) -> Response:
        form = await request.form()
        image = form.get("image")
        state.requests.append(
            _common.record(request, {k: v for k, v in form.items() if k != "image"})
        )
        if not isinstance(image, UploadFile) or not image.filename:
            return Response(status_code=400)
        data = await image.read()
        subfolder = str(form.get("subfolder") or "")
        overwrite = str(form.get("overwrite") or "").lower() in ("true", "1")
        if ".." in subfolder or "/" in image.filename:
            return Response(status_code=400)
        name = image.filename
        if not overwrite:
            name = _free_name(state, subfolder, name, data)
        state.inputs[(subfolder, name)] = data
        return JSONResponse({"name": name, "subfolder": subfolder, "type": "input"})

    @app.get(f"{prefix}/view")
    async def view(
        request: Request, filename: str, subfolder: str = "", type: str = "output"
    ) -> Response:
        state.requests.append(_common.record(request))
        if ".." in filename or ".." in subfolder:
            return Response(status_code=400)
        if type == "input":
            data = state.inputs.get((subfolder, filename))
        else:
            data = state.outputs.get((type, subfolder, filename))
        if data is None:
            return Response(status_code=404)
        return Response(data, media_type="image/png")


def _markers(graph: Any) -> frozenset[str]:
    found: set[str] = set()
    if isinstance(graph, dict):
        for node in graph.values():
            inputs = node.get("inputs") if isinstance(node, dict) else None
            for value in (inputs or {}).values():
                if isinstance(value, str):
                    found.update(_MARKER_RE.findall(value))
    return frozenset(found)


def _validate(graph: Any, state: FakeComfyUIState) -> list[str]:
    """ComfyUI's checks, in its words; returns the output node ids."""
    if not isinstance(graph, dict):
        raise _Invalid(_prompt_error("invalid_prompt", "Prompt is not a dict"))
    for node_id, node in graph.items():
        class_type = node.get("class_type") if isinstance(node, dict) else None
        if class_type not in _NODES:
            raise _Invalid(
                _prompt_error(
                    "invalid_prompt",
                    f"Cannot execute because node {class_type} does not exist.",
                    f"Node ID '#{node_id}'",
                )
            )
    outputs = [node_id for node_id, node in graph.items() if _NODES[node["class_type"]][1]]
    if not outputs:
        raise _Invalid(_prompt_error("prompt_no_outputs", "Prompt has no outputs"))
    node_errors: dict[str, Any] = {}
    for node_id, node in graph.items():
        errors = _node_errors(node, graph, state)
        if errors:
            node_errors[node_id] = {
                "errors": errors,
                "dependent_outputs": outputs,
                "class_type": node["class_type"],
            }
    if node_errors:
        body = _prompt_error("prompt_outputs_failed_validation", "Prompt outputs failed validation")
        body["node_errors"] = node_errors
        raise _Invalid(body)
    return outputs


def _node_errors(
    node: dict[str, Any], graph: dict[str, Any], state: FakeComfyUIState
) -> list[dict[str, Any]]:
    required, _, _ = _NODES[node["class_type"]]
    raw_inputs = node.get("inputs")
    inputs: dict[str, Any] = raw_inputs if isinstance(raw_inputs, dict) else {}
    errors = []
    for name in required:
        value = inputs.get(name)
        if value is None:
            errors.append(_input_error("required_input_missing", "Required input is missing", name))
            continue
        if isinstance(value, list):  # a link: [node_id, output_index]
            if not value or str(value[0]) not in graph:
                errors.append(
                    _input_error("invalid_input_type", "Linked node does not exist", name)
                )
            continue
        if name in ("width", "height") and (not isinstance(value, int) or value > _MAX_RESOLUTION):
            errors.append(
                _input_error(
                    "value_bigger_than_max",
                    f"Value {value} bigger than max of {_MAX_RESOLUTION}",
                    name,
                )
            )
        if name == "seed" and (not isinstance(value, int) or not 0 <= value <= _MAX_SEED):
            errors.append(
                _input_error("value_bigger_than_max", f"Value {value} out of range", name)
            )
        if name == "ckpt_name" and value not in state.checkpoints:
            errors.append(
                _input_error(
                    "value_not_in_list",
                    "Value not in list",
                    name,
                    f"ckpt_name: '{value}' not in {list(state.checkpoints)}",
                )
            )
        if name == "image" and node["class_type"] == "LoadImage":
            subfolder, _, filename = str(value).rpartition("/")
            if (subfolder, filename) not in state.inputs:
                errors.append(
                    _input_error(
                        "custom_validation_failed",
                        "Custom validation failed for node",
                        name,
                        f"image - Invalid image file: {value}",
                    )
                )
    return errors


def _input_error(
    error_type: str, message: str, name: str, details: str | None = None
) -> dict[str, Any]:
    return {
        "type": error_type,
        "message": message,
        "details": details or name,
        "extra_info": {"input_name": name},
    }


def _prompt_error(error_type: str, message: str, details: str = "") -> dict[str, Any]:
    return {
        "error": {"type": error_type, "message": message, "details": details, "extra_info": {}},
        "node_errors": {},
    }


async def _run_queue(state: FakeComfyUIState) -> None:
    """Run queued prompts one after another; stop when the queue is empty."""
    while state.pending:
        prompt = state.pending.pop(0)
        state.running = prompt
        state.interrupt_requested = False
        try:
            await _execute(state, prompt)
        finally:
            state.running = None
            await _broadcast(state, _status_message(state))


async def _execute(state: FakeComfyUIState, job: QueuedPrompt) -> None:
    prompt_id = job.prompt_id
    messages: list[list[Any]] = []

    async def emit(kind: str, data: dict[str, Any], keep: bool = False) -> None:
        if keep:
            messages.append([kind, data])
        await _send_to(state, job.client_id, {"type": kind, "data": data})

    started = _now_ms()
    await emit("execution_start", {"prompt_id": prompt_id, "timestamp": started}, keep=True)
    await emit(
        "execution_cached", {"nodes": [], "prompt_id": prompt_id, "timestamp": started}, keep=True
    )
    outputs: dict[str, Any] = {}
    executed: list[str] = []
    for node_id in _order(job.prompt, job.outputs):
        node = job.prompt[node_id]
        class_type = node["class_type"]
        await emit("executing", {"node": node_id, "display_node": node_id, "prompt_id": prompt_id})
        _, is_output, has_progress = _NODES[class_type]
        steps = int(node["inputs"].get("steps", 1)) if has_progress else 1
        for step in range(1, steps + 1):
            await asyncio.sleep(state.step_s if has_progress else state.node_s)
            if state.interrupt_requested:
                data = {
                    "prompt_id": prompt_id,
                    "node_id": node_id,
                    "node_type": class_type,
                    "executed": executed,
                    "timestamp": _now_ms(),
                }
                await emit("execution_interrupted", data, keep=True)
                _finish(state, job, "error", False, {}, messages)
                return
            if has_progress:
                await emit(
                    "progress",
                    {"value": step, "max": steps, "prompt_id": prompt_id, "node": node_id},
                )
                await _send_preview(state, job.client_id)
                if "execution-error" in job.markers and step * 2 >= steps:
                    await _fail(state, job, node_id, class_type, executed, emit, messages)
                    return
        if is_output:
            images = [] if "no-output" in job.markers else _save_outputs(state, job, node)
            outputs[node_id] = {"images": images}
            await emit(
                "executed",
                {
                    "node": node_id,
                    "display_node": node_id,
                    "output": outputs[node_id],
                    "prompt_id": prompt_id,
                },
            )
        executed.append(node_id)
    await emit("execution_success", {"prompt_id": prompt_id, "timestamp": _now_ms()}, keep=True)
    _finish(state, job, "success", True, outputs, messages)
    await _broadcast(state, _status_message(state, pending_only=True))
    await _send_to(
        state, job.client_id, {"type": "executing", "data": {"node": None, "prompt_id": prompt_id}}
    )


async def _fail(
    state: FakeComfyUIState,
    job: QueuedPrompt,
    node_id: str,
    class_type: str,
    executed: list[str],
    emit: Any,
    messages: list[list[Any]],
) -> None:
    data = {
        "prompt_id": job.prompt_id,
        "node_id": node_id,
        "node_type": class_type,
        "executed": executed,
        "exception_message": "Allocation on device would exceed allowed memory. "
        "(out of memory)\nCurrently allocated     : 7.80 GiB",
        "exception_type": "torch.OutOfMemoryError",
        "traceback": ['  File "execution.py", line 496, in execute\n'],
        "current_inputs": {},
        "current_outputs": {},
    }
    await emit("execution_error", data, keep=True)
    _finish(state, job, "error", False, {}, messages)


def _finish(
    state: FakeComfyUIState,
    job: QueuedPrompt,
    status_str: str,
    completed: bool,
    outputs: dict[str, Any],
    messages: list[list[Any]],
) -> None:
    lag = state.history_lag_s if "history-lag" in job.markers else 0.0
    if "missing-file" in job.markers:
        for output in outputs.values():
            for image in output["images"]:
                state.outputs.pop((image["type"], image["subfolder"], image["filename"]), None)
    state.history[job.prompt_id] = {
        "prompt": [
            job.number,
            job.prompt_id,
            job.prompt,
            {"client_id": job.client_id},
            job.outputs,
        ],
        "outputs": outputs,
        "status": {"status_str": status_str, "completed": completed, "messages": messages},
        "meta": {node: {"node_id": node, "display_node": node} for node in outputs},
        "_visible_at": time.time() + lag,
    }


def _save_outputs(
    state: FakeComfyUIState, job: QueuedPrompt, node: dict[str, Any]
) -> list[dict[str, str]]:
    width, height, batch = _latent_size(job.prompt)
    kind = "output" if node["class_type"] == "SaveImage" else "temp"
    prefix = str(node["inputs"].get("filename_prefix", "ComfyUI")) if kind == "output" else "pv"
    subfolder, _, stem = prefix.rpartition("/")
    text = " ".join(
        str(n["inputs"].get("text", ""))
        for n in job.prompt.values()
        if n["class_type"] == "CLIPTextEncode"
    )
    images = []
    for index in range(batch):
        state.file_counter += 1
        filename = f"{stem}_{state.file_counter:05d}_.png"
        seed = next(
            (n["inputs"].get("seed") for n in job.prompt.values() if "seed" in n["inputs"]), 0
        )
        state.outputs[(kind, subfolder, filename)] = render_image(
            f"{text}#{seed}#{index}", width, height, "png"
        )
        images.append({"filename": filename, "subfolder": subfolder, "type": kind})
    return images


def _latent_size(graph: dict[str, Any]) -> tuple[int, int, int]:
    """The size the graph renders at: the last ImageScale, else the empty latent/image, else
    the first loaded image; batch from the empty latent."""
    width, height, batch = 512, 512, 1
    for node in graph.values():
        inputs = node["inputs"]
        if node["class_type"] in ("EmptyLatentImage", "EmptyImage"):
            width, height = int(inputs["width"]), int(inputs["height"])
            batch = int(inputs.get("batch_size", 1))
    for node in graph.values():
        if node["class_type"] == "ImageScale":
            width, height = int(node["inputs"]["width"]), int(node["inputs"]["height"])
    return width, height, max(1, batch)


def _order(graph: dict[str, Any], outputs: list[str]) -> list[str]:
    """Nodes the outputs depend on, dependencies first (ComfyUI's execution order)."""
    order: list[str] = []
    seen: set[str] = set()

    def visit(node_id: str) -> None:
        if node_id in seen:
            return
        seen.add(node_id)
        for value in graph[node_id]["inputs"].values():
            if isinstance(value, list) and value and str(value[0]) in graph:
                visit(str(value[0]))
        order.append(node_id)

    for output in outputs:
        visit(output)
    return order


def _free_name(state: FakeComfyUIState, subfolder: str, name: str, data: bytes) -> str:
    """ComfyUI keeps an identical file's name and renames different bytes: "ref (1).png"."""
    stem, dot, extension = name.rpartition(".")
    candidate, index = name, 0
    while (subfolder, candidate) in state.inputs and state.inputs[(subfolder, candidate)] != data:
        index += 1
        candidate = f"{stem} ({index}){dot}{extension}" if dot else f"{name} ({index})"
    return candidate


def _queue_item(prompt: QueuedPrompt) -> list[Any]:
    return [
        prompt.number,
        prompt.prompt_id,
        prompt.prompt,
        {"client_id": prompt.client_id},
        prompt.outputs,
    ]


def _public(entry: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in entry.items() if not k.startswith("_")}


def _status_message(
    state: FakeComfyUIState, sid: str | None = None, pending_only: bool = False
) -> dict[str, Any]:
    remaining = len(state.pending) + (0 if pending_only or state.running is None else 1)
    data: dict[str, Any] = {"status": {"exec_info": {"queue_remaining": remaining}}}
    if sid is not None:
        data["sid"] = sid
    return {"type": "status", "data": data}


async def _send_to(state: FakeComfyUIState, client_id: str | None, message: dict[str, Any]) -> None:
    # Only the socket whose clientId matches hears about a prompt (A.13).
    for websocket in list(state.sockets.get(client_id or "", ())):
        try:
            await websocket.send_json(message)
        except Exception:  # a client that went away mid-send
            state.sockets.get(client_id or "", set()).discard(websocket)


async def _broadcast(state: FakeComfyUIState, message: dict[str, Any]) -> None:
    for client_id in list(state.sockets):
        await _send_to(state, client_id, message)


async def _send_preview(state: FakeComfyUIState, client_id: str | None) -> None:
    """A binary frame: event type 1 (preview), image type 2 (PNG), then the image."""
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (128, 128, 128)).save(out, format="PNG")
    frame = struct.pack(">II", 1, 2) + out.getvalue()
    for websocket in list(state.sockets.get(client_id or "", ())):
        try:
            await websocket.send_bytes(frame)
        except Exception:
            state.sockets.get(client_id or "", set()).discard(websocket)


def _now_ms() -> int:
    return int(time.time() * 1000)


def add_cli(fakes: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`python -m atelier_fakes comfyui ...`"""
    _common.add_fake_parser(
        fakes,
        "comfyui",
        help="fake ComfyUI server (/prompt, /ws, /history, /view, /upload/image, /queue)",
        description="Fake ComfyUI: validates API-format workflows, runs them one at a time "
        "with websocket events, keeps history in memory.",
        markers=MARKERS,
        where="in any string input, e.g. the prompt text",
        state=FakeComfyUIState,
        serve=create_comfyui_fake,
        url_suffix="",
        flags={
            "step_s": ("--step-time", "seconds per step"),
            "node_s": ("--node-time", "seconds per node"),
            "websocket_enabled": ("--websocket", "serve /ws (without it clients poll history)"),
        },
    )
