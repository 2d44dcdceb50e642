"""What each provider can do, where other services need to know it (providers.md A.10).

Dispatch uses `images_per_call` to split a job into tasks; adapters honour the same numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
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
# Each provider's own public API, the base URL its adapter uses when a profile sets none. A
# provider key may be sent to these origins, and to origins an operator allowed for it
# (docs/adr/0014-keys-only-to-approved-origins.md); self-hosted servers have none.
PROVIDER_BASE_URLS: Mapping[str, str] = {
    "openai": "https://api.openai.com/v1",
    "openrouter": "https://openrouter.ai/api/v1",
    "gemini": "https://generativelanguage.googleapis.com/v1beta",
    "stability": "https://api.stability.ai/v2beta",
    "bfl": "https://api.bfl.ai/v1",
    "workersai": "https://api.cloudflare.com/client/v4",
    "falai": "https://queue.fal.run",
    "replicate": "https://api.replicate.com/v1",
}
# Providers that never send a request (nothing to protect, nowhere to send it).
NETWORKLESS_PROVIDERS = frozenset({"offline"})
# The offline provider draws each reference image, scaled, into a row along the picture's top;
# more than four would leave each too small to recognise (ADR 0022).
OFFLINE_MAX_REFERENCE_IMAGES = 4
# The offline adapter draws up to four images in one call (image i from seed + i), so callers
# other than dispatch (the worker's own tests, benchmarks) can exercise multi-image calls;
# dispatch still asks it for one image per task (`images_per_call`).
OFFLINE_MAX_IMAGES_PER_CALL = 4

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
    # The offline provider could batch (`OFFLINE_MAX_IMAGES_PER_CALL`), but one image per task
    # shows per-image progress and exercises the same fan-out path single-image providers need.
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


def _dalle(
    model: str, sizes: set[str], options: dict[str, OptionRule], prompt_max_length: int
) -> ProviderCapabilities:
    """A DALL·E model: fixed sizes, no reference images, `response_format` and `user` taken."""
    return ProviderCapabilities(
        "openai",
        model,
        known_model=True,
        sizes=frozenset(sizes),
        options={**options, "response_format": _OPENAI_RESPONSE_FORMAT, "user": _OPENAI_USER},
        refused_options=_OPENAI_REFUSED,
        max_reference_images=0,
        prompt_max_length=prompt_max_length,
    )


_OPENAI_MODELS: dict[str, ProviderCapabilities] = {
    "dall-e-2": _dalle(
        "dall-e-2",
        {"256x256", "512x512", "1024x1024"},
        {"quality": OptionRule(_ENUM, frozenset({"standard"}))},
        prompt_max_length=1000,
    ),
    "dall-e-3": _dalle(
        "dall-e-3",
        {"1024x1024", "1792x1024", "1024x1792"},
        {
            "quality": OptionRule(_ENUM, frozenset({"standard", "hd"})),
            "style": OptionRule(_ENUM, frozenset({"vivid", "natural"})),
        },
        prompt_max_length=4000,
    ),
}
# Whatever the provider, Atelier's workers refuse to decode more pixels than this.
_WORKER_MAX_PIXELS = 8192 * 8192


def is_gpt_image(model: str) -> bool:
    """OpenAI's GPT-image family (and ChatGPT's), whatever the version: one rule set for all."""
    return model.startswith(("gpt-image", "chatgpt-image"))


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
        if is_gpt_image(model):
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
        # delay_s, ignores the rest) and draws up to four reference images into the picture.
        return ProviderCapabilities(
            "offline",
            model,
            known_model=True,
            max_pixels=_WORKER_MAX_PIXELS,
            max_reference_images=OFFLINE_MAX_REFERENCE_IMAGES,
        )
    rules = _HOSTED_PROVIDERS.get(provider)
    if rules is not None:
        return rules(model)
    return ProviderCapabilities(provider, model, known_model=False, max_pixels=_WORKER_MAX_PIXELS)


# --- every other provider: what its adapter sends (docs/providers.md's capability table) -----
# `options` lists what the adapter passes on, besides `seed` and `negative_prompt` where the
# provider takes them; any other option would be silently dropped, so a profile may not offer it.

_INTEGER = frozenset({"integer"})
_BOOLEAN = frozenset({"boolean"})
_STRING = OptionRule(_TEXT)
_SEED = OptionRule(_INTEGER)
_NEGATIVE_PROMPT = OptionRule(_TEXT)
_NO_SEED = "{name} takes no seed, so the same prompt never repeats an image"
_NO_NEGATIVE_PROMPT = "{name} takes no negative prompt; say it in the prompt"
# Gemini's aspect ratios and resolution tiers (OpenRouter copies them), and Stability's ratios;
# the workers map a requested `WxH` to the nearest of these.
GEMINI_ASPECT_RATIOS = ("1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9")
IMAGE_TIERS = ("1K", "2K", "4K")
STABILITY_ASPECT_RATIOS = ("16:9", "1:1", "21:9", "2:3", "3:2", "4:5", "5:4", "9:16", "9:21")
GEMINI_PERSON_GENERATION = ("ALLOW_ALL", "ALLOW_ADULT", "ALLOW_NONE")
GEMINI_MAX_REFERENCE_IMAGES = 14  # Gemini 3 Pro image; smaller models accept fewer in practice
# Stability's endpoints: core, ultra and sd3, which serves the SD 3.5 models by name.
STABILITY_SD3_MODELS = frozenset({"sd3.5-large", "sd3.5-large-turbo", "sd3.5-medium"})
_STABILITY_ALIASES = {"stable-image-core": "core", "stable-image-ultra": "ultra"}
STABILITY_MODELS = frozenset(
    {"core", "ultra", "sd3"} | STABILITY_SD3_MODELS | set(_STABILITY_ALIASES)
)
STABILITY_MAX_SEED = 4_294_967_294
BFL_MAX_PIXELS = 4 * 1024 * 1024  # FLUX sizes by width/height are scaled down to 4 MP
WORKERSAI_MAX_SIDE = 2048  # each side is clamped to 256..2048


def _refused(name: str, *options: str) -> dict[str, str]:
    texts = {"seed": _NO_SEED, "negative_prompt": _NO_NEGATIVE_PROMPT}
    return {option: texts[option].format(name=name) for option in options}


def _number(minimum: float | None = None, maximum: float | None = None) -> OptionRule:
    return OptionRule(_NUMBER, minimum=minimum, maximum=maximum)


def _enum(*values: str) -> OptionRule:
    return OptionRule(_ENUM, frozenset(values))


def _openrouter(model: str) -> ProviderCapabilities:
    # Options pass through to whichever upstream model OpenRouter routes to: not restricted.
    # A seed is sent on the images API (`provider_config.api: images`) only.
    return ProviderCapabilities(
        "openrouter",
        model,
        known_model=True,
        max_pixels=_WORKER_MAX_PIXELS,
        refused_options=_refused("OpenRouter", "negative_prompt"),
    )


def _gemini(model: str) -> ProviderCapabilities:
    return ProviderCapabilities(
        "gemini",
        model,
        known_model=model.startswith("gemini-"),
        max_pixels=_WORKER_MAX_PIXELS,
        options={
            "aspect_ratio": _enum(*GEMINI_ASPECT_RATIOS),
            "image_size": _enum(*IMAGE_TIERS),
            "person_generation": _enum(*GEMINI_PERSON_GENERATION),
        },
        refused_options=_refused("Gemini", "seed", "negative_prompt"),
        max_reference_images=GEMINI_MAX_REFERENCE_IMAGES,
    )


def stability_endpoint(model: str) -> str | None:
    """The Stability endpoint serving `model` (core, ultra or sd3); None for a model it has not."""
    endpoint = _STABILITY_ALIASES.get(model, model)
    if endpoint in STABILITY_SD3_MODELS:
        return "sd3"
    return endpoint if endpoint in ("core", "ultra", "sd3") else None


def _stability(model: str) -> ProviderCapabilities:
    endpoint = stability_endpoint(model)
    options: dict[str, OptionRule] = {
        "seed": OptionRule(_INTEGER, minimum=0, maximum=STABILITY_MAX_SEED),
        "negative_prompt": _NEGATIVE_PROMPT,
        "aspect_ratio": _enum(*STABILITY_ASPECT_RATIOS),
        "output_format": _enum("png", "jpeg", "webp"),
    }
    if endpoint == "core":
        options["style_preset"] = _STRING
    else:
        options["strength"] = _number(0, 1)
        if endpoint != "ultra":
            options["cfg_scale"] = _number(1, 10)
    return ProviderCapabilities(
        "stability",
        model,
        known_model=model in STABILITY_MODELS,
        max_pixels=_WORKER_MAX_PIXELS,
        options=options,
        max_reference_images=0 if endpoint == "core" else 1,
    )


def bfl_sizes_by_ratio(model: str) -> bool:
    """Kontext and Ultra size by aspect ratio; every other FLUX endpoint by width/height."""
    return model.startswith("flux-kontext") or model.endswith("-ultra")


def _bfl(model: str) -> ProviderCapabilities:
    # FLUX.2 takes input_image, input_image_2 … input_image_8; Kontext's (experimental)
    # multi-reference up to four.
    references = 8 if model.startswith("flux-2") else 4 if model.startswith("flux-kontext") else 0
    return ProviderCapabilities(
        "bfl",
        model,
        known_model=model.startswith("flux-"),
        max_pixels=_WORKER_MAX_PIXELS if bfl_sizes_by_ratio(model) else BFL_MAX_PIXELS,
        options={
            "seed": _SEED,
            "safety_tolerance": OptionRule(_INTEGER, minimum=0, maximum=6),
            "output_format": _enum("jpeg", "png"),
            "steps": OptionRule(_INTEGER),
            "guidance": _number(),
            "prompt_upsampling": OptionRule(_BOOLEAN),
            "raw": OptionRule(_BOOLEAN),
        },
        refused_options=_refused("FLUX", "negative_prompt"),
        max_reference_images=references,
    )


def _workersai(model: str) -> ProviderCapabilities:
    flux2 = "/flux-2" in model  # multipart models: no negative prompt, up to 4 references
    options: dict[str, OptionRule] = {
        "seed": _SEED,
        "num_steps": OptionRule(_INTEGER),
        "steps": OptionRule(_INTEGER),
        "guidance": _number(),
        "strength": _number(0, 1),
    }
    if not flux2:
        options["negative_prompt"] = _NEGATIVE_PROMPT
    return ProviderCapabilities(
        "workersai",
        model,
        known_model=model.startswith("@cf/"),
        max_pixels=WORKERSAI_MAX_SIDE * WORKERSAI_MAX_SIDE,
        options=options,
        refused_options=_refused("FLUX.2 on Workers AI", "negative_prompt") if flux2 else {},
        max_reference_images=4 if flux2 else 1,
    )


def _with_seed(
    provider: str,
    model: str,
    options: Mapping[str, OptionRule],
    max_reference_images: int | None = None,
) -> ProviderCapabilities:
    """A provider whose adapter sends a seed and a negative prompt, at any size the worker
    decodes, and passes `options` on."""
    return ProviderCapabilities(
        provider,
        model,
        known_model=True,
        max_pixels=_WORKER_MAX_PIXELS,
        options={"seed": _SEED, "negative_prompt": _NEGATIVE_PROMPT, **options},
        max_reference_images=max_reference_images,
    )


def _falai(model: str) -> ProviderCapabilities:
    # Reference images go to the app's `reference_field`: how many it takes is the app's.
    options = {
        "num_inference_steps": OptionRule(_INTEGER, minimum=1),
        "guidance_scale": _number(),
        "enable_safety_checker": OptionRule(_BOOLEAN),
        "safety_tolerance": OptionRule(_TEXT | _NUMBER),
        "output_format": _enum("jpeg", "png"),
        "acceleration": _enum("none", "regular", "high"),
        "strength": _number(0, 1),
    }
    return _with_seed("falai", model, options)


def _replicate(model: str) -> ProviderCapabilities:
    options = {
        "num_inference_steps": OptionRule(_INTEGER, minimum=1),
        "guidance": _number(),
        "guidance_scale": _number(),
        "output_format": _enum("webp", "jpg", "png"),
        "output_quality": OptionRule(_INTEGER, minimum=0, maximum=100),
        "safety_tolerance": OptionRule(_INTEGER, minimum=1, maximum=6),
        "go_fast": OptionRule(_BOOLEAN),
        "megapixels": OptionRule(_TEXT),
        "prompt_upsampling": OptionRule(_BOOLEAN),
        "prompt_strength": _number(0, 1),
    }
    return _with_seed("replicate", model, options)


def _comfyui(model: str) -> ProviderCapabilities:
    # The workflow and node map decide what is used: seed and negative prompt need their node
    # map entries, reference images their `reference_image` nodes (checked when a job runs).
    return _with_seed("comfyui", model, {"steps": OptionRule(_INTEGER, minimum=1)})


def _stable_diffusion(model: str) -> ProviderCapabilities:
    options = {
        "steps": OptionRule(_INTEGER, minimum=1),
        "cfg_scale": _number(),
        "sampler_name": _STRING,
        "scheduler": _STRING,
        "denoising_strength": _number(0, 1),
        "subseed": OptionRule(_INTEGER),
        "subseed_strength": _number(0, 1),
        "restore_faces": OptionRule(_BOOLEAN),
        "tiling": OptionRule(_BOOLEAN),
        "enable_hr": OptionRule(_BOOLEAN),
        "hr_scale": _number(),
        "hr_upscaler": _STRING,
        "hr_second_pass_steps": OptionRule(_INTEGER),
        "distilled_cfg_scale": _number(),
    }
    # img2img repaints one init image.
    return _with_seed("stable-diffusion", model, options, max_reference_images=1)


_HOSTED_PROVIDERS: dict[str, Callable[[str], ProviderCapabilities]] = {
    "openrouter": _openrouter,
    "gemini": _gemini,
    "stability": _stability,
    "bfl": _bfl,
    "workersai": _workersai,
    "falai": _falai,
    "replicate": _replicate,
    "comfyui": _comfyui,
    "stable-diffusion": _stable_diffusion,
}


def passed_on_options(provider: str, model: str) -> frozenset[str]:
    """The options `provider`'s adapter passes on as they are with `model`: its capability
    options but seed and negative prompt, which travel in their own request fields."""
    options = capabilities(provider, model).options
    return frozenset(options or ()) - {"seed", "negative_prompt"}
