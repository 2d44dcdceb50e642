"""ComfyUI: the profile's workflow graph, filled in through a node map, run via `/prompt`.

Wire format and failure modes: providers.md A.8 and A.13. One call:
1. uploads each reference image (`POST /upload/image`, named by its content hash with
   `overwrite`, so the same picture always has the same name and no renamed copies pile up);
2. copies the workflow and writes prompt, negative prompt, size, seed, batch size, steps,
   checkpoint and reference images into the inputs the node map names;
3. opens the websocket `/ws?clientId=` *before* submitting (ComfyUI only tells the socket whose
   id equals the prompt's `client_id`), saves the handle, then `POST /prompt`;
4. follows `progress`/`executing`/`execution_*` events, checking `/history/{id}` every poll
   interval too (history is the source of truth, and the only one when the socket is down);
5. downloads the output images with `/view`.

The prompt id is chosen here and sent with the prompt (newer builds honour it; older ones
answer with their own, which is then saved instead), so the handle is saved before ComfyUI has
even seen the job. A restarted worker finds the job in history or in the queue and waits on it
again; if ComfyUI has neither (it keeps both in memory and forgets them when it restarts, or
the worker died before submitting), the workflow is submitted anew.

Profile settings (`provider_config`):
- `workflow` (required): the API-format graph `{node_id: {class_type, inputs}}` (or its JSON).
- `node_map` (required, at least `prompt`): role → `{"node": "6", "input": "text"}` (a list of
  such, or `"node": [ids]`, sets several nodes); roles: prompt, negative_prompt, width, height,
  seed, batch_size, steps, model (checkpoint name), reference_image (the i-th reference goes to
  the i-th node listed; more references than nodes is `invalid_request`), output (which
  nodes' images to return; default every `output` image). Open WebUI's list form
  `[{"type", "node_ids", "key"}]` is accepted too. `"prompt": null` says the workflow takes no
  text: the prompt is then written nowhere, and the output carries a note saying so.
  Parsing and the check that every mapped node and input is in the workflow live in
  `atelier_contracts.comfyui`, which the profiles service runs when a profile is saved; they run
  here again for profiles stored before that check existed.
- `poll_interval_s`: seconds between history checks (default 1).
- `use_websocket`: false to rely on history polling alone (default true).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from secrets import randbelow
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from atelier_contracts.comfyui import (
    PROMPT_NOT_USED_NOTE,
    prompt_not_used,
)
from atelier_contracts.errors import ErrorClass
from atelier_workers.adapters import _http
from atelier_workers.adapters._comfyui_wire import (
    checked,
    error_from_response,
    execution_error,
    fill_workflow,
    history_failure,
    output_files,
    queue_ids,
    ws_url,
)
from atelier_workers.adapters.base import (
    GenerationOutput,
    ImageRequest,
    ProviderError,
    ReferenceImage,
)

log = logging.getLogger("atelier.workers.comfyui")

DEFAULT_POLL_INTERVAL_S = 1.0
# Every this many history checks without an entry, make sure the queue still has the prompt.
QUEUE_CHECK_EVERY = 5
# History can lag the websocket's "done" by a moment (A.13); wait this long for it to appear.
HISTORY_GRACE_S = 5.0
# A prompt gone from the queue gets this long to show up in history before it counts as lost.
VANISHED_GRACE_S = 1.0
# Binary frames carry previews (and whole images from SaveImageWebsocket nodes).
MAX_WS_MESSAGE_BYTES = 32 * 1024 * 1024
UPLOAD_SUBFOLDER = "atelier"
# ComfyUI seeds are unsigned 64-bit; stay within what every sampler node accepts.
_MAX_SEED = 2**32 - 1
_EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}


class _PromptGone(Exception):
    """ComfyUI knows the prompt neither in its history nor in its queue: it restarted (queue
    and history live in memory), the prompt was deleted, or it was never submitted."""


class ComfyUIAdapter(_http.HttpAdapter):
    awaited = "result"
    name: str = "comfyui"

    async def cancel(
        self, request: ImageRequest, handle: dict[str, Any], client: httpx.AsyncClient
    ) -> None:
        """Drop the prompt from the queue, or interrupt it if it is the one running.

        `/interrupt` stops whatever runs; it is sent only when the running prompt is ours, and
        with our prompt id, which newer builds check themselves.
        """
        prompt_id = handle.get("prompt_id")
        if not isinstance(prompt_id, str):
            return
        await self._call(
            request, client, "POST", "/queue", json={"delete": [prompt_id]}, timeout_s=30.0
        )
        running, _ = await self._queue(request, client)
        if prompt_id in running:
            await self._call(
                request, client, "POST", "/interrupt", json={"prompt_id": prompt_id}, timeout_s=30.0
            )

    def build_workflow(
        self, request: ImageRequest, seed: int, uploaded: list[str]
    ) -> dict[str, Any]:
        """`fill_workflow`, for a request within this adapter's own limits."""
        self.check_request(request)
        return fill_workflow(request, seed, uploaded)

    async def _generate(self, request: ImageRequest, client: httpx.AsyncClient) -> GenerationOutput:
        # On a timeout the handle stays saved: a retry waits on this prompt, not queueing another.
        saved = _http.saved_handle(
            await request.resume.load(), self.name, ("prompt_id", "client_id")
        )
        if saved is not None:
            try:
                return await self._follow(request, saved, client, submit=None)
            except _PromptGone:
                log.info(
                    "saved ComfyUI prompt is unknown to the server; submitting again",
                    extra={"prompt_id": saved["prompt_id"]},
                )
        seed = request.seed if request.seed is not None else randbelow(_MAX_SEED)
        self.build_workflow(request, seed, [])  # refuse a bad request before uploading anything
        uploaded = await self._upload_references(request, client)
        graph = self.build_workflow(request, seed, uploaded)
        handle = {
            "provider": self.name,
            "prompt_id": str(uuid.uuid4()),
            "client_id": uuid.uuid4().hex,
            "seed": seed,
        }
        # Saved before ComfyUI sees the job: a worker killed from here on looks for it first.
        await request.resume.save(handle)

        async def submit() -> None:
            await self._submit(request, client, graph, handle)

        try:
            return await self._follow(request, handle, client, submit=submit)
        except _PromptGone as exc:
            raise ProviderError.of(
                ErrorClass.PROVIDER_UNAVAILABLE,
                f"ComfyUI no longer knows prompt {handle['prompt_id']} "
                "(deleted from its queue, or the server restarted)",
            ) from exc

    async def _upload_references(
        self, request: ImageRequest, client: httpx.AsyncClient
    ) -> list[str]:
        # build_workflow has already checked there is a node for each one.
        return [await self._upload(request, client, ref) for ref in request.reference_images]

    async def _upload(
        self, request: ImageRequest, client: httpx.AsyncClient, reference: ReferenceImage
    ) -> str:
        digest = hashlib.sha256(reference.data).hexdigest()[:20]
        extension = _EXTENSIONS.get(reference.content_type, "png")
        filename = f"atelier-{digest}.{extension}"
        response = await self._call(
            request,
            client,
            "POST",
            "/upload/image",
            files={"image": (filename, reference.data, reference.content_type)},
            data={"type": "input", "subfolder": UPLOAD_SUBFOLDER, "overwrite": "true"},
        )
        payload = _http.json_or_none(response)
        name = payload.get("name") if isinstance(payload, dict) else None
        if not isinstance(name, str) or not name:
            raise ProviderError.of(
                ErrorClass.PROVIDER_UNAVAILABLE,
                f"ComfyUI upload answered without a name: {response.text[:200]!r}",
            )
        subfolder = payload.get("subfolder") if isinstance(payload, dict) else None
        # LoadImage takes "subfolder/name" for files outside input/'s top level.
        return f"{subfolder}/{name}" if isinstance(subfolder, str) and subfolder else name

    async def _submit(
        self,
        request: ImageRequest,
        client: httpx.AsyncClient,
        graph: dict[str, Any],
        handle: dict[str, Any],
    ) -> None:
        body = {"prompt": graph, "client_id": handle["client_id"], "prompt_id": handle["prompt_id"]}
        response = await self._call(request, client, "POST", "/prompt", check=False, json=body)
        if response.status_code != 200:
            await request.resume.save({})  # refused: nothing to resume
            raise error_from_response(response, _http.key_secrets(request))
        payload = _http.json_or_none(response)
        prompt_id = payload.get("prompt_id") if isinstance(payload, dict) else None
        if not isinstance(prompt_id, str):
            raise ProviderError.of(
                ErrorClass.PROVIDER_UNAVAILABLE,
                f"ComfyUI accepted the prompt without a prompt_id: {response.text[:200]!r}",
            )
        if prompt_id != handle["prompt_id"]:
            # An older build that picks its own ids: remember the real one.
            handle["prompt_id"] = prompt_id
            await request.resume.save(handle)

    async def _follow(
        self,
        request: ImageRequest,
        handle: dict[str, Any],
        client: httpx.AsyncClient,
        submit: Callable[[], Awaitable[None]] | None,
    ) -> GenerationOutput:
        """Wait for the prompt (submitting it first when `submit` is given) and collect it."""
        interval = _http.poll_interval(request.provider_config, DEFAULT_POLL_INTERVAL_S)
        async with self._events(request, client, handle["client_id"]) as socket:
            if submit is not None:
                await submit()
            elif await self._history_entry(request, client, handle) is None:
                running, pending = await self._queue(request, client)
                # Between those two looks the prompt may have finished: look once more.
                if (
                    handle["prompt_id"] not in running | pending
                    and await self._history_entry(request, client, handle) is None
                ):
                    raise _PromptGone
            entry = await self._wait(request, client, handle, socket, interval)
        return await self._collect(request, client, handle, entry)

    @contextlib.asynccontextmanager
    async def _events(
        self, request: ImageRequest, client: httpx.AsyncClient, client_id: str
    ) -> AsyncIterator[ClientConnection | None]:
        """The websocket for `client_id`, or None (history polling alone) if it cannot open."""
        if request.provider_config.get("use_websocket", True) is False:
            yield None
            return
        url = ws_url(_base(request), client_id)
        try:
            socket = await connect(
                url,
                additional_headers=_http.basic_or_bearer(request),
                max_size=MAX_WS_MESSAGE_BYTES,
                open_timeout=min(10.0, request.timeout_s),
                # Follow the HTTP client's choice about proxies from the environment.
                proxy=True if client.trust_env else None,
            )
        except (OSError, InvalidHandshake, InvalidURI, TimeoutError) as exc:
            log.info("ComfyUI websocket unavailable; polling history (%s)", type(exc).__name__)
            yield None
            return
        try:
            yield socket
        finally:
            with contextlib.suppress(Exception):
                await socket.close()

    async def _wait(
        self,
        request: ImageRequest,
        client: httpx.AsyncClient,
        handle: dict[str, Any],
        socket: ClientConnection | None,
        interval: float,
    ) -> dict[str, Any]:
        """Until history shows the prompt finished (its entry), or an event says it failed."""
        prompt_id = handle["prompt_id"]
        done_at: float | None = None  # when the websocket said the prompt finished
        failures = _http.PollFailures()
        misses = 0
        next_check = time.monotonic()
        while True:
            if time.monotonic() >= next_check:
                try:
                    entry = await self._history_entry(request, client, handle)
                    if entry is None and done_at is None:
                        misses += 1
                        if misses % QUEUE_CHECK_EVERY == 0:
                            entry = await self._unless_vanished(request, client, handle)
                    failures.succeeded()
                except ProviderError as exc:
                    # Ride out a few hiccups: the prompt runs on regardless.
                    failures.failed(exc)
                    entry = None
                if entry is not None:
                    return entry
                if done_at is not None and time.monotonic() - done_at > HISTORY_GRACE_S:
                    raise ProviderError.of(
                        ErrorClass.NO_IMAGE_RETURNED,
                        f"prompt {prompt_id} finished but never reached /history",
                    )
                next_check = time.monotonic() + (min(interval, 0.2) if done_at else interval)
            if socket is None:
                await asyncio.sleep(max(0.0, next_check - time.monotonic()))
                continue
            try:
                # asyncio.timeout rather than wait_for: it never swallows the outer deadline.
                async with asyncio.timeout(max(0.01, next_check - time.monotonic())):
                    raw = await socket.recv()
            except TimeoutError:
                continue
            except ConnectionClosed:
                log.info("ComfyUI websocket closed; polling history", extra={"prompt": prompt_id})
                socket = None
                continue
            if isinstance(raw, bytes):
                continue  # a preview image
            if await self._on_event(request, prompt_id, raw):
                done_at = done_at or time.monotonic()
                next_check = time.monotonic()

    async def _unless_vanished(
        self, request: ImageRequest, client: httpx.AsyncClient, handle: dict[str, Any]
    ) -> dict[str, Any] | None:
        """None while the prompt is still queued or running; its history entry if it finished
        meanwhile; raises if ComfyUI has forgotten it (deleted from the queue, or restarted)."""
        running, pending = await self._queue(request, client)
        if handle["prompt_id"] in running | pending:
            return None
        # Just finished: history may lag the queue by a moment (A.13) before it has the entry.
        deadline = time.monotonic() + VANISHED_GRACE_S
        while (entry := await self._history_entry(request, client, handle)) is None:
            if time.monotonic() > deadline:
                raise _PromptGone
            await asyncio.sleep(0.2)
        return entry

    async def _on_event(self, request: ImageRequest, prompt_id: str, raw: str) -> bool:
        """React to one websocket message; True when it says our prompt has finished."""
        try:
            message = json.loads(raw)
        except json.JSONDecodeError:
            return False
        if not isinstance(message, dict) or not isinstance(message.get("data"), dict):
            return False
        kind, data = message.get("type"), message["data"]
        if kind == "status":
            remaining = data.get("status", {}).get("exec_info", {}).get("queue_remaining")
            if isinstance(remaining, int):
                await request.report_progress(None, f"{remaining} in ComfyUI's queue")
            return False
        if data.get("prompt_id") != prompt_id:
            return False
        if kind == "execution_start":
            await request.report_progress(0.0, "running")
        elif kind == "progress":
            value, maximum = data.get("value"), data.get("max")
            if isinstance(value, int | float) and isinstance(maximum, int | float) and maximum:
                node = data.get("node")
                await request.report_progress(
                    min(value / maximum, 1.0), f"node {node}: {value}/{maximum}"
                )
        elif kind == "execution_error":
            await request.resume.save({})
            raise execution_error(data, _http.key_secrets(request))
        elif kind == "execution_interrupted":
            await request.resume.save({})
            raise ProviderError.of(
                ErrorClass.CANCELLED, f"prompt {prompt_id} was interrupted at {data.get('node_id')}"
            )
        elif kind == "execution_success" or (kind == "executing" and data.get("node") is None):
            return True
        return False

    async def _history_entry(
        self, request: ImageRequest, client: httpx.AsyncClient, handle: dict[str, Any]
    ) -> dict[str, Any] | None:
        """The prompt's finished history entry; raises its failure; None while it runs."""
        prompt_id = handle["prompt_id"]
        response = await self._call(request, client, "GET", f"/history/{prompt_id}")
        payload = _http.json_or_none(response)
        entry = payload.get(prompt_id) if isinstance(payload, dict) else None
        if not isinstance(entry, dict):
            return None
        raw_status = entry.get("status")
        status: dict[str, Any] = raw_status if isinstance(raw_status, dict) else {}
        if status.get("status_str") == "error":
            await request.resume.save({})
            raise history_failure(prompt_id, status, _http.key_secrets(request))
        if status and not status.get("completed", False):
            return None
        return entry

    async def _queue(
        self, request: ImageRequest, client: httpx.AsyncClient
    ) -> tuple[set[str], set[str]]:
        """Prompt ids running and pending."""
        payload = _http.json_or_none(await self._call(request, client, "GET", "/queue"))
        payload = payload if isinstance(payload, dict) else {}
        return queue_ids(payload.get("queue_running")), queue_ids(payload.get("queue_pending"))

    async def _collect(
        self,
        request: ImageRequest,
        client: httpx.AsyncClient,
        handle: dict[str, Any],
        entry: dict[str, Any],
    ) -> GenerationOutput:
        node_map = checked(request).node_map
        wanted = [target.node for target in node_map.get("output", [])]
        files = output_files(entry.get("outputs"), wanted)
        if not files:
            await request.resume.save({})
            raise ProviderError.of(
                ErrorClass.NO_IMAGE_RETURNED,
                f"prompt {handle['prompt_id']} finished without output images",
            )
        # The seed went into the graph only through a `seed` node; without one the workflow's
        # own seed made the image, and ours says nothing about it.
        sent = bool(node_map.get("seed"))
        seed = handle.get("seed") if sent and request.n == 1 and len(files) == 1 else None
        images = [
            await _http.final_image(
                request,
                self._view(request, client, file),
                seed=seed if isinstance(seed, int) else None,
            )
            for file in files
        ]
        return GenerationOutput(
            images=images,
            usage={"images": len(images)},
            provider_request_id=handle["prompt_id"],
            notes=[PROMPT_NOT_USED_NOTE] if prompt_not_used(request.provider_config) else [],
        )

    async def _view(
        self, request: ImageRequest, client: httpx.AsyncClient, file: dict[str, str]
    ) -> bytes:
        response = await self._call(request, client, "GET", "/view", check=False, params=file)
        if response.status_code == 404:
            raise ProviderError.of(
                ErrorClass.NO_IMAGE_RETURNED, f"/view has no file {file.get('filename')!r}"
            )
        if response.status_code != 200:
            raise error_from_response(response, _http.key_secrets(request))
        return response.content

    async def _call(
        self,
        request: ImageRequest,
        client: httpx.AsyncClient,
        method: str,
        path: str,
        *,
        check: bool = True,
        timeout_s: float | None = None,
        **content: Any,
    ) -> httpx.Response:
        """One request to a ComfyUI route; unless `check` is off, any status but 200 raises
        its failure."""
        secrets = _http.key_secrets(request)
        response = await _http.send(
            lambda: client.request(
                method,
                f"{_base(request)}{path}",
                headers=_http.basic_or_bearer(request),
                timeout=timeout_s or request.timeout_s,
                **content,
            ),
            secrets,
        )
        if check and response.status_code != 200:
            raise error_from_response(response, secrets)
        return response


def _base(request: ImageRequest) -> str:
    return _http.self_hosted_base(request, "ComfyUI")
