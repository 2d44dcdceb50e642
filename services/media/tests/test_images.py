"""Unit tests of the pure image helpers: thumbnails, probing, ids and keys."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable

import pytest
from PIL import Image

from atelier_media import service
from atelier_media.service import (
    UnusableImage,
    analyse_image,
    make_thumbnail,
    media_id_for,
    original_key,
    probe_image,
    thumbnail_key,
)


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ((1024, 512), (256, 128)),  # landscape: width bounds it
        ((300, 900), (85, 256)),  # portrait: height bounds it, aspect kept
        ((1024, 1024), (256, 256)),
        ((100, 40), (100, 40)),  # never upscaled
    ],
)
def test_thumbnail_is_webp_bounded_and_keeps_aspect(
    image_bytes: Callable[..., bytes], size: tuple[int, int], expected: tuple[int, int]
) -> None:
    thumbnail = decode(make_thumbnail(image_bytes(*size), 256))

    assert thumbnail.format == "WEBP"
    assert thumbnail.size == expected
    assert abs(thumbnail.width / thumbnail.height - size[0] / size[1]) < 0.02


def test_thumbnail_honours_max_px(image_bytes: Callable[..., bytes]) -> None:
    assert decode(make_thumbnail(image_bytes(800, 600), 64)).size == (64, 48)


def test_thumbnail_keeps_transparency(image_bytes: Callable[..., bytes]) -> None:
    thumbnail = decode(make_thumbnail(image_bytes(400, 400, mode="RGBA"), 256))

    assert thumbnail.mode == "RGBA"


def test_thumbnail_of_palette_and_jpeg_images() -> None:
    palette = io.BytesIO()
    Image.new("P", (512, 256), 3).save(palette, format="PNG")
    jpeg = io.BytesIO()
    Image.new("RGB", (2000, 1000), (200, 30, 30)).save(jpeg, format="JPEG")

    assert decode(make_thumbnail(palette.getvalue(), 256)).size == (256, 128)
    assert decode(make_thumbnail(jpeg.getvalue(), 256)).size == (256, 128)


def test_exif_rotated_photo_is_probed_and_thumbnailed_upright() -> None:
    # Stored 400x200 with "rotate 90° clockwise to display" (orientation 6): shown as 200x400.
    exif = Image.Exif()
    exif[0x0112] = 6
    out = io.BytesIO()
    Image.new("RGB", (400, 200), "white").save(out, format="JPEG", exif=exif)
    data = out.getvalue()

    info = probe_image(data)

    assert (info.width, info.height) == (200, 400)
    assert decode(make_thumbnail(data, 256)).size == (128, 256)


@pytest.mark.parametrize(
    ("fmt", "content_type", "extension"),
    [("PNG", "image/png", "png"), ("JPEG", "image/jpeg", "jpg"), ("WEBP", "image/webp", "webp")],
)
def test_probe_reads_format_from_the_bytes(
    image_bytes: Callable[..., bytes], fmt: str, content_type: str, extension: str
) -> None:
    info = probe_image(image_bytes(120, 80, fmt=fmt))

    assert (info.content_type, info.extension, info.width, info.height) == (
        content_type,
        extension,
        120,
        80,
    )


def test_bytes_that_are_not_an_accepted_image_are_refused() -> None:
    bmp = io.BytesIO()
    Image.new("RGB", (10, 10)).save(bmp, format="BMP")

    for data in (b"definitely not an image", bmp.getvalue()):
        with pytest.raises(UnusableImage):
            probe_image(data)
        with pytest.raises(UnusableImage):
            make_thumbnail(data, 256)
        with pytest.raises(UnusableImage):
            analyse_image(data, 256)


def test_truncated_image_is_refused(image_bytes: Callable[..., bytes]) -> None:
    data = image_bytes(300, 300)

    with pytest.raises(UnusableImage):
        make_thumbnail(data[: len(data) // 2], 256)
    with pytest.raises(UnusableImage):
        analyse_image(data[: len(data) // 2], 256)


@pytest.mark.parametrize("orientation", [1, 6])
def test_analysing_in_one_pass_gives_what_probe_and_thumbnail_give(orientation: int) -> None:
    # One decode for the landing; the result must not depend on it (the thumbnail works in
    # place, so probing after it would read the thumbnail's size).
    exif = Image.Exif()
    exif[0x0112] = orientation
    out = io.BytesIO()
    Image.new("RGB", (1200, 600), (10, 120, 200)).save(out, format="JPEG", exif=exif)
    data = out.getvalue()

    analysed = analyse_image(data, 256)

    assert analysed.info == probe_image(data)
    assert analysed.sha256 == hashlib.sha256(data).hexdigest()
    assert decode(analysed.thumbnail).size == decode(make_thumbnail(data, 256)).size
    assert decode(analysed.thumbnail).format == "WEBP"


def test_too_many_pixels_are_refused_before_decoding(
    image_bytes: Callable[..., bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service, "MAX_IMAGE_PIXELS", 99 * 99)

    with pytest.raises(UnusableImage, match="exceeds"):
        make_thumbnail(image_bytes(100, 100), 256)


def test_pillow_limit_is_set_deliberately() -> None:
    assert Image.MAX_IMAGE_PIXELS == service.MAX_IMAGE_PIXELS == 8192 * 8192


def test_media_ids_are_deterministic_per_task_and_index() -> None:
    assert media_id_for("task-1", 0) == media_id_for("task-1", 0)
    assert len({media_id_for("task-1", 0), media_id_for("task-1", 1), media_id_for("t-2", 0)}) == 3


def test_keys_are_content_addressed() -> None:
    sha = "ab" + "0" * 62

    assert original_key(sha, "png") == f"originals/ab/{sha}.png"
    assert thumbnail_key(sha) == f"thumbnails/ab/{sha}.webp"
