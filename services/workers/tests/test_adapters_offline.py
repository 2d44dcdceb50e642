"""The offline adapter: deterministic, fast, no network, scriptable failures."""

from __future__ import annotations

import io
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from PIL import Image

from atelier_contracts.errors import ErrorClass
from atelier_contracts.providers import capabilities
from atelier_workers.adapters import ImageRequest, OfflineAdapter, ProviderError, image_size_of
from atelier_workers.adapters.base import ReferenceImage
from atelier_workers.adapters.offline import seed_from_prompt

ADAPTER = OfflineAdapter()


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    # A transport that fails any request proves the adapter never touches the network.
    def refuse(request: httpx.Request) -> httpx.Response:
        raise AssertionError(f"offline adapter made a request to {request.url}")

    async with httpx.AsyncClient(transport=httpx.MockTransport(refuse)) as client:
        yield client


def _request(**overrides: Any) -> ImageRequest:
    values: dict[str, Any] = {
        "model": "placeholder",
        "prompt": "a lighthouse on a cliff at dusk",
        "size": "256x192",
        "n": 1,
        "seed": 7,
    }
    return ImageRequest(**{**values, **overrides})


async def test_same_inputs_give_identical_bytes(client: httpx.AsyncClient) -> None:
    first = await ADAPTER.generate(_request(), client)
    second = await ADAPTER.generate(_request(), client)
    assert first.images[0].data == second.images[0].data


async def test_different_seeds_or_prompts_give_different_images(
    client: httpx.AsyncClient,
) -> None:
    base = (await ADAPTER.generate(_request(), client)).images[0].data
    other_seed = (await ADAPTER.generate(_request(seed=8), client)).images[0].data
    other_prompt = (await ADAPTER.generate(_request(prompt="a fox"), client)).images[0].data
    assert len({base, other_seed, other_prompt}) == 3


async def test_output_is_a_png_of_the_requested_size(client: httpx.AsyncClient) -> None:
    image = (await ADAPTER.generate(_request(size="320x200"), client)).images[0]
    assert (image.content_type, image.width, image.height) == ("image/png", 320, 200)
    assert image_size_of(image.data) == ("image/png", 320, 200)


async def test_n_images_with_consecutive_seeds(client: httpx.AsyncClient) -> None:
    output = await ADAPTER.generate(_request(n=4, seed=100), client)
    assert [image.seed for image in output.images] == [100, 101, 102, 103]
    assert len({image.data for image in output.images}) == 4
    # An image's reported seed reproduces it alone.
    again = await ADAPTER.generate(_request(n=1, seed=102), client)
    assert again.images[0].data == output.images[2].data
    assert output.usage == {"images": 4}


async def test_missing_seed_is_derived_from_prompt_and_reported(
    client: httpx.AsyncClient,
) -> None:
    first = await ADAPTER.generate(_request(seed=None), client)
    second = await ADAPTER.generate(_request(seed=None), client)
    assert first.images[0].seed == seed_from_prompt("a lighthouse on a cliff at dusk")
    assert first.images[0].data == second.images[0].data


async def test_n_beyond_the_limit_is_invalid(client: httpx.AsyncClient) -> None:
    assert ADAPTER.max_images_per_call("anything") == 4
    for n in (0, 5):
        with pytest.raises(ProviderError) as caught:
            await ADAPTER.generate(_request(n=n), client)
        assert caught.value.error_class is ErrorClass.INVALID_REQUEST


async def test_bad_size_is_invalid(client: httpx.AsyncClient) -> None:
    with pytest.raises(ProviderError) as caught:
        await ADAPTER.generate(_request(size="big"), client)
    assert caught.value.error_class is ErrorClass.INVALID_REQUEST


@pytest.mark.parametrize("error_class", list(ErrorClass))
async def test_fail_marker_raises_that_class(
    client: httpx.AsyncClient, error_class: ErrorClass
) -> None:
    with pytest.raises(ProviderError) as caught:
        await ADAPTER.generate(_request(prompt=f"a cat [fail:{error_class.value}]"), client)
    info = caught.value.info
    assert info.error_class is error_class
    assert info.stage == ("input" if error_class is ErrorClass.CONTENT_BLOCKED else None)
    assert (info.retry_after_s is not None) == (error_class is ErrorClass.RATE_LIMITED)


async def test_fail_marker_with_stage(client: httpx.AsyncClient) -> None:
    with pytest.raises(ProviderError) as caught:
        await ADAPTER.generate(_request(prompt="x [fail:content_blocked:output]"), client)
    assert caught.value.info.stage == "output"


async def test_unknown_fail_marker_is_invalid_request(client: httpx.AsyncClient) -> None:
    with pytest.raises(ProviderError) as caught:
        await ADAPTER.generate(_request(prompt="x [fail:exploded]"), client)
    assert caught.value.error_class is ErrorClass.INVALID_REQUEST


async def test_delay_option_sleeps_first(client: httpx.AsyncClient) -> None:
    started = time.perf_counter()
    await ADAPTER.generate(_request(options={"delay_s": 0.2}), client)
    assert time.perf_counter() - started >= 0.2
    with pytest.raises(ProviderError):
        await ADAPTER.generate(_request(options={"delay_s": "soon"}), client)


def _reference(color: tuple[int, int, int], size: tuple[int, int] = (64, 48)) -> ReferenceImage:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, format="PNG")
    return ReferenceImage(out.getvalue(), "image/png", *size)


async def test_reference_images_are_drawn_into_the_picture(client: httpx.AsyncClient) -> None:
    """Each reference lands, scaled, in its own cell of the top row, in the order sent."""
    red, blue = _reference((255, 0, 0)), _reference((0, 0, 255), (40, 80))
    plain = (await ADAPTER.generate(_request(size="400x300"), client)).images[0]
    drawn = (
        await ADAPTER.generate(_request(size="400x300", reference_images=(red, blue)), client)
    ).images[0]
    assert (drawn.width, drawn.height) == (400, 300)
    assert drawn.data != plain.data
    picture = Image.open(io.BytesIO(drawn.data)).convert("RGB")
    # Two cells across the width: the left one's middle shows the first picture, the right
    # one's the second; neither is stretched beyond its cell or into the caption below.
    assert picture.getpixel((100, 60)) == (255, 0, 0)
    assert picture.getpixel((300, 60)) == (0, 0, 255)
    assert picture.getpixel((200, 60)) != (255, 0, 0)
    # Deterministic, references included.
    again = (
        await ADAPTER.generate(_request(size="400x300", reference_images=(red, blue)), client)
    ).images[0]
    assert again.data == drawn.data


async def test_up_to_four_references_agree_with_the_capabilities(
    client: httpx.AsyncClient,
) -> None:
    limit = capabilities("offline", "offline-sketch").max_reference_images
    assert limit == 4
    four = tuple(_reference((i * 60, 0, 0)) for i in range(limit))
    output = await ADAPTER.generate(_request(size="256x256", reference_images=four), client)
    assert output.images[0].width == 256
    with pytest.raises(ProviderError) as caught:
        await ADAPTER.generate(_request(reference_images=(*four, four[0])), client)
    assert caught.value.error_class is ErrorClass.INVALID_REQUEST
    assert "at most 4 reference images" in str(caught.value)


async def test_an_unreadable_reference_is_an_invalid_request(client: httpx.AsyncClient) -> None:
    broken = ReferenceImage(b"not an image", "image/png", 10, 10)
    with pytest.raises(ProviderError) as caught:
        await ADAPTER.generate(_request(reference_images=(broken,)), client)
    assert caught.value.error_class is ErrorClass.INVALID_REQUEST
