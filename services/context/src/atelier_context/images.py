"""Reference images: checked from their header before anything is decoded, then made small
enough for the model and re-encoded (which also drops EXIF, GPS positions included).

Bytes come from writers and from the internet, so the order matters: byte size first, then the
format and pixel count Pillow reads from the header alone, and only then a decode (of a JPEG,
at reduced scale where possible). A 50 KB PNG claiming 100 000 x 100 000 pixels is refused
without ever allocating them.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

from PIL import Image, ImageOps, UnidentifiedImageError

# Pillow's own decompression-bomb guard, set deliberately and process-wide: above this it refuses
# to open anything. Our per-setting limit (`reference_max_pixels`) is checked first and is lower.
PILLOW_PIXEL_CEILING = 8192 * 8192
Image.MAX_IMAGE_PIXELS = PILLOW_PIXEL_CEILING

# What the image models we talk to accept as input, by Pillow format name.
ACCEPTED_FORMATS: dict[str, str] = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg"}
NOT_AN_IMAGE = "This is not an image Atelier can send: use PNG, JPEG or WebP."


class ImageRejected(Exception):
    """Not usable as a reference image; `reason` is written for the writer."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int = 10 * 1024 * 1024
    max_pixels: int = 25_000_000
    max_side: int = 1536


@dataclass(frozen=True)
class ImageHeader:
    format: str
    width: int
    height: int


@dataclass(frozen=True)
class PreparedImage:
    """What the model is sent: PNG (when the source is PNG or has transparency) or JPEG."""

    data: bytes = field(repr=False)
    content_type: str
    width: int
    height: int
    original_width: int
    original_height: int

    @property
    def size_bytes(self) -> int:
        return len(self.data)

    @property
    def extension(self) -> str:
        return EXTENSIONS[self.content_type]


def megabytes(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MB"


def check_byte_size(size: int, limits: ImageLimits) -> None:
    if size > limits.max_bytes:
        raise ImageRejected(
            f"The image is too big: {megabytes(size)}, and at most "
            f"{megabytes(limits.max_bytes)} is accepted."
        )


def read_header(data: bytes, limits: ImageLimits) -> ImageHeader:
    """Type, byte size and pixel count, from the header only: nothing is decoded here."""
    check_byte_size(len(data), limits)
    if not data:
        raise ImageRejected("The image is empty.")
    try:
        # `formats` keeps Pillow from trying its other (less hardened) decoders on the bytes.
        with Image.open(io.BytesIO(data), formats=list(ACCEPTED_FORMATS)) as image:
            header = ImageHeader(image.format or "", image.width, image.height)
    except Image.DecompressionBombError as exc:
        raise ImageRejected(
            "The image has far too many pixels to be opened safely "
            f"(at most {limits.max_pixels / 1e6:g} megapixels are accepted)."
        ) from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageRejected(NOT_AN_IMAGE) from exc
    if header.format not in ACCEPTED_FORMATS:
        raise ImageRejected(NOT_AN_IMAGE)
    if header.width < 1 or header.height < 1:
        raise ImageRejected("The image has no pixels.")
    if header.width * header.height > limits.max_pixels:
        raise ImageRejected(
            f"The image has too many pixels: {header.width}x{header.height}, and at most "
            f"{limits.max_pixels / 1e6:g} megapixels are accepted."
        )
    return header


def prepare_reference(data: bytes, limits: ImageLimits) -> PreparedImage:
    """Check, decode, orient, downscale to `max_side` and re-encode. CPU-bound: run it in a
    worker thread."""
    header = read_header(data, limits)
    try:
        with Image.open(io.BytesIO(data), formats=[header.format]) as opened:
            if header.format == "JPEG":
                # Let libjpeg decode at 1/2, 1/4 or 1/8 scale when that still covers max_side:
                # a 24-megapixel photo then never exists in memory at full size.
                opened.draft("RGB", (limits.max_side, limits.max_side))
            opened.load()
            image = ImageOps.exif_transpose(opened)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageRejected("The image is damaged or incomplete.") from exc

    transparent = image.mode in ("RGBA", "LA", "PA") or (
        image.mode == "P" and "transparency" in image.info
    )
    image = image.convert("RGBA" if transparent else "RGB")
    image.thumbnail((limits.max_side, limits.max_side), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    if transparent or header.format == "PNG":
        image.save(out, format="PNG")
        content_type = "image/png"
    else:
        image.save(out, format="JPEG", quality=90)
        content_type = "image/jpeg"
    return PreparedImage(
        data=out.getvalue(),
        content_type=content_type,
        width=image.width,
        height=image.height,
        original_width=header.width,
        original_height=header.height,
    )
