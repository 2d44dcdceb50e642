"""What every provider adapter takes, returns and raises.

An adapter turns one `ImageRequest` into one provider call (plus any downloads the provider's
answer requires) and either returns decoded images or raises `ProviderError` carrying a
normalized `ErrorInfo` (providers.md A.11). Batching, retries and fallbacks live above this layer.
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import httpx
from PIL import Image, UnidentifiedImageError

from atelier_contracts.errors import USER_MESSAGES, ErrorClass, ErrorInfo

# The largest image we accept from a provider. OpenAI tops out at 3840x2160 and local backends
# rarely exceed 4096x4096; 8192x8192 leaves room for upscalers while still refusing decompression
# bombs. Set process-wide on purpose: every Pillow decode in the worker should obey it.
MAX_IMAGE_PIXELS = 8192 * 8192
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS

_SIZE_RE = re.compile(r"^\s*(\d{1,5})\s*[xX]\s*(\d{1,5})\s*$")

# Provider error texts sometimes echo a (partly masked) key back, e.g. OpenAI's
# "Incorrect API key provided: sk-abc***xyz". Such text must not reach logs or users.
_KEY_LIKE_RE = re.compile(r"\b(?:sk|pk|rk)-[A-Za-z0-9_\-*.]{3,}")

log = logging.getLogger("atelier.workers.adapters")

# How far the provider says it is (0..1, None when it gives no figure) and what it is doing
# ("queued at position 3", "step 12/30"); the worker turns it into job progress events.
ProgressCallback = Callable[[float | None, str | None], Awaitable[None]]


@dataclass(frozen=True)
class EncodedImage:
    """An encoded picture (PNG, JPEG, WebP...) with its type and size."""

    data: bytes = field(repr=False)
    content_type: str
    width: int
    height: int


@dataclass(frozen=True)
class ReferenceImage(EncodedImage):
    """A reference picture the context service validated, downscaled and staged for the model."""

    element_id: str | None = None


class ResumeStore(Protocol):
    """Where an adapter keeps the provider's own handle (request id, polling URL, prompt id)
    for the task it works on, *before* waiting on it, so a restarted worker resumes the same
    provider job instead of paying for a second generation."""

    async def load(self) -> dict[str, Any] | None: ...

    async def save(self, handle: dict[str, Any]) -> None: ...


class InMemoryResumeStore:
    """For tests and one-shot calls: remembers the handle only inside this process."""

    def __init__(self, handle: dict[str, Any] | None = None) -> None:
        self.handle = handle

    async def load(self) -> dict[str, Any] | None:
        return self.handle

    async def save(self, handle: dict[str, Any]) -> None:
        self.handle = handle


@dataclass(frozen=True)
class ImageRequest:
    """One provider call's worth of work: at most `max_images_per_call(model)` images."""

    model: str
    prompt: str
    size: str  # "WxH"; providers that only take aspect ratios map it themselves
    n: int = 1
    options: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None
    negative_prompt: str | None = None
    base_url: str | None = None
    # Kept out of repr so a logged request never shows the secret.
    api_key: str | None = field(default=None, repr=False)
    timeout_s: float = 120.0
    # Provider-specific, non-secret profile settings (ComfyUI workflow and node map, Workers AI
    # account id, extra routing preferences...).
    provider_config: dict[str, Any] = field(default_factory=dict)
    reference_images: tuple[ReferenceImage, ...] = ()
    resume: ResumeStore = field(default_factory=InMemoryResumeStore, compare=False, repr=False)
    on_progress: ProgressCallback | None = field(default=None, compare=False, repr=False)

    async def report_progress(self, fraction: float | None, detail: str) -> None:
        """Hand provider progress to the worker when it listens; never fails the generation."""
        log.debug("provider progress: %s", detail)
        if self.on_progress is None:
            return
        if fraction is not None:
            fraction = min(max(fraction, 0.0), 1.0)
        try:
            await self.on_progress(fraction, detail)
        except Exception:  # progress is a nicety; it must never fail a generation
            log.warning("progress hook failed", exc_info=True)


@dataclass(frozen=True)
class GeneratedImageData(EncodedImage):
    """A picture the provider made, with the seed that reproduces it when known."""

    seed: int | None = None
    revised_prompt: str | None = None

    @classmethod
    def decoded(
        cls, data: bytes, *, seed: int | None = None, revised_prompt: str | None = None
    ) -> GeneratedImageData:
        """Bytes a provider returned, sniffed for type and size (`no_image_returned` when they
        are not a usable image)."""
        content_type, width, height = image_size_of(data)
        return cls(data, content_type, width, height, seed=seed, revised_prompt=revised_prompt)


@dataclass(frozen=True)
class GenerationOutput:
    images: list[GeneratedImageData]
    usage: dict[str, Any] = field(default_factory=dict)
    provider_request_id: str | None = None
    # What the writer should know about how the images were made (e.g. that the prompt was not
    # used). Logged by the worker; the job shows the same note from its assembly, which the
    # context service derives from the same profile (ComfyUI: atelier_contracts.comfyui).
    notes: list[str] = field(default_factory=list)


class ProviderError(Exception):
    """A provider call failed; `info` says why in the shared taxonomy."""

    def __init__(self, info: ErrorInfo) -> None:
        super().__init__(f"{info.error_class.value}: {info.detail or info.message}")
        self.info = info

    @classmethod
    def of(
        cls,
        error_class: ErrorClass,
        detail: str | None = None,
        *,
        stage: str | None = None,
        retry_after_s: float | None = None,
        category: Iterable[object] | None = None,
        secrets: tuple[str | None, ...] = (),
    ) -> ProviderError:
        """Build an error with the plain user message for its class and a redacted detail;
        `category`: a content block's categories as the provider's answer names them."""
        return cls(
            ErrorInfo(
                error_class=error_class,
                message=USER_MESSAGES[error_class],
                detail=redact(detail, *secrets) if detail is not None else None,
                stage=stage,
                retry_after_s=retry_after_s,
                category=moderation_category(category, secrets),
            )
        )

    @property
    def error_class(self) -> ErrorClass:
        return self.info.error_class


class ProviderAdapter(Protocol):
    """The seam between the worker and one provider's HTTP API."""

    name: str

    def max_images_per_call(self, model: str) -> int:
        """How many images one `generate` call may ask for; callers split larger jobs."""
        ...

    async def generate(self, request: ImageRequest, client: httpx.AsyncClient) -> GenerationOutput:
        """Make the images or raise `ProviderError`; never any other exception for provider
        trouble (bugs may still surface as themselves)."""
        ...


@runtime_checkable
class CancellableAdapter(ProviderAdapter, Protocol):
    """An adapter whose provider can stop a job it already accepted (fal, Replicate, ComfyUI,
    A1111). Called with the handle saved in the task's `ResumeStore`; best effort."""

    async def cancel(
        self, request: ImageRequest, handle: dict[str, Any], client: httpx.AsyncClient
    ) -> None: ...


# Longest `ErrorInfo.category` kept: a few of the provider's words, never a free text.
_CATEGORY_CHARS = 200


def moderation_category(
    values: Iterable[object] | None, secrets: tuple[str | None, ...] = ()
) -> str | None:
    """The provider's moderation categories as one short string (`violence,sexual`): strings
    only, lowercased, in the provider's order without repeats; None when it named none."""
    if values is None:
        return None
    words: list[str] = []
    for value in values:
        if isinstance(value, str) and value.strip():
            word = redact(value.strip().lower(), *secrets)
            if word not in words:
                words.append(word)
    joined = ",".join(words)[:_CATEGORY_CHARS]
    return joined or None


def redact(text: str, *secrets: str | None) -> str:
    """Remove the given secrets and anything shaped like an API key from `text`."""
    for secret in secrets:
        # Very short "secrets" would shred ordinary words; real keys are long.
        if secret and len(secret) >= 6:
            text = text.replace(secret, "[redacted]")
    return _KEY_LIKE_RE.sub("[redacted]", text)


def parse_size(size: str) -> tuple[int, int]:
    """`"1024x768"` → `(1024, 768)`; anything else is the caller's mistake, not the provider's."""
    match = _SIZE_RE.match(size)
    if match is None:
        raise ProviderError.of(ErrorClass.INVALID_REQUEST, f"size {size!r} is not WIDTHxHEIGHT")
    width, height = int(match.group(1)), int(match.group(2))
    if width < 1 or height < 1 or width * height > MAX_IMAGE_PIXELS:
        raise ProviderError.of(ErrorClass.INVALID_REQUEST, f"size {size!r} is out of range")
    return width, height


def image_size_of(data: bytes) -> tuple[str, int, int]:
    """Sniff `(content_type, width, height)` from encoded image bytes.

    Providers sometimes answer 200 with an HTML page, a truncated file or an empty string where
    the image should be; all of those become `no_image_returned`, which may be retried once.
    """
    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
            image_format = img.format
            # Image.open only reads the header; verify() walks the rest (chunk CRCs for PNG) so
            # a truncated download is caught here rather than when a thumbnail is made later.
            img.verify()
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError) as exc:
        raise ProviderError.of(
            ErrorClass.NO_IMAGE_RETURNED,
            f"provider returned {len(data)} bytes that are not a usable image: {exc}",
        ) from exc
    # Pillow only warns between MAX_IMAGE_PIXELS and twice that; we refuse outright.
    if width * height > MAX_IMAGE_PIXELS:
        raise ProviderError.of(
            ErrorClass.NO_IMAGE_RETURNED, f"image of {width}x{height} exceeds the pixel limit"
        )
    content_type = Image.MIME.get(image_format or "", "application/octet-stream")
    return content_type, width, height
