"""A provider that needs no network: deterministic placeholder art drawn with Pillow.

It lets the whole stack run on a laptop or in CI with no keys, and makes end-to-end tests
reproducible: the same prompt and seed always give byte-identical PNGs. A prompt containing
`[fail:<error_class>]` (optionally `[fail:content_blocked:output]`, and `@seed=N` for only the
call sent seed N) raises that error instead, so failure paths can be exercised end to end
without a fake server.

Reference images are honoured the only way a drawing can: each is scaled into a framed cell of a
row along the top of the picture, in the order sent, so the context feature (an element's
picture reaching the model) can be seen without a provider key (ADR 0022).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import re
import textwrap
from functools import lru_cache
from typing import Any

import httpx
from PIL import Image, ImageDraw, ImageFont, ImageOps, UnidentifiedImageError

from atelier_contracts.errors import ErrorClass
from atelier_contracts.providers import OFFLINE_MAX_IMAGES_PER_CALL, OFFLINE_MAX_REFERENCE_IMAGES
from atelier_workers.adapters.base import (
    GeneratedImageData,
    GenerationOutput,
    ImageRequest,
    ProviderError,
    ReferenceImage,
    parse_size,
)

# The reference row takes at most this share of the picture's height.
_REFERENCE_ROW_SHARE = 0.4
# `@seed=N` scopes it to the call sent that seed: one image of a job fails, the others land.
_FAIL_MARKER_RE = re.compile(r"\[fail:([a-z_]+)(?::(input|output))?(?:@seed=(\d+))?\]")
# What a scripted rate limit tells the caller to wait; small so tests stay quick.
_SCRIPTED_RETRY_AFTER_S = 1.0

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont
# Linear gradient directions: top-down, then rotated a quarter turn at a time.
_TURNS = (
    None,
    Image.Transpose.ROTATE_90,
    Image.Transpose.ROTATE_180,
    Image.Transpose.ROTATE_270,
)


class OfflineAdapter:
    name: str = "offline"

    def max_images_per_call(self, model: str) -> int:
        return OFFLINE_MAX_IMAGES_PER_CALL

    async def generate(self, request: ImageRequest, client: httpx.AsyncClient) -> GenerationOutput:
        raise_scripted_failure(request.prompt, request.seed)
        width, height = parse_size(request.size)
        limit = self.max_images_per_call(request.model)
        if not 1 <= request.n <= limit:
            raise ProviderError.of(
                ErrorClass.INVALID_REQUEST,
                f"offline makes 1..{limit} images per call, not n={request.n}",
            )
        if len(request.reference_images) > OFFLINE_MAX_REFERENCE_IMAGES:
            raise ProviderError.of(
                ErrorClass.INVALID_REQUEST,
                f"offline takes at most {OFFLINE_MAX_REFERENCE_IMAGES} reference images, "
                f"not {len(request.reference_images)}",
            )
        delay_s = _delay_of(request.options)
        if delay_s > 0:
            await asyncio.sleep(delay_s)
        base_seed = request.seed if request.seed is not None else seed_from_prompt(request.prompt)
        # Image i uses seed base_seed + i, so re-running with an image's reported seed and n=1
        # reproduces exactly that image.
        seeds = [base_seed + index for index in range(request.n)]
        # Drawing and PNG encoding are CPU work; keep them off the event loop.
        images = await asyncio.to_thread(
            _render_all, request.prompt, seeds, width, height, request.reference_images
        )
        return GenerationOutput(
            images=images, usage={"images": len(images)}, provider_request_id=None
        )


def raise_scripted_failure(prompt: str, seed: int | None = None) -> None:
    """Raise the error a `[fail:<class>]` marker in the prompt asks for, if any (with
    `@seed=N`, only for the call sent seed N)."""
    match = _FAIL_MARKER_RE.search(prompt)
    if match is None or (match.group(3) is not None and int(match.group(3)) != seed):
        return
    name, stage = match.group(1), match.group(2)
    try:
        error_class = ErrorClass(name)
    except ValueError:
        raise ProviderError.of(
            ErrorClass.INVALID_REQUEST, f"unknown failure marker [fail:{name}]"
        ) from None
    if error_class is ErrorClass.CONTENT_BLOCKED:
        stage = stage or "input"
    retry_after_s = _SCRIPTED_RETRY_AFTER_S if error_class is ErrorClass.RATE_LIMITED else None
    raise ProviderError.of(
        error_class,
        f"scripted failure from prompt marker [fail:{name}]",
        stage=stage,
        retry_after_s=retry_after_s,
    )


def seed_from_prompt(prompt: str) -> int:
    """A stable non-negative 31-bit seed, so seedless requests are reproducible too."""
    digest = hashlib.sha256(prompt.encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFF_FFFF


def render_placeholder_png(
    prompt: str,
    seed: int,
    width: int,
    height: int,
    references: tuple[ReferenceImage, ...] = (),
) -> bytes:
    """Draw the placeholder for one (prompt, seed) at the given size, with the reference
    images in a row along the top, and encode it as PNG."""
    digest = hashlib.sha256(f"{seed}\x00{prompt}".encode()).digest()
    img = _gradient(digest, width, height)
    draw = ImageDraw.Draw(img, "RGBA")  # RGBA mode blends translucent fills onto the RGB base
    _draw_shapes(draw, digest, width, height)
    if references:
        _draw_references(img, draw, [_decode_reference(r) for r in references])
    _draw_caption(draw, prompt, seed, width, height)
    out = io.BytesIO()
    # Level 1: placeholders are throwaway, and encoding dominates the cost at level 6.
    img.save(out, format="PNG", compress_level=1)
    return out.getvalue()


def _render_all(
    prompt: str,
    seeds: list[int],
    width: int,
    height: int,
    references: tuple[ReferenceImage, ...] = (),
) -> list[GeneratedImageData]:
    return [
        GeneratedImageData(
            data=render_placeholder_png(prompt, seed, width, height, references),
            content_type="image/png",
            width=width,
            height=height,
            seed=seed,
            revised_prompt=None,
        )
        for seed in seeds
    ]


def _delay_of(options: dict[str, Any]) -> float:
    raw = options.get("delay_s", 0)
    try:
        delay_s = float(raw)
    except (TypeError, ValueError):
        raise ProviderError.of(
            ErrorClass.INVALID_REQUEST, f"option delay_s={raw!r} is not a number"
        ) from None
    if delay_s < 0:
        raise ProviderError.of(ErrorClass.INVALID_REQUEST, "option delay_s must be >= 0")
    return delay_s


def _color(chunk: bytes, alpha: int | None = None) -> tuple[int, ...]:
    rgb = (chunk[0], chunk[1], chunk[2])
    return rgb if alpha is None else (*rgb, alpha)


def _gradient(digest: bytes, width: int, height: int) -> Image.Image:
    """Blend two hash-derived colours along one of several hash-chosen gradient shapes."""
    kind = digest[6] % (len(_TURNS) + 1)
    if kind == len(_TURNS):
        mask = Image.radial_gradient("L")
    else:
        mask = Image.linear_gradient("L")
        turn = _TURNS[kind]
        if turn is not None:
            mask = mask.transpose(turn)
    mask = mask.resize((width, height), Image.Resampling.BILINEAR)
    start = Image.new("RGB", (width, height), _color(digest[0:3]))
    end = Image.new("RGB", (width, height), _color(digest[3:6]))
    return Image.composite(end, start, mask)


def _draw_shapes(draw: ImageDraw.ImageDraw, digest: bytes, width: int, height: int) -> None:
    """A few translucent ellipses and rectangles, placed by the hash, so seeds look distinct."""
    count = 3 + digest[7] % 4
    for index in range(count):
        chunk = digest[8 + index * 3 : 8 + index * 3 + 8]
        if len(chunk) < 8:
            chunk = hashlib.sha256(digest + bytes([index])).digest()[:8]
        x0, y0 = chunk[0] * width // 256, chunk[1] * height // 256
        x1 = x0 + (16 + chunk[2]) * width // 512
        y1 = y0 + (16 + chunk[3]) * height // 512
        fill = _color(chunk[4:7], alpha=96 + chunk[7] % 96)
        if chunk[7] % 2:
            draw.ellipse((x0, y0, x1, y1), fill=fill)
        else:
            draw.rectangle((x0, y0, x1, y1), fill=fill)


def _decode_reference(reference: ReferenceImage) -> Image.Image:
    """The reference as RGBA pixels; `invalid_request` when its bytes are not an image.

    Context validated and downscaled it already; Pillow's pixel limit (set in `base`) still
    guards the decode."""
    try:
        with Image.open(io.BytesIO(reference.data)) as opened:
            return ImageOps.exif_transpose(opened).convert("RGBA")
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise ProviderError.of(
            ErrorClass.INVALID_REQUEST, f"reference image is not a readable image: {exc}"
        ) from None


def _draw_references(
    img: Image.Image, draw: ImageDraw.ImageDraw, pictures: list[Image.Image]
) -> None:
    """Each picture scaled (aspect kept) into an equal cell of a row along the top, framed in
    white, in the order sent."""
    width, height = img.size
    slots = max(len(pictures), 1)
    gap = max(2, width // 64)
    cell_w = max(1, (width - gap * (slots + 1)) // slots)
    cell_h = max(1, int(height * _REFERENCE_ROW_SHARE) - 2 * gap)
    for index, picture in enumerate(pictures):
        fitted = ImageOps.contain(picture, (cell_w, cell_h), Image.Resampling.LANCZOS)
        left = gap + index * (cell_w + gap) + (cell_w - fitted.width) // 2
        top = gap
        frame = max(1, gap // 2)
        draw.rectangle(
            (
                left - frame,
                top - frame,
                left + fitted.width + frame - 1,
                top + fitted.height + frame - 1,
            ),
            fill=(255, 255, 255, 255),
        )
        img.paste(fitted, (left, top), fitted)


def _draw_caption(
    draw: ImageDraw.ImageDraw, prompt: str, seed: int, width: int, height: int
) -> None:
    """Write the prompt (wrapped, truncated to fit) and the seed on a dark translucent band."""
    font_px = max(8, min(width, height) // 28)
    font = _font(font_px)
    line_h = int(font_px * 1.3)
    margin = max(4, width // 32)
    # The default font is roughly 0.55 em wide per character.
    columns = max(8, int((width - 2 * margin) / (font_px * 0.55)))
    max_lines = max(1, int(height * 0.6) // line_h - 1)
    lines = textwrap.wrap(prompt, width=columns) or [""]
    if len(lines) > max_lines:
        lines = [*lines[: max_lines - 1], lines[max_lines - 1][: columns - 1] + "…"]
    lines.append(f"seed {seed}")
    band_h = len(lines) * line_h + 2 * margin
    top = max(0, height - band_h)
    draw.rectangle((0, top, width, height), fill=(0, 0, 0, 150))
    for row, line in enumerate(lines):
        draw.text((margin, top + margin + row * line_h), line, fill=(255, 255, 255), font=font)


@lru_cache(maxsize=32)
def _font(size: int) -> Font:
    # Pillow's bundled default scales when FreeType is available; otherwise a fixed bitmap font.
    return ImageFont.load_default(size=size)
