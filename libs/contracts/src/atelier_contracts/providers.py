"""What each provider can do, where other services need to know it (providers.md A.10).

Dispatch uses `images_per_call` to split a job into tasks; adapters honour the same numbers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

KNOWN_PROVIDERS = (
    "offline",
    "openai",
    "falai",
    "replicate",
    "comfyui",
    "stable-diffusion",
    "openrouter",
    "gemini",
    "stability",
    "bfl",
    "workersai",
)
# Providers whose every call makes exactly one image (providers.md A.10).
_ONE_IMAGE_PER_CALL = frozenset({"openrouter", "gemini", "stability", "bfl", "workersai"})


def images_per_call(provider: str, model: str) -> int:
    """How many images one provider call may return."""
    if provider == "openai":
        return 1 if model == "dall-e-3" else 10
    if provider == "stable-diffusion":
        # A1111 batches with seeds seed, seed+1, ... and reports each in `info.all_seeds`, so a
        # batch costs nothing in reproducibility and saves a model pass per image.
        return 4
    if provider in _ONE_IMAGE_PER_CALL:
        # Stability, BFL and Workers AI have no `n`; Gemini's image count is unreliable; on
        # OpenRouter the chat path makes one image and single-image upstreams reject n > 1.
        return 1
    # fal, Replicate and ComfyUI report one seed per call (or none per image), and price or
    # schedule per image anyway: one image per call keeps every image's seed reproducible and
    # gives each its own provider handle to resume.
    # The offline provider could batch, but one image per task shows per-image progress and
    # exercises the same fan-out path that single-image providers need.
    return 1


# --- What a profile may ask of a provider and model (checked when an admin saves a profile) ---


@dataclass(frozen=True)
class OptionRule:
    """How a profile may declare one option the provider understands."""

    kinds: frozenset[str]  # `OptionSpec.kind`s that fit the provider's parameter
    values: frozenset[str] | None = None  # enum values the provider accepts; None: any
    minimum: float | None = None
    maximum: float | None = None


@dataclass(frozen=True)
class ProviderCapabilities:
    """What one provider and model can do; `None` in a field means "not restricted here".

    Counts are not restricted by `images_per_call`: dispatch splits a job into as many provider
    calls as it needs, so four dall-e-3 images are four calls, not an impossible request.
    """

    provider: str
    model: str
    known_model: bool
    sizes: frozenset[str] | None = None  # exact `WxH` sizes; None: any within max_pixels
    max_pixels: int | None = None
    max_count: int | None = None  # images per job; None: whatever dispatch can split
    options: Mapping[str, OptionRule] | None = None  # None: any option (the provider judges)
    # Options that can never work, with the reason; checked even when `options` is None.
    refused_options: Mapping[str, str] = field(default_factory=dict)
    max_reference_images: int | None = None
    prompt_max_length: int | None = None


_ENUM = frozenset({"enum"})
_TEXT = frozenset({"enum", "string"})
_NUMBER = frozenset({"integer", "number"})
_OPENAI_REFUSED = {
    "seed": "OpenAI's Images API takes no seed, so the same prompt never repeats an image",
    "negative_prompt": "OpenAI's Images API takes no negative prompt; say it in the prompt",
}
_OPENAI_USER = OptionRule(_TEXT)
_OPENAI_RESPONSE_FORMAT = OptionRule(_ENUM, frozenset({"url", "b64_json"}))
_GPT_IMAGE_OPTIONS: dict[str, OptionRule] = {
    "quality": OptionRule(_ENUM, frozenset({"low", "medium", "high", "auto"})),
    "background": OptionRule(_ENUM, frozenset({"transparent", "opaque", "auto"})),
    "output_format": OptionRule(_ENUM, frozenset({"png", "jpeg", "webp"})),
    "output_compression": OptionRule(frozenset({"integer"}), minimum=0, maximum=100),
    "moderation": OptionRule(_ENUM, frozenset({"low", "auto"})),
    "user": _OPENAI_USER,
}
_OPENAI_MODELS: dict[str, ProviderCapabilities] = {
    "dall-e-2": ProviderCapabilities(
        "openai",
        "dall-e-2",
        known_model=True,
        sizes=frozenset({"256x256", "512x512", "1024x1024"}),
        options={
            "quality": OptionRule(_ENUM, frozenset({"standard"})),
            "response_format": _OPENAI_RESPONSE_FORMAT,
            "user": _OPENAI_USER,
        },
        refused_options=_OPENAI_REFUSED,
        max_reference_images=0,
        prompt_max_length=1000,
    ),
    "dall-e-3": ProviderCapabilities(
        "openai",
        "dall-e-3",
        known_model=True,
        sizes=frozenset({"1024x1024", "1792x1024", "1024x1792"}),
        options={
            "quality": OptionRule(_ENUM, frozenset({"standard", "hd"})),
            "style": OptionRule(_ENUM, frozenset({"vivid", "natural"})),
            "response_format": _OPENAI_RESPONSE_FORMAT,
            "user": _OPENAI_USER,
        },
        refused_options=_OPENAI_REFUSED,
        max_reference_images=0,
        prompt_max_length=4000,
    ),
}
_GPT_IMAGE_PREFIXES = ("gpt-image", "chatgpt-image")
# Whatever the provider, Atelier's workers refuse to decode more pixels than this.
_WORKER_MAX_PIXELS = 8192 * 8192


def capabilities(provider: str, model: str) -> ProviderCapabilities:
    """What `provider` can do with `model`.

    Conservative where we know the provider's rules (OpenAI's published models), tolerant
    where we do not: an unknown model (often an OpenAI-compatible gateway behind `base_url`) or
    a provider without an entry here is only held to what can never work.
    """
    if provider == "openai":
        known = _OPENAI_MODELS.get(model)
        if known is not None:
            return known
        if model.startswith(_GPT_IMAGE_PREFIXES):
            return ProviderCapabilities(
                "openai",
                model,
                known_model=True,
                sizes=frozenset({"1024x1024", "1536x1024", "1024x1536"}),
                options=_GPT_IMAGE_OPTIONS,
                refused_options=_OPENAI_REFUSED,
                max_reference_images=16,
                prompt_max_length=32000,
            )
        return ProviderCapabilities(
            "openai", model, known_model=False, refused_options=_OPENAI_REFUSED
        )
    if provider == "offline":
        # Draws locally at any size the worker will decode; takes any option (it uses seed and
        # delay_s, ignores the rest) and ignores reference images, so profiles may try them.
        return ProviderCapabilities(
            "offline", model, known_model=True, max_pixels=_WORKER_MAX_PIXELS
        )
    return ProviderCapabilities(provider, model, known_model=False, max_pixels=_WORKER_MAX_PIXELS)
