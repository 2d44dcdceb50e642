"""The Stability adapter against the fake Stability server, over real HTTP (multipart)."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from adapter_support import assert_classified, assert_key_hidden, failure, picture, serve
from PIL import Image

from atelier_contracts.errors import ErrorClass
from atelier_fakes.stability import ASPECT_SIZES, FakeStabilityState, create_stability_fake
from atelier_workers.adapters import ImageRequest, ProviderError, StabilityAdapter
from atelier_workers.adapters.base import ReferenceImage
from atelier_workers.adapters.stability import _image_and_outcome

ADAPTER = StabilityAdapter()
API_KEY = "sk-test-stability-0123456789abcdef"


@pytest.fixture(scope="module")
def fake_server() -> Iterator[tuple[str, FakeStabilityState]]:
    yield from serve(
        create_stability_fake,
        FakeStabilityState(api_key=API_KEY, hang_s=5.0, retry_after_s=2.0),
        "/v2beta",
    )


@pytest.fixture
def fake(fake_server: tuple[str, FakeStabilityState]) -> FakeStabilityState:
    fake_server[1].reset()
    return fake_server[1]


def reference(size: tuple[int, int] = (640, 512)) -> ReferenceImage:
    return picture((90, 30, 160), size)


def _request(base_url: str, **overrides: Any) -> ImageRequest:
    values: dict[str, Any] = {
        "model": "core",
        "prompt": "a lighthouse on a cliff at dusk",
        "size": "1024x1024",
        "base_url": base_url,
        "api_key": API_KEY,
        "timeout_s": 10.0,
    }
    return ImageRequest(**{**values, **overrides})


async def _fail(request: ImageRequest, client: httpx.AsyncClient) -> ProviderError:
    return await failure(ADAPTER, request, client)


# --- success -----------------------------------------------------------------------------


async def test_core_success_sends_multipart_with_seed_and_negative_prompt(
    fake: FakeStabilityState, base_url: str, client: httpx.AsyncClient
) -> None:
    request = _request(
        base_url, seed=1234, negative_prompt="fog", options={"style_preset": "fantasy-art"}
    )
    output = await ADAPTER.generate(request, client)

    [image] = output.images
    assert (image.content_type, image.width, image.height) == ("image/png", 1024, 1024)
    assert image.seed == 1234
    assert output.provider_request_id
    [sent] = fake.requests
    assert sent.path == "/v2beta/stable-image/generate/core"
    assert sent.headers["content-type"].startswith("multipart/form-data; boundary=")
    assert sent.headers["accept"] == "image/*"
    assert sent.headers["authorization"] == f"Bearer {API_KEY}"
    assert sent.body == {
        "prompt": "a lighthouse on a cliff at dusk",
        "negative_prompt": "fog",
        "seed": "1234",
        "output_format": "png",
        "aspect_ratio": "1:1",
        "style_preset": "fantasy-art",
    }


async def test_seedless_call_reports_the_providers_seed(
    fake: FakeStabilityState, base_url: str, client: httpx.AsyncClient
) -> None:
    output = await ADAPTER.generate(_request(base_url, options={"output_format": "jpeg"}), client)
    assert output.images[0].seed is not None and output.images[0].seed > 0
    assert output.images[0].content_type == "image/jpeg"
    assert "seed" not in fake.requests[0].body


async def test_sd35_image_to_image_with_a_reference(
    fake: FakeStabilityState, base_url: str, client: httpx.AsyncClient
) -> None:
    ref = reference()
    request = _request(
        base_url, model="sd3.5-large", size="1792x1024", reference_images=(ref,), seed=9
    )
    output = await ADAPTER.generate(request, client)
    assert (output.images[0].width, output.images[0].height) == (640, 512)  # keeps the input's
    body = fake.requests[0].body
    assert fake.requests[0].path.endswith("/generate/sd3")
    assert body["model"] == "sd3.5-large"
    assert body["mode"] == "image-to-image"
    assert body["strength"] == "0.7"
    assert body["image"] == ("reference.png", "image/png", len(ref.data))
    assert "aspect_ratio" not in body  # only valid for text-to-image


async def test_ultra_with_reference_and_strength_option(
    fake: FakeStabilityState, base_url: str, client: httpx.AsyncClient
) -> None:
    request = _request(
        base_url, model="ultra", reference_images=(reference(),), options={"strength": 0.35}
    )
    await ADAPTER.generate(request, client)
    body = fake.requests[0].body
    assert body["strength"] == "0.35"
    assert "mode" not in body and "model" not in body


async def test_sd3_text_to_image_and_model_aliases(
    fake: FakeStabilityState, base_url: str, client: httpx.AsyncClient
) -> None:
    await ADAPTER.generate(_request(base_url, model="sd3.5-medium"), client)
    await ADAPTER.generate(_request(base_url, model="stable-image-ultra"), client)
    assert fake.requests[0].path.endswith("/generate/sd3")
    assert fake.requests[0].body["model"] == "sd3.5-medium"
    assert "mode" not in fake.requests[0].body
    assert fake.requests[1].path.endswith("/generate/ultra")


@pytest.mark.parametrize(
    ("size", "ratio"),
    [
        ("1024x1024", "1:1"),
        ("1920x1080", "16:9"),
        ("1080x1920", "9:16"),
        ("2560x1080", "21:9"),
        ("1080x2560", "9:21"),
        ("1200x1500", "4:5"),
        ("1536x1024", "3:2"),
        ("1024x1536", "2:3"),
        ("1280x1024", "5:4"),
    ],
)
async def test_size_maps_to_nearest_ratio(
    fake: FakeStabilityState, base_url: str, client: httpx.AsyncClient, size: str, ratio: str
) -> None:
    output = await ADAPTER.generate(_request(base_url, size=size), client)
    assert fake.requests[0].body["aspect_ratio"] == ratio
    assert (output.images[0].width, output.images[0].height) == ASPECT_SIZES[ratio]


def test_json_answers_are_read_too() -> None:
    """A proxy that rewrites Accept to JSON still gets its outcome read (A.4)."""
    png = io.BytesIO()
    Image.new("RGB", (8, 8)).save(png, format="PNG")
    response = httpx.Response(
        200,
        json={
            "image": base64.b64encode(png.getvalue()).decode(),
            "finish_reason": "CONTENT_FILTERED",
            "seed": 77,
        },
    )
    data, finish, seed = _image_and_outcome(response, None)
    assert (data, finish, seed) == (png.getvalue(), "CONTENT_FILTERED", 77)


# --- error mapping -----------------------------------------------------------------------

ERROR_CASES: list[tuple[str, ErrorClass, str | None, float | None]] = [
    # Auth, rate limit, outage, content block and invalid request: test_adapter_contract.py.
    ("content-filtered", ErrorClass.CONTENT_BLOCKED, "output", None),
    ("402", ErrorClass.QUOTA_EXHAUSTED, None, None),
    ("413", ErrorClass.INVALID_REQUEST, None, None),
    ("429", ErrorClass.RATE_LIMITED, None, None),
    ("garbage-image", ErrorClass.NO_IMAGE_RETURNED, None, None),
]


@pytest.mark.parametrize(("marker", "error_class", "stage", "retry_after"), ERROR_CASES)
async def test_error_modes_map_to_the_taxonomy(
    fake: FakeStabilityState,
    base_url: str,
    client: httpx.AsyncClient,
    marker: str,
    error_class: ErrorClass,
    stage: str | None,
    retry_after: float | None,
) -> None:
    error = await _fail(_request(base_url, prompt=f"x [stability:{marker}]"), client)
    assert_classified(error, error_class, stage, retry_after)
    assert_key_hidden(error, API_KEY)


async def test_content_filtered_detail_says_so(
    fake: FakeStabilityState, base_url: str, client: httpx.AsyncClient
) -> None:
    error = await _fail(_request(base_url, prompt="x [stability:content-filtered]"), client)
    assert "CONTENT_FILTERED" in (error.info.detail or "")


async def test_wrong_key_is_auth(
    fake: FakeStabilityState, base_url: str, client: httpx.AsyncClient
) -> None:
    error = await _fail(_request(base_url, api_key="sk-wrong-stability-key-000000"), client)
    assert error.info.error_class is ErrorClass.AUTH
    assert "unauthorized" in (error.info.detail or "")


async def test_hanging_provider_times_out(
    fake: FakeStabilityState, base_url: str, client: httpx.AsyncClient
) -> None:
    error = await _fail(_request(base_url, prompt="x [stability:hang]", timeout_s=0.5), client)
    assert error.info.error_class is ErrorClass.TIMEOUT


@pytest.mark.parametrize(
    "overrides",
    [
        {"prompt": ""},
        {"model": "sdxl-1.0"},
        {"seed": 4_294_967_295},
        {"options": {"output_format": "gif"}},
        {"options": {"aspect_ratio": "7:5"}},
        {"reference_images": (reference(),)},  # core takes no image
        {"model": "ultra", "reference_images": (reference(), reference())},
    ],
)
async def test_adapter_never_sends_an_invalid_body(
    fake: FakeStabilityState,
    base_url: str,
    client: httpx.AsyncClient,
    overrides: dict[str, Any],
) -> None:
    # Counted from here: a late request of an earlier test may still arrive.
    seen = len(fake.requests)
    error = await _fail(_request(base_url, **overrides), client)
    assert error.info.error_class is ErrorClass.INVALID_REQUEST
    assert fake.requests[seen:] == []


def test_max_images_per_call() -> None:
    assert ADAPTER.max_images_per_call("core") == 1
