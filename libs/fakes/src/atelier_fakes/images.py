"""Small, real images for fake providers: the bytes must decode, the size must be as asked."""

from __future__ import annotations

import hashlib
import io

from PIL import Image

# Pillow's names for the formats providers let callers choose.
_PIL_FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}
CONTENT_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}


def render_image(
    text: str, width: int, height: int, output_format: str = "png", *, transparent: bool = False
) -> bytes:
    """A two-colour gradient derived from `text`, encoded as `output_format`.

    Deterministic for the same arguments, so tests can compare bytes; cheap enough (a few ms at
    1024x1024) that a fake can answer n=10 without slowing a test suite.
    """
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    start = Image.new("RGB", (width, height), (digest[0], digest[1], digest[2]))
    end = Image.new("RGB", (width, height), (digest[3], digest[4], digest[5]))
    mask = Image.linear_gradient("L").resize((width, height), Image.Resampling.BILINEAR)
    img = Image.composite(end, start, mask)
    if transparent and output_format != "jpeg":
        # Fade to transparent at the top, as a cut-out sticker would.
        img.putalpha(mask)
    out = io.BytesIO()
    options = {"compress_level": 1} if output_format == "png" else {"quality": 80}
    img.save(out, format=_PIL_FORMATS[output_format], **options)
    return out.getvalue()
