"""Provider adapters and the registry the worker picks them from by profile provider name."""

from __future__ import annotations

from atelier_workers.adapters.base import (
    GeneratedImageData,
    GenerationOutput,
    ImageRequest,
    ProviderAdapter,
    ProviderError,
    image_size_of,
)
from atelier_workers.adapters.bfl import BFLAdapter
from atelier_workers.adapters.comfyui import ComfyUIAdapter
from atelier_workers.adapters.falai import FalAdapter
from atelier_workers.adapters.gemini import GeminiAdapter
from atelier_workers.adapters.offline import OfflineAdapter
from atelier_workers.adapters.openai import OpenAIAdapter
from atelier_workers.adapters.openrouter import OpenRouterAdapter
from atelier_workers.adapters.replicate import ReplicateAdapter
from atelier_workers.adapters.stability import StabilityAdapter
from atelier_workers.adapters.stable_diffusion import StableDiffusionAdapter
from atelier_workers.adapters.workersai import WorkersAIAdapter

__all__ = [
    "ADAPTERS",
    "BFLAdapter",
    "ComfyUIAdapter",
    "FalAdapter",
    "GeminiAdapter",
    "GeneratedImageData",
    "GenerationOutput",
    "ImageRequest",
    "OfflineAdapter",
    "OpenAIAdapter",
    "OpenRouterAdapter",
    "ProviderAdapter",
    "ProviderError",
    "ReplicateAdapter",
    "StabilityAdapter",
    "StableDiffusionAdapter",
    "UnknownProviderError",
    "WorkersAIAdapter",
    "get_adapter",
    "image_size_of",
]

# Adapters hold no per-request state, so one instance each serves every job.
ADAPTERS: dict[str, ProviderAdapter] = {
    adapter.name: adapter
    for adapter in (
        OfflineAdapter(),
        OpenAIAdapter(),
        OpenRouterAdapter(),
        GeminiAdapter(),
        StabilityAdapter(),
        BFLAdapter(),
        WorkersAIAdapter(),
        FalAdapter(),
        ReplicateAdapter(),
        ComfyUIAdapter(),
        StableDiffusionAdapter(),
    )
}


class UnknownProviderError(KeyError):
    """A profile names a provider this worker has no adapter for."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name

    def __str__(self) -> str:
        # KeyError's own str() is just the quoted key, which reads badly in logs.
        known = ", ".join(sorted(ADAPTERS))
        return f"no image provider adapter named {self.name!r}; known: {known}"


def get_adapter(name: str) -> ProviderAdapter:
    try:
        return ADAPTERS[name]
    except KeyError:
        raise UnknownProviderError(name) from None
