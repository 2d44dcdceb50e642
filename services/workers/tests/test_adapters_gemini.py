"""The Gemini adapter against the fake Gemini server, over real HTTP on a local port."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from adapter_support import assert_classified, assert_key_hidden, failure, picture, serve

from atelier_contracts.errors import ErrorClass
from atelier_fakes.gemini import SIZES_1K, FakeGeminiState, create_gemini_fake
from atelier_workers.adapters import GeminiAdapter, ImageRequest, ProviderError
from atelier_workers.adapters.base import ReferenceImage
from atelier_workers.adapters.gemini import (
    google_retry_delay,
)

ADAPTER = GeminiAdapter()
API_KEY = "AIzaSyTest-atelier-0123456789abcdefghij"


@pytest.fixture(scope="module")
def fake_server() -> Iterator[tuple[str, FakeGeminiState]]:
    yield from serve(
        create_gemini_fake,
        FakeGeminiState(api_key=API_KEY, hang_s=5.0, retry_delay_s=2.0),
        "/v1beta",
    )


@pytest.fixture
def fake(fake_server: tuple[str, FakeGeminiState]) -> FakeGeminiState:
    fake_server[1].reset()
    return fake_server[1]


def reference(color: tuple[int, int, int], size: tuple[int, int] = (48, 32)) -> ReferenceImage:
    return picture(color, size, element_id="hero")


def _request(base_url: str, **overrides: Any) -> ImageRequest:
    values: dict[str, Any] = {
        "model": "gemini-3-pro-image-preview",
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


async def test_success_without_references(
    fake: FakeGeminiState, base_url: str, client: httpx.AsyncClient
) -> None:
    output = await ADAPTER.generate(_request(base_url, seed=7, negative_prompt="fog"), client)

    [image] = output.images
    assert (image.content_type, image.width, image.height) == ("image/png", 1024, 1024)
    assert image.seed is None  # never sent, so never reported as this image's
    assert output.provider_request_id
    assert output.usage["candidatesTokenCount"] > 0
    [sent] = fake.requests
    assert sent.path == "/v1beta/models/gemini-3-pro-image-preview:generateContent"
    assert sent.headers["x-goog-api-key"] == API_KEY
    assert "key=" not in sent.path
    # No seed or negative prompt: Gemini has neither.
    assert sent.body == {
        "contents": [{"role": "user", "parts": [{"text": "a lighthouse on a cliff at dusk"}]}],
        "generationConfig": {
            "responseModalities": ["TEXT", "IMAGE"],
            "imageConfig": {"aspectRatio": "1:1", "imageSize": "1K"},
        },
    }


async def test_success_with_reference_images(
    fake: FakeGeminiState, base_url: str, client: httpx.AsyncClient
) -> None:
    refs = (reference((200, 10, 10)), reference((10, 200, 10)))
    output = await ADAPTER.generate(_request(base_url, reference_images=refs), client)

    assert len(output.images) == 1
    parts = fake.requests[0].body["contents"][0]["parts"]
    assert parts[0] == {"text": "a lighthouse on a cliff at dusk"}
    inline = [part["inline_data"] for part in parts[1:]]
    assert [item["mime_type"] for item in inline] == ["image/png", "image/png"]
    assert [base64.b64decode(item["data"]) for item in inline] == [ref.data for ref in refs]


@pytest.mark.parametrize(
    ("size", "ratio", "tier"),
    [
        ("1024x1024", "1:1", "1K"),
        ("1536x1024", "3:2", "1K"),
        ("1792x1024", "16:9", "1K"),
        ("1024x1792", "9:16", "1K"),
        ("1024x1280", "4:5", "1K"),
        ("2560x1080", "21:9", "2K"),
        ("2048x2048", "1:1", "2K"),
    ],
)
async def test_size_maps_to_nearest_ratio_and_tier(
    fake: FakeGeminiState,
    base_url: str,
    client: httpx.AsyncClient,
    size: str,
    ratio: str,
    tier: str,
) -> None:
    output = await ADAPTER.generate(_request(base_url, size=size), client)
    config = fake.requests[0].body["generationConfig"]["imageConfig"]
    assert (config["aspectRatio"], config["imageSize"]) == (ratio, tier)
    scale = {"1K": 1, "2K": 2}[tier]
    expected = tuple(side * scale for side in SIZES_1K[ratio])
    assert (output.images[0].width, output.images[0].height) == expected


async def test_gemini_25_omits_image_size(
    fake: FakeGeminiState, base_url: str, client: httpx.AsyncClient
) -> None:
    await ADAPTER.generate(_request(base_url, model="gemini-2.5-flash-image"), client)
    assert fake.requests[0].body["generationConfig"]["imageConfig"] == {"aspectRatio": "1:1"}


async def test_options_pin_ratio_tier_and_person_generation(
    fake: FakeGeminiState, base_url: str, client: httpx.AsyncClient
) -> None:
    options = {"aspect_ratio": "4:3", "image_size": "1K", "person_generation": "ALLOW_ADULT"}
    output = await ADAPTER.generate(_request(base_url, size="1024x1024", options=options), client)
    config = fake.requests[0].body["generationConfig"]["imageConfig"]
    assert config == {"aspectRatio": "4:3", "imageSize": "1K", "personGeneration": "ALLOW_ADULT"}
    assert (output.images[0].width, output.images[0].height) == SIZES_1K["4:3"]


async def test_interim_thought_images_are_skipped(
    fake: FakeGeminiState, base_url: str, client: httpx.AsyncClient
) -> None:
    output = await ADAPTER.generate(_request(base_url, prompt="x [gemini:thought-image]"), client)
    [image] = output.images
    assert (image.width, image.height) == (1024, 1024)  # not the 64x64 draft


# --- error mapping -----------------------------------------------------------------------

ERROR_CASES: list[tuple[str, ErrorClass, str | None, float | None]] = [
    # Auth, rate limit, outage, content block and invalid request: test_adapter_contract.py.
    ("image-safety", ErrorClass.CONTENT_BLOCKED, "output", None),
    ("image-prohibited", ErrorClass.CONTENT_BLOCKED, "output", None),
    ("recitation", ErrorClass.CONTENT_BLOCKED, "output", None),
    ("no-image", ErrorClass.NO_IMAGE_RETURNED, None, None),
    ("image-other", ErrorClass.NO_IMAGE_RETURNED, None, None),
    ("text-only", ErrorClass.NO_IMAGE_RETURNED, None, None),
    ("garbage-image", ErrorClass.NO_IMAGE_RETURNED, None, None),
    ("429-daily", ErrorClass.QUOTA_EXHAUSTED, None, 2.0),
    ("401-echo-key", ErrorClass.AUTH, None, None),
    ("503", ErrorClass.PROVIDER_UNAVAILABLE, None, None),
    ("504", ErrorClass.TIMEOUT, None, None),
]


@pytest.mark.parametrize(("marker", "error_class", "stage", "retry_after"), ERROR_CASES)
async def test_error_modes_map_to_the_taxonomy(
    fake: FakeGeminiState,
    base_url: str,
    client: httpx.AsyncClient,
    marker: str,
    error_class: ErrorClass,
    stage: str | None,
    retry_after: float | None,
) -> None:
    error = await _fail(_request(base_url, prompt=f"x [gemini:{marker}]"), client)
    assert_classified(error, error_class, stage, retry_after)
    assert_key_hidden(error, API_KEY)


async def test_text_only_detail_keeps_the_models_words(
    fake: FakeGeminiState, base_url: str, client: httpx.AsyncClient
) -> None:
    error = await _fail(_request(base_url, prompt="x [gemini:text-only]"), client)
    assert "finishReason=STOP" in (error.info.detail or "")
    assert "describe it" in (error.info.detail or "")


async def test_wrong_key_is_auth(
    fake: FakeGeminiState, base_url: str, client: httpx.AsyncClient
) -> None:
    wrong = "AIzaSyWrong-key-abcdefghijklmnopqrstu"
    error = await _fail(_request(base_url, api_key=wrong), client)
    assert error.info.error_class is ErrorClass.AUTH
    assert "API_KEY_INVALID" in (error.info.detail or "")
    assert wrong not in (error.info.detail or "")


async def test_hanging_provider_times_out(
    fake: FakeGeminiState, base_url: str, client: httpx.AsyncClient
) -> None:
    started = time.perf_counter()
    error = await _fail(_request(base_url, prompt="x [gemini:hang]", timeout_s=0.5), client)
    assert error.info.error_class is ErrorClass.TIMEOUT
    assert time.perf_counter() - started < 3


@pytest.mark.parametrize(
    "overrides",
    [
        {"prompt": ""},
        {"size": "auto"},
        {"options": {"aspect_ratio": "7:5"}},
        {"options": {"image_size": "8K"}},
        {"options": {"person_generation": "EVERYONE"}},
        {"reference_images": tuple(reference((i, i, i)) for i in range(15))},
    ],
)
async def test_adapter_never_sends_an_invalid_body(
    fake: FakeGeminiState, base_url: str, client: httpx.AsyncClient, overrides: dict[str, Any]
) -> None:
    # Counted from here: a late request of an earlier test may still arrive.
    seen = len(fake.requests)
    error = await _fail(_request(base_url, **overrides), client)
    assert error.info.error_class is ErrorClass.INVALID_REQUEST
    assert fake.requests[seen:] == []


def test_google_retry_delay_forms() -> None:
    retry = "type.googleapis.com/google.rpc.RetryInfo"
    assert google_retry_delay([{"@type": retry, "retryDelay": "37s"}]) == 37.0
    assert google_retry_delay([{"@type": retry, "retryDelay": "0.250s"}]) == 0.25
    assert google_retry_delay([{"@type": retry, "retryDelay": {"seconds": 3, "nanos": 5e8}}]) == 3.5
    assert google_retry_delay([{"@type": "other", "retryDelay": "1s"}]) is None
    assert google_retry_delay([]) is None


def test_max_images_per_call() -> None:
    assert ADAPTER.max_images_per_call("gemini-3-pro-image-preview") == 1


@pytest.mark.parametrize(
    ("marker", "stage", "category"),
    [
        ("block-prompt", "input", "prohibited_content"),
        ("image-safety", "output", "image_safety"),
        ("image-prohibited", "output", "image_prohibited_content"),
    ],
)
async def test_blocks_carry_geminis_reason_as_the_category(
    fake: FakeGeminiState,
    base_url: str,
    client: httpx.AsyncClient,
    marker: str,
    stage: str,
    category: str,
) -> None:
    """`promptFeedback.blockReason` and a blocking `finishReason` are the category (issue 21)."""
    error = await _fail(_request(base_url, prompt=f"a cat [gemini:{marker}]"), client)
    assert (error.info.stage, error.info.category) == (stage, category)
