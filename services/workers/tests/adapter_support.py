"""Helpers the adapter tests share: serving a fake, reference pictures, expected failures."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import httpx
import pytest
from fastapi import FastAPI
from PIL import Image

from atelier_contracts.errors import ErrorClass
from atelier_fakes import run_fake_in_thread
from atelier_workers.adapters import ProviderAdapter, ProviderError
from atelier_workers.adapters.base import ImageRequest, InMemoryResumeStore, ReferenceImage

S = TypeVar("S")

# A text-to-image ComfyUI workflow (API format) and the node map that fills it in.
COMFYUI_CHECKPOINT = "sd_xl_base_1.0.safetensors"
COMFYUI_TEXT_TO_IMAGE: dict[str, Any] = {
    "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": COMFYUI_CHECKPOINT}},
    "5": {
        "class_type": "EmptyLatentImage",
        "inputs": {"width": 1024, "height": 1024, "batch_size": 4},
    },
    "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["4", 1]}},
    "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "lowres", "clip": ["4", 1]}},
    "3": {
        "class_type": "KSampler",
        "inputs": {
            "seed": 0,
            "steps": 20,
            "cfg": 7.0,
            "sampler_name": "euler",
            "scheduler": "normal",
            "denoise": 1.0,
            "model": ["4", 0],
            "positive": ["6", 0],
            "negative": ["7", 0],
            "latent_image": ["5", 0],
        },
    },
    "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
    "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "at/t"}},
}
COMFYUI_NODE_MAP: dict[str, Any] = {
    "prompt": {"node": "6", "input": "text"},
    "negative_prompt": {"node": "7", "input": "text"},
    "width": {"node": "5", "input": "width"},
    "height": {"node": "5", "input": "height"},
    "seed": {"node": "3", "input": "seed"},
    "batch_size": {"node": "5", "input": "batch_size"},
    "steps": "3.steps",
    "model": {"node": "4", "input": "ckpt_name"},
}


def serve(create: Callable[[S], FastAPI], state: S, suffix: str = "") -> Iterator[tuple[str, S]]:
    """For a module-scoped `fake_server` fixture: `yield from serve(create_x_fake, state)`."""
    url, stop = run_fake_in_thread(create(state))
    try:
        yield url + suffix, state
    finally:
        stop()


def picture(
    color: tuple[int, int, int] = (10, 120, 200),
    size: tuple[int, int] = (16, 16),
    fmt: str = "PNG",
    element_id: str | None = None,
) -> ReferenceImage:
    """A reference image of one colour, encoded as `fmt`."""
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, format=fmt)
    content_type = "image/png" if fmt == "PNG" else f"image/{fmt.lower()}"
    return ReferenceImage(out.getvalue(), content_type, size[0], size[1], element_id=element_id)


async def failure(
    adapter: ProviderAdapter, request: ImageRequest, client: httpx.AsyncClient
) -> ProviderError:
    """The `ProviderError` the call raises (the test fails if it succeeds)."""
    with pytest.raises(ProviderError) as caught:
        await adapter.generate(request, client)
    return caught.value


async def wait_until(check: Callable[[], bool], what: str) -> None:
    for _ in range(500):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never happened: {what}")


async def saved_handle(store: InMemoryResumeStore) -> dict[str, Any]:
    """The handle the adapter saved, once it has (it saves before waiting on the provider)."""
    await wait_until(lambda: bool(store.handle), "the adapter saved a handle")
    assert store.handle is not None
    return store.handle


class ProgressLog(list[tuple[float | None, str | None]]):
    """An `on_progress` listener that keeps what it heard."""

    async def __call__(self, fraction: float | None, detail: str | None) -> None:
        self.append((fraction, detail))


def assert_key_hidden(error: ProviderError, key: str, shown: int = 12) -> None:
    """Neither the key nor its first characters reach anything a log line or a user sees."""
    info = error.info
    for text in (info.detail or "", info.message, str(error), repr(error)):
        assert key not in text
        assert key[:shown] not in text


def assert_classified(
    error: ProviderError,
    error_class: ErrorClass,
    stage: str | None = None,
    retry_after: float | None = None,
) -> None:
    """The failure's class, stage and retry hint, with a message for users and a detail."""
    info = error.info
    assert (info.error_class, info.stage, info.retry_after_s) == (error_class, stage, retry_after)
    assert info.message and info.detail
