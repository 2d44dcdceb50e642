"""The Workers AI adapter against the fake Workers AI server, over real HTTP."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from adapter_support import assert_classified, assert_key_hidden, failure, picture, serve

from atelier_contracts.errors import ErrorClass
from atelier_fakes.workersai import FakeWorkersAIState, create_workersai_fake
from atelier_workers.adapters import ImageRequest, ProviderError, WorkersAIAdapter
from atelier_workers.adapters.base import ReferenceImage
from atelier_workers.adapters.workersai import workersai_dimensions

ADAPTER = WorkersAIAdapter()
API_KEY = "cf-test-token-0123456789abcdefghijklmnop"
ACCOUNT = "feedfacefeedfacefeedfacefeedface"
SDXL = "@cf/stabilityai/stable-diffusion-xl-base-1.0"
SCHNELL = "@cf/black-forest-labs/flux-1-schnell"
FLUX2 = "@cf/black-forest-labs/flux-2-dev"
IMG2IMG = "@cf/runwayml/stable-diffusion-v1-5-img2img"


@pytest.fixture(scope="module")
def fake_server() -> Iterator[tuple[str, FakeWorkersAIState]]:
    yield from serve(
        create_workersai_fake,
        FakeWorkersAIState(api_key=API_KEY, account_id=ACCOUNT, hang_s=5.0, retry_after_s=2.0),
        "/client/v4",
    )


@pytest.fixture
def fake(fake_server: tuple[str, FakeWorkersAIState]) -> FakeWorkersAIState:
    fake_server[1].reset()
    return fake_server[1]


def reference(color: tuple[int, int, int]) -> ReferenceImage:
    return picture(color, (64, 64))


def _request(base_url: str, **overrides: Any) -> ImageRequest:
    values: dict[str, Any] = {
        "model": SDXL,
        "prompt": "a lighthouse on a cliff at dusk",
        "size": "1024x768",
        "base_url": base_url,
        "api_key": API_KEY,
        "timeout_s": 10.0,
        "provider_config": {"account_id": ACCOUNT},
    }
    return ImageRequest(**{**values, **overrides})


async def _fail(request: ImageRequest, client: httpx.AsyncClient) -> ProviderError:
    return await failure(ADAPTER, request, client)


# --- success -----------------------------------------------------------------------------


async def test_json_model_answering_raw_bytes(
    fake: FakeWorkersAIState, base_url: str, client: httpx.AsyncClient
) -> None:
    request = _request(base_url, seed=3, negative_prompt="fog", options={"num_steps": 20})
    output = await ADAPTER.generate(request, client)

    [image] = output.images
    assert (image.content_type, image.width, image.height) == ("image/png", 1024, 768)
    assert image.seed == 3
    assert output.provider_request_id  # cf-ray
    [sent] = fake.requests
    assert sent.path == f"/client/v4/accounts/{ACCOUNT}/ai/run/{SDXL}"
    assert sent.headers["authorization"] == f"Bearer {API_KEY}"
    assert sent.body == {
        "prompt": "a lighthouse on a cliff at dusk",
        "width": 1024,
        "height": 768,
        "negative_prompt": "fog",
        "seed": 3,
        "num_steps": 20,
    }


async def test_json_model_answering_base64_json(
    fake: FakeWorkersAIState, base_url: str, client: httpx.AsyncClient
) -> None:
    output = await ADAPTER.generate(_request(base_url, model=SCHNELL, options={"steps": 4}), client)
    assert output.images[0].content_type == "image/jpeg"
    assert fake.requests[0].body["steps"] == 4


async def test_img2img_sends_the_reference_as_base64(
    fake: FakeWorkersAIState, base_url: str, client: httpx.AsyncClient
) -> None:
    ref = reference((9, 99, 199))
    request = _request(base_url, model=IMG2IMG, reference_images=(ref,), options={"strength": 0.5})
    await ADAPTER.generate(request, client)
    body = fake.requests[0].body
    assert base64.b64decode(body["image_b64"]) == ref.data
    assert body["strength"] == 0.5


async def test_flux2_uses_multipart_with_reference_images(
    fake: FakeWorkersAIState, base_url: str, client: httpx.AsyncClient
) -> None:
    refs = (reference((255, 0, 0)), reference((0, 255, 0)))
    request = _request(base_url, model=FLUX2, reference_images=refs, seed=11, negative_prompt="fog")
    output = await ADAPTER.generate(request, client)
    assert (output.images[0].width, output.images[0].height) == (1024, 768)
    sent = fake.requests[0]
    assert sent.headers["content-type"].startswith("multipart/form-data")
    assert sent.body == {
        "prompt": "a lighthouse on a cliff at dusk",
        "width": "1024",
        "height": "768",
        "seed": "11",
        "input_image_0": ("ref0", "image/png", len(refs[0].data)),
        "input_image_1": ("ref1", "image/png", len(refs[1].data)),
    }


async def test_flux2_without_references(
    fake: FakeWorkersAIState, base_url: str, client: httpx.AsyncClient
) -> None:
    output = await ADAPTER.generate(_request(base_url, model=FLUX2), client)
    assert len(output.images) == 1
    assert set(fake.requests[0].body) == {"prompt", "width", "height"}


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ("1024x768", (1024, 768)),
        ("1000x700", (1008, 704)),
        ("4096x100", (2048, 256)),
        ("1792x1024", (1792, 1024)),
    ],
)
def test_sizes_snap_to_the_accepted_grid(size: str, expected: tuple[int, int]) -> None:
    assert workersai_dimensions(size) == expected


async def test_snapped_size_reaches_the_provider(
    fake: FakeWorkersAIState, base_url: str, client: httpx.AsyncClient
) -> None:
    output = await ADAPTER.generate(_request(base_url, size="1000x700"), client)
    assert (output.images[0].width, output.images[0].height) == (1008, 704)


# --- error mapping -----------------------------------------------------------------------

ERROR_CASES: list[tuple[str, ErrorClass, str | None, float | None]] = [
    ("401-echo-key", ErrorClass.AUTH, None, None),
    ("429", ErrorClass.RATE_LIMITED, None, 2.0),
    ("capacity", ErrorClass.PROVIDER_UNAVAILABLE, None, None),
    ("daily-limit", ErrorClass.QUOTA_EXHAUSTED, None, None),
    ("nsfw-input", ErrorClass.CONTENT_BLOCKED, "input", None),
    ("nsfw-output", ErrorClass.CONTENT_BLOCKED, "output", None),
    ("bad-input", ErrorClass.INVALID_REQUEST, None, None),
    ("500", ErrorClass.PROVIDER_UNAVAILABLE, None, None),
    ("200-failure", ErrorClass.PROVIDER_UNAVAILABLE, None, None),
    ("empty", ErrorClass.NO_IMAGE_RETURNED, None, None),
    ("garbage-image", ErrorClass.NO_IMAGE_RETURNED, None, None),
]


@pytest.mark.parametrize("model", [SDXL, FLUX2])
@pytest.mark.parametrize(("marker", "error_class", "stage", "retry_after"), ERROR_CASES)
async def test_error_modes_map_to_the_taxonomy(
    fake: FakeWorkersAIState,
    base_url: str,
    client: httpx.AsyncClient,
    model: str,
    marker: str,
    error_class: ErrorClass,
    stage: str | None,
    retry_after: float | None,
) -> None:
    error = await _fail(_request(base_url, model=model, prompt=f"x [workersai:{marker}]"), client)
    assert_classified(error, error_class, stage, retry_after)
    assert_key_hidden(error, API_KEY)


async def test_wrong_token_is_auth(
    fake: FakeWorkersAIState, base_url: str, client: httpx.AsyncClient
) -> None:
    error = await _fail(_request(base_url, api_key="cf-wrong-token-00000000000000"), client)
    assert error.info.error_class is ErrorClass.AUTH
    assert "10000" in (error.info.detail or "")


async def test_wrong_account_is_invalid_request(
    fake: FakeWorkersAIState, base_url: str, client: httpx.AsyncClient
) -> None:
    request = _request(base_url, provider_config={"account_id": "not-my-account"})
    error = await _fail(request, client)
    assert error.info.error_class is ErrorClass.INVALID_REQUEST
    assert "7003" in (error.info.detail or "")


async def test_hanging_provider_times_out(
    fake: FakeWorkersAIState, base_url: str, client: httpx.AsyncClient
) -> None:
    error = await _fail(_request(base_url, prompt="x [workersai:hang]", timeout_s=0.5), client)
    assert error.info.error_class is ErrorClass.TIMEOUT


@pytest.mark.parametrize(
    "overrides",
    [
        {"prompt": ""},
        {"size": "auto"},
        {"provider_config": {}},
        {"provider_config": {"account_id": "  "}},
        {"model": IMG2IMG, "reference_images": (reference((1, 1, 1)), reference((2, 2, 2)))},
        {"model": FLUX2, "reference_images": tuple(reference((i, 0, 0)) for i in range(5))},
    ],
)
async def test_adapter_never_sends_an_invalid_body(
    fake: FakeWorkersAIState,
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
    assert ADAPTER.max_images_per_call(SDXL) == 1
