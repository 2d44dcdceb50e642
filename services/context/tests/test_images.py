"""Reference image checks: type, bytes and pixel count before any decode; then downscaling."""

import io
from collections.abc import Callable

import pytest
from PIL import Image

from atelier_context.images import ImageLimits, ImageRejected, prepare_reference, read_header

LIMITS = ImageLimits(max_bytes=200_000, max_pixels=4_000_000, max_side=256)


def _rejected(data: bytes, limits: ImageLimits = LIMITS) -> str:
    with pytest.raises(ImageRejected) as caught:
        prepare_reference(data, limits)
    return caught.value.reason


def test_png_jpeg_and_webp_are_accepted(image_bytes: Callable[..., bytes]) -> None:
    for fmt in ("PNG", "JPEG", "WEBP"):
        header = read_header(image_bytes(40, 30, fmt), LIMITS)
        assert (header.format, header.width, header.height) == (fmt, 40, 30)


def test_other_files_are_not_images(image_bytes: Callable[..., bytes]) -> None:
    assert "not an image" in _rejected(b"<html>hello</html>")
    assert "not an image" in _rejected(image_bytes(10, 10, "GIF"))
    assert "not an image" in _rejected(image_bytes(10, 10, "BMP"))
    assert "empty" in _rejected(b"")


def test_too_many_bytes_is_refused_before_opening() -> None:
    reason = _rejected(b"\x89PNG" + b"\0" * 300_000)
    assert reason.startswith("The image is too big: 0.3 MB")


def test_a_decompression_bomb_is_refused_from_its_header(
    claiming_png: Callable[[int, int], bytes],
) -> None:
    # 6000x6000 is past our limit but not Pillow's: our own header check says no.
    reason = _rejected(claiming_png(6000, 6000))
    assert reason == (
        "The image has too many pixels: 6000x6000, and at most 4 megapixels are accepted."
    )
    # 50 000 x 50 000 trips Pillow's guard on open; still a plain answer.
    assert "far too many pixels" in _rejected(claiming_png(50_000, 50_000))
    # The same header within the limits reaches the decoder, which finds the data missing.
    assert "damaged" in _rejected(claiming_png(100, 100))


def test_large_images_are_downscaled_to_the_longest_side(
    image_bytes: Callable[..., bytes],
) -> None:
    prepared = prepare_reference(image_bytes(1024, 512, "JPEG"), LIMITS)
    assert (prepared.width, prepared.height) == (256, 128)
    assert (prepared.original_width, prepared.original_height) == (1024, 512)
    assert prepared.content_type == "image/jpeg" and prepared.extension == "jpg"
    with Image.open(io.BytesIO(prepared.data)) as image:
        assert image.size == (256, 128) and image.format == "JPEG"

    small = prepare_reference(image_bytes(100, 80, "PNG"), LIMITS)
    assert (small.width, small.height, small.content_type) == (100, 80, "image/png")


def test_transparency_keeps_png_and_webp_photos_become_jpeg(
    image_bytes: Callable[..., bytes],
) -> None:
    transparent = prepare_reference(image_bytes(50, 50, "WEBP", mode="RGBA"), LIMITS)
    assert transparent.content_type == "image/png"
    with Image.open(io.BytesIO(transparent.data)) as image:
        assert image.mode == "RGBA"
    opaque = prepare_reference(image_bytes(50, 50, "WEBP"), LIMITS)
    assert opaque.content_type == "image/jpeg"


def test_exif_orientation_is_applied_and_metadata_dropped() -> None:
    image = Image.new("RGB", (60, 20), (0, 0, 255))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    exif[0x010F] = "Camera maker that should not travel"
    out = io.BytesIO()
    image.save(out, format="JPEG", exif=exif)
    prepared = prepare_reference(out.getvalue(), LIMITS)
    assert (prepared.width, prepared.height) == (20, 60)
    assert b"Camera maker" not in prepared.data
